"""Opening an ML Metadata store to read it: the one way every reader of this project opens one.

SQLite: the file must exist and is opened READONLY, so a read never creates an empty store or changes one. MySQL:
the database is not created (`skip_db_creation`). The MLMD gRPC service (a MetadataStoreClientConfig) is used as it
is. A store that is missing, corrupt or unreachable raises a MetadataError subclass whose message is for a person.
(TFX's runners open the store for writing themselves, from the same connection config.)
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline import metadata_url
from pipeline.config import MetadataConnection
from pipeline.metadata import mysql_errors

SQLITE_MAGIC = b"SQLite format 3\x00"
_INIT_RETRIES = 20  # half a second apart (see check_writable_store)


class MetadataError(Exception):
    """A question the store cannot answer; the message says why and what to do."""


class StoreNotFoundError(MetadataError):
    """The SQLite file does not exist (and will not be created by a read)."""


class CorruptStoreError(MetadataError):
    """The file exists but is not a readable ML Metadata store."""


class EmptyStoreError(MetadataError):
    """A valid store that records nothing yet."""


class NotFoundError(MetadataError):
    """An unknown artifact id, run, type or shortcut."""


def describe_connection(connection: MetadataConnection) -> str:
    """Where a connection points, for messages (never includes a password)."""
    if isinstance(connection, mlmd.MetadataStoreClientConfig):
        return f"grpc://{connection.host}:{connection.port}"
    if connection.HasField("mysql"):
        m = connection.mysql
        return metadata_url.describe(metadata_url.MySQLTarget(host=m.host or "localhost", port=m.port or 3306,
                                                              database=m.database, user=m.user, socket=m.socket))
    return connection.sqlite.filename_uri


def open_store(connection: MetadataConnection, writable: bool = False) -> metadata_store.MetadataStore:
    """Opens an existing store to read it (see the module docstring); `writable`: to add records too (tfxsp monitor
    records its checks), still never creating a store."""
    where = describe_connection(connection)
    if isinstance(connection, mlmd.MetadataStoreClientConfig):
        config: MetadataConnection = mlmd.MetadataStoreClientConfig()
        config.CopyFrom(connection)
    else:
        config = mlmd.ConnectionConfig()
        config.CopyFrom(connection)
        if config.HasField("mysql"):
            config.mysql.skip_db_creation = True
            unreachable = mysql_errors.check_reachable(config.mysql, where)
            if unreachable:
                raise MetadataError(unreachable)
        elif config.HasField("sqlite") or not config.HasField("fake_database"):
            _check_sqlite_file(config.sqlite.filename_uri)
            config.sqlite.connection_mode = (mlmd.SqliteMetadataSourceConfig.READWRITE if writable
                                             else mlmd.SqliteMetadataSourceConfig.READONLY)
    try:
        with _native_stderr_muted(isinstance(config, mlmd.ConnectionConfig) and config.HasField("mysql")):
            store = metadata_store.MetadataStore(config)
        store.get_context_types()  # a store that cannot answer this cannot answer anything
    except Exception as e:  # MLMD raises RuntimeError or its own errors, depending on the backend
        if isinstance(config, mlmd.ConnectionConfig) and config.HasField("mysql"):
            raise MetadataError(mysql_errors.explain(config.mysql, where, e)) from None
        reason = str(e).replace("Error when executing query: ", "", 1)
        reason = reason.split(" query:", 1)[0].strip().rstrip(".")
        if isinstance(config, mlmd.ConnectionConfig) and config.HasField("sqlite"):
            if "readonly database" in reason:
                reason = "it is a SQLite database without ML Metadata's tables"
            elif "not a database" in reason:
                reason = "it is not a SQLite database"
            raise CorruptStoreError(f"{where} is not a readable ML Metadata store: {reason}.") from None
        raise MetadataError(f"Cannot read the metadata store at {where}: {reason}") from None
    return store


def check_writable_store(connection: MetadataConnection) -> None:
    """For `tfxsp run`, before anything runs: a MySQL store must be reachable, accept the user and password, have
    its database and a schema this ML Metadata can write (on an empty database, ML Metadata creates its tables
    here, as the run would). Raises MetadataError with one paragraph otherwise. SQLite: the run creates the file;
    the gRPC service: its server opens the store."""
    if not (isinstance(connection, mlmd.ConnectionConfig) and connection.HasField("mysql")):
        return
    config = mlmd.ConnectionConfig()
    config.CopyFrom(connection)
    config.mysql.skip_db_creation = True  # a missing database is a mistake in the URL, not one to create
    unreachable = mysql_errors.check_reachable(config.mysql, describe_connection(config))
    if unreachable:
        raise MetadataError(unreachable)
    for attempt in range(_INIT_RETRIES):
        try:
            with _native_stderr_muted():
                metadata_store.MetadataStore(config).get_context_types()
            return
        except Exception as e:  # RuntimeError from MLMD's C++ layer
            # Two runs starting at once on an empty database: one creates ML Metadata's tables while the other
            # finds them without their version row yet; ML Metadata asks to retry.
            if "concurrent connection" in str(e) and attempt + 1 < _INIT_RETRIES:
                time.sleep(0.5)
                continue
            raise MetadataError(mysql_errors.explain(config.mysql, describe_connection(config), e)) from None


@contextlib.contextmanager
def _native_stderr_muted(mute: bool = True) -> Iterator[None]:
    """ML Metadata's C++ layer logs a failed MySQL connect to file descriptor 2 ("MySQL database was not
    initialized ... MySQL 8.0 ...", misleading for MariaDB); the MetadataError raised instead says what happened."""
    if not mute:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _check_sqlite_file(path: str) -> None:
    if not path:
        raise StoreNotFoundError("No SQLite metadata store is configured (empty filename).")
    if not os.path.exists(path):
        raise StoreNotFoundError(
            f"No metadata store at {path}: the file does not exist. Run the pipeline first "
            "(tfxsp run), or point at an existing store with --metadata-url or "
            "--set tfx_root=... (nothing was created).")
    if os.path.isdir(path):
        raise CorruptStoreError(f"{path} is a directory, not an ML Metadata store.")
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise CorruptStoreError(f"{path} cannot be read: {e.strerror}.") from None
    if header != SQLITE_MAGIC:
        what = "an empty file" if not header else "not a SQLite database"
        raise CorruptStoreError(f"{path} is not an ML Metadata store: it is {what}.")


def require_not_empty(store: metadata_store.MetadataStore, where: str = "") -> None:
    one = metadata_store.ListOptions(limit=1)
    if not (store.get_contexts(list_options=one) or store.get_artifacts(list_options=one)
            or store.get_executions(list_options=one)):
        raise EmptyStoreError(
            f"The metadata store{' at ' + where if where else ''} is empty: no pipeline has run "
            "against it yet. Run the pipeline first (tfxsp run).")
