"""The `mysql://` form of metadata_url, in one place: parsing it into what ML Metadata's MySQLDatabaseConfig takes, and
writing it back without its password (`redact_url`) for every message, log line and summary that names the store.

    mysql://user:password@host:port/database               TCP (port 3306 when left out)
    mysql://user@localhost/database?unix_socket=/path      a UNIX socket (MySQL's client uses it for host localhost)

The password comes from the first of: the URL's userinfo, `?password_file=PATH` (the file's first line), the
environment variables named in pipeline/config.py (TFXSP_METADATA_PASSWORD, then TFXSP_METADATA_PASSWORD_FILE), so
that it need not be in a URL that lands in shell histories and tfxsp.toml files.
"""
from __future__ import annotations

import dataclasses
import urllib.parse

from ml_metadata.proto import metadata_store_pb2

MASK = "***"
_QUERY_KEYS = ("unix_socket", "password_file")


class MetadataUrlError(ValueError):
    """A mysql:// URL that cannot be used; the message names it without its password."""


@dataclasses.dataclass(frozen=True)
class MySQLTarget:
    """Where a mysql:// URL points and as whom (the password is not part of repr)."""
    host: str
    port: int
    database: str
    user: str
    password: str = dataclasses.field(default="", repr=False)
    socket: str = ""


def parse_mysql_url(url: str, password_env: str = "", password_file_env: str = "") -> MySQLTarget:
    """A mysql:// URL (see the module docstring); `password_env`/`password_file_env` are the values of the
    environment variables (empty: unset), used when the URL carries no password of its own."""
    parsed = urllib.parse.urlsplit(url)
    shown = redact_url(url)
    try:
        port = parsed.port
    except ValueError:
        raise MetadataUrlError(f"config 'metadata_url' = {shown!r}: the port is not a number") from None
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise MetadataUrlError(f"config 'metadata_url' = {shown!r}: unknown parameter {', '.join(unknown)} (known: "
                               f"{', '.join(_QUERY_KEYS)})")
    socket = query.get("unix_socket", [""])[-1]
    database = urllib.parse.unquote(parsed.path.strip("/"))
    if not parsed.hostname or not database or "/" in database:
        raise MetadataUrlError(f"config 'metadata_url' = {shown!r}: a MySQL URL needs a host and a database: "
                               "mysql://user:password@host:3306/database or "
                               "mysql://user@localhost/database?unix_socket=/path/to/mysqld.sock")
    if socket and parsed.hostname != "localhost":
        raise MetadataUrlError(f"config 'metadata_url' = {shown!r}: with unix_socket the host must be localhost "
                               "(MySQL's client reads the socket only then)")
    password = urllib.parse.unquote(parsed.password or "")
    if not password:
        file = query.get("password_file", [""])[-1]
        if file:
            password = _read_password(file, shown)
        elif password_env:
            password = password_env
        elif password_file_env:
            password = _read_password(password_file_env, shown)
    return MySQLTarget(host=parsed.hostname, port=port or 3306, database=database,
                       user=urllib.parse.unquote(parsed.username or ""), password=password, socket=socket)


def _read_password(path: str, shown: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as e:
        raise MetadataUrlError(f"config 'metadata_url' = {shown!r}: the password file {path} cannot be read: "
                               f"{e.strerror}") from None


def redact_url(url: str) -> str:
    """`url` with the password of its userinfo replaced by ***: what every message shows of a metadata_url.
    (password_file= names a file, not a secret, so it stays.)"""
    try:
        parsed = urllib.parse.urlsplit(url)
        if parsed.password is None:
            return url
    except ValueError:
        return url
    host = parsed.netloc.rpartition("@")[2]
    user = parsed.netloc.rpartition("@")[0].partition(":")[0]
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"{user}:{MASK}@{host}"))


def describe(target: MySQLTarget) -> str:
    """The store as a URL without any password, for messages."""
    user = urllib.parse.quote(target.user, safe="") + "@" if target.user else ""
    if target.socket:
        return f"mysql://{user}{target.host}/{target.database}?unix_socket={target.socket}"
    return f"mysql://{user}{target.host}:{target.port}/{target.database}"


# What MetadataStore(...) takes: a direct connection (SQLite, MySQL) or an MLMD gRPC client's.
MetadataConnection = metadata_store_pb2.ConnectionConfig | metadata_store_pb2.MetadataStoreClientConfig


def connection_config(url: str, sqlite_path: str, password: str = "", password_file: str = "") -> MetadataConnection:
    """MLMD connection from a URL: '' or sqlite:///path (SQLite), mysql://user:pw@host:port/db, or
    grpc://host:port (the MLMD gRPC service; a MetadataStoreClientConfig). `password`, `password_file`: a
    MySQL password's other sources (parse_mysql_url)."""
    config = metadata_store_pb2.ConnectionConfig()
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "grpc":
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or not port:
            raise MetadataUrlError(f"config 'metadata_url' = {url!r}: an MLMD gRPC URL needs a host and "
                              "a port: grpc://host:8080")
        return metadata_store_pb2.MetadataStoreClientConfig(host=parsed.hostname, port=port)
    if not url or parsed.scheme == "sqlite":
        config.sqlite.filename_uri = (parsed.path if url else sqlite_path) or sqlite_path
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        return config
    if parsed.scheme == "mysql":
        target = parse_mysql_url(url, password, password_file)
        config.mysql.database, config.mysql.user, config.mysql.password = target.database, target.user, target.password
        if target.socket:  # MLMD aborts the process when both a host and a socket are set
            config.mysql.socket = target.socket
        else:
            config.mysql.host, config.mysql.port = target.host, target.port
        return config
    raise MetadataUrlError(f"config 'metadata_url' = {redact_url(url)!r}: use sqlite:///path/to/metadata.db, "
                      "mysql://user:password@host:port/database or grpc://host:port")
