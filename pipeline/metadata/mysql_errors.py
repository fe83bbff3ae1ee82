"""Why a MySQL or MariaDB metadata store cannot be opened, in one paragraph that names the store without its password.

ML Metadata says `mysql_real_connect failed: errno: , error: ` (empty) both when nothing listens at host:port and
when the server refuses the user or password, so `probe_server` first asks the socket itself: a MySQL server greets
every new connection with a handshake packet (protocol version 10), or an error packet (0xff) when it turns the
client away before the login (too many connections, a blocked host). Only a server that greets makes a failed
connect mean "wrong user or password".
"""
from __future__ import annotations

import re
import socket

from ml_metadata.proto import metadata_store_pb2 as mlmd

PROBE_TIMEOUT_S = 5.0
_SCHEMA = re.compile(r"MLMD database version (\d+) is (greater|older) than library version (\d+)")
_MYSQL_ERROR = re.compile(r"mysql_\w+ failed: errno: (.*?), error: (.*)$", re.S)


def server_address(config: mlmd.MySQLDatabaseConfig) -> str:
    return config.socket if config.socket else f"{config.host}:{config.port or 3306}"


def probe_server(config: mlmd.MySQLDatabaseConfig) -> str | None:
    """None when a MySQL server greets at the configured address; otherwise what was found there, in words."""
    address = server_address(config)
    try:
        if config.socket:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.settimeout(PROBE_TIMEOUT_S)
            connection.connect(config.socket)
        else:
            connection = socket.create_connection((config.host, config.port or 3306), timeout=PROBE_TIMEOUT_S)
    except socket.gaierror as e:
        return f"the host name {config.host!r} does not resolve ({e.strerror})"
    except TimeoutError:
        return f"nothing answered at {address} within {PROBE_TIMEOUT_S:g} s"
    except OSError as e:
        return f"nothing listens at {address} ({e.strerror or e})"
    with connection:
        try:
            greeting = connection.recv(512)
        except OSError as e:
            return f"the program at {address} did not greet as a MySQL server does ({e.strerror or e})"
    if len(greeting) > 4 and greeting[4] == 10:
        return None
    if len(greeting) > 7 and greeting[4] == 0xFF:  # an error packet: 0xff, 2-byte code, message
        message = greeting[7:].decode("utf-8", "replace").lstrip("#0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        return f"the MySQL server at {address} turned the connection away: {message.strip()}"
    return f"the program listening at {address} is not a MySQL or MariaDB server (it did not greet as one)"


def check_reachable(config: mlmd.MySQLDatabaseConfig, where: str) -> str | None:
    """The paragraph when no MySQL server greets at the address, else None. Asked before ML Metadata connects:
    its client waits without a timeout on a program that accepts the connection and never answers."""
    found = probe_server(config)
    if found is None:
        return None
    return (f"Cannot reach the metadata store at {where}: {found}. Start the server (make metadata-server starts a "
            "private one), or correct the host and port of metadata_url.")


def explain(config: mlmd.MySQLDatabaseConfig, where: str, error: BaseException) -> str:
    """The paragraph for an error ML Metadata raised opening the MySQL store at `where` (a redacted URL)."""
    text = str(error)
    schema = _SCHEMA.search(text)
    if schema:
        found, relation, ours = schema.groups()
        if relation == "greater":
            return (f"The metadata store at {where} has ML Metadata schema version {found}, newer than this "
                    f"ML Metadata's ({ours}): a newer ML Metadata wrote it. Use that version's tfxsp with it, or "
                    "point metadata_url at another database.")
        return (f"The metadata store at {where} has ML Metadata schema version {found}, older than this ML "
                f"Metadata's ({ours}). tfxsp does not upgrade a store that others may still read with the older "
                "version: upgrade it deliberately (MetadataStore(config, enable_upgrade_migration=True), after a "
                "backup), or point metadata_url at another database.")
    if "mysql_real_connect failed" in text:
        unreachable = check_reachable(config, where)
        if unreachable is not None:
            return unreachable
        return (f"The MySQL server at {server_address(config)} refused user '{config.user}' for {where}: a wrong "
                "password, or a user it does not know (the server does not say which). The password comes from "
                "metadata_url, its ?password_file=, or $TFXSP_METADATA_PASSWORD / $TFXSP_METADATA_PASSWORD_FILE.")
    if re.search(r"(Changing to|Creating) database", text) or "Unknown database" in text:
        detail = _MYSQL_ERROR.search(text)
        reason = detail.group(2).strip() if detail else text
        return (f"No usable database '{config.database}' for {where}: {reason}. The database must exist and "
                f"user '{config.user}' must be allowed to use it (CREATE DATABASE `{config.database}`; GRANT ALL "
                f"ON `{config.database}`.* TO '{config.user}'@'%'); tfxsp does not create databases.")
    reason = text.replace("Error when executing query: ", "", 1).split(" query:", 1)[0].strip().rstrip(".")
    return f"Cannot open the metadata store at {where}: {reason}."
