"""Keeps the password of a `mysql://user:password@host/db` metadata_url out of what `tfxsp run` logs and prints.

TFX's LocalDagRunner logs its deployment and connection configs at INFO ("Using connection config: mysql { ...
password: "..." }"), ML Metadata logs its ConnectionConfig at DEBUG, and both go to the run's log file (or, with
-v, to the terminal). `redact_url` (pipeline/metadata_url.py) is what every message shows of the URL itself;
`hide_in_logs(config)` rewrites every Python log record that holds the password, whichever
logger made it and whichever handler writes it: `password: "..."` fields, the userinfo of URLs, and the password
itself, as text and URL-encoded.
"""
from __future__ import annotations

import logging
import re
import urllib.parse

from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.config import PipelineConfig

HIDDEN = "<redacted>"
# A password field as text-format protobuf, JSON or Python reprs print it: password: "x", "password": 'x', password=x
_FIELD = re.compile(r"""(["']?password["']?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,}]+)""", re.I)
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@", re.I)
_MIN_LITERAL = 3  # shorter passwords are still caught as fields and URLs, not as bare text


def secrets_of(config: PipelineConfig) -> list[str]:
    """The secrets in the configuration: the password of a mysql:// metadata_url, wherever it came from (the URL,
    a password file, the environment: pipeline/metadata_url.py), as given and URL-encoded."""
    if not config.metadata_url:
        return []
    raw = urllib.parse.urlsplit(config.metadata_url).password or ""
    connection = config.metadata_connection_config()
    used = connection.mysql.password if isinstance(connection, mlmd.ConnectionConfig) else ""
    found = {s for s in (raw, urllib.parse.unquote(raw), used) if s}
    return sorted(found | {urllib.parse.quote(s, safe="") for s in found}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    text = _FIELD.sub(lambda m: m.group(1) + (f'"{HIDDEN}"' if m.group(2)[:1] in "\"'" else HIDDEN), text)
    text = _USERINFO.sub(lambda m: m.group(1) + HIDDEN + "@", text)
    for secret in secrets:
        if len(secret) >= _MIN_LITERAL:
            text = text.replace(secret, HIDDEN)
    return text


def hide_in_logs(config: PipelineConfig) -> None:
    """From now on, every log record of this process is redacted (see the module docstring)."""
    secrets = secrets_of(config)
    if not secrets:
        return
    make_record = logging.getLogRecordFactory()

    def redacted_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: the handler reports it
            return record
        clean = redact(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return record
    logging.setLogRecordFactory(redacted_record)
