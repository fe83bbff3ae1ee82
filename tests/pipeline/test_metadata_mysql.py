"""A MySQL metadata_url (issue 16): the URL forms and where the password comes from (pipeline/metadata_url.py), and
every bad input against a real MariaDB server (the session fixture `mariadb`): server unreachable, wrong password,
database missing, a store of another schema version. `tfxsp run` says it in one paragraph naming the URL without
its password and exits 2 before anything runs; the metadata commands say the same.
"""
import os
import socket

import pytest
from click.testing import CliRunner
from ml_metadata import metadata_store

from pipeline.cli.main import cli
from pipeline.config import ConfigError, load_config, metadata_connection_config
from pipeline.metadata_url import MetadataUrlError, parse_mysql_url, redact_url
from tests.support.mariadb import new_database
from tests.support.processes import free_port, run_tfxsp

SECRET = "s3cr3t-Pa55"


# ------------------------------------------------------------------------------------------------ URLs
def test_tcp_url_with_the_password_in_it():
    target = parse_mysql_url("mysql://ml%40user:p%3Ass@db.internal:3307/mlmd")
    assert (target.host, target.port, target.database, target.user, target.password, target.socket) == \
        ("db.internal", 3307, "mlmd", "ml@user", "p:ss", "")
    assert "p:ss" not in repr(target)


def test_socket_url_sets_the_socket_and_no_host(tmp_path):
    """MLMD aborts the whole process (a failed CHECK) when a host and a socket are both set."""
    config = metadata_connection_config("mysql://u:pw@localhost/mlmd?unix_socket=/run/mysqld/mysqld.sock", "")
    assert config.mysql.socket == "/run/mysqld/mysqld.sock" and not config.mysql.host
    assert (config.mysql.user, config.mysql.password, config.mysql.database) == ("u", "pw", "mlmd")
    with pytest.raises(MetadataUrlError, match="the host must be localhost"):
        parse_mysql_url("mysql://u@db/mlmd?unix_socket=/s")


def test_password_from_a_file_or_the_environment(tmp_path):
    file = tmp_path / "pw"
    file.write_text("from-file\n")
    assert parse_mysql_url(f"mysql://u@h/db?password_file={file}").password == "from-file"
    assert parse_mysql_url("mysql://u@h/db", password_env="from-env").password == "from-env"
    assert parse_mysql_url("mysql://u@h/db", password_file_env=str(file)).password == "from-file"
    # The URL's own password wins, then ?password_file=, then the variables.
    assert parse_mysql_url("mysql://u:url@h/db", password_env="env").password == "url"
    assert parse_mysql_url(f"mysql://u@h/db?password_file={file}", password_env="env").password == "from-file"
    assert parse_mysql_url("mysql://u@h/db", "env", str(file)).password == "env"
    with pytest.raises(MetadataUrlError, match="the password file /nonexistent cannot be read"):
        parse_mysql_url("mysql://u@h/db?password_file=/nonexistent")


def test_the_environment_variable_reaches_the_connection_config(monkeypatch, tmp_path):
    monkeypatch.setenv("TFXSP_METADATA_PASSWORD", SECRET)
    config = load_config({"metadata_url": "mysql://u@127.0.0.1:3306/mlmd"}, environ={})
    assert config.metadata_connection_config().mysql.password == SECRET


@pytest.mark.parametrize("url, shown", [
    (f"mysql://u:{SECRET}@h:1/db", "mysql://u:***@h:1/db"),
    ("mysql://u@h/db?password_file=/p", "mysql://u@h/db?password_file=/p"),
    ("sqlite:///a/b.db", "sqlite:///a/b.db"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize("url, message", [
    (f"mysql://u:{SECRET}@h:port/db", "the port is not a number"),
    (f"mysql://u:{SECRET}@h/db?ssl=1", "unknown parameter ssl"),
    (f"mysql://u:{SECRET}@h/", "needs a host and a database"),
])
def test_bad_urls_are_named_without_their_password(url, message):
    with pytest.raises(ConfigError, match=message) as raised:
        load_config({"metadata_url": url}, environ={})
    assert SECRET not in str(raised.value) and "u:***@h" in str(raised.value)


# ------------------------------------------------------------------------------------ bad input, real server
def _bad_store(kind, server):
    """A metadata_url that fails as `kind` does, and what the paragraph must say."""
    if kind == "unreachable":
        port = free_port()
        return (f"mysql://tfxsp:{SECRET}@127.0.0.1:{port}/mlmd",
                f"Cannot reach the metadata store at mysql://tfxsp@127.0.0.1:{port}/mlmd: nothing listens at "
                f"127.0.0.1:{port} (Connection refused)")
    if kind == "wrong password":
        return (f"mysql://tfxsp:{SECRET}@127.0.0.1:{server.port}/mlmd",
                f"The MySQL server at 127.0.0.1:{server.port} refused user 'tfxsp' for "
                f"mysql://tfxsp@127.0.0.1:{server.port}/mlmd: a wrong password, or a user it does not know")
    if kind == "database missing":
        return (server.url("no_such_db"), "No usable database 'no_such_db' for "
                f"mysql://tfxsp@127.0.0.1:{server.port}/no_such_db: Access denied for user 'tfxsp'")
    url = new_database(server, "old")
    metadata_store.MetadataStore(metadata_connection_config(url, ""))  # ML Metadata's tables, version 10
    database = url.rsplit("/", 1)[1]
    server.sql("UPDATE MLMDEnv SET schema_version = 100", database)
    return url, (f"The metadata store at mysql://tfxsp@127.0.0.1:{server.port}/{database} has ML Metadata schema "
                 "version 100, newer than this ML Metadata's (10)")


KINDS = ["unreachable", "wrong password", "database missing", "newer schema"]


@pytest.mark.parametrize("kind", KINDS)
def test_tfxsp_run_on_a_bad_store_exits_2_before_anything_runs(kind, mariadb, tmp_path):
    url, says = _bad_store(kind, mariadb)
    tfx_root = tmp_path / "runs"
    result = run_tfxsp(["run", "--set", f"metadata_url={url}", "--set", f"tfx_root={tfx_root}"],
                       cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    flat = " ".join(result.stderr.split())
    assert "Metadata store error:" in flat and says in flat and "Nothing was run or pushed." in flat
    assert SECRET not in result.stdout + result.stderr and mariadb.password not in result.stdout + result.stderr
    assert "mysql_real_connect" not in flat and "MySQL 8.0" not in flat  # ML Metadata's misleading native log
    assert "Running pipeline" not in result.stdout
    assert not (tfx_root / "pipelines" / "penguin_serving" / "logs").exists()  # no component ran, no log


@pytest.mark.parametrize("kind", KINDS)
def test_the_metadata_commands_say_the_same(kind, mariadb, tmp_path, monkeypatch):
    url, says = _bad_store(kind, mariadb)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["runs", "--metadata-url", url])
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.stderr.split()) and SECRET not in result.output


def test_a_program_that_is_not_a_mysql_server_is_named(tmp_path, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        monkeypatch.setattr("pipeline.metadata.mysql_errors.PROBE_TIMEOUT_S", 0.5)
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(cli, ["runs", "--metadata-url", f"mysql://u:{SECRET}@127.0.0.1:{port}/db"])
    assert result.exit_code == 2
    flat = " ".join(result.stderr.split())
    assert f"Cannot reach the metadata store at mysql://u@127.0.0.1:{port}/db: nothing answered at 127.0.0.1:{port}" \
        in flat or "did not greet as a MySQL server does" in flat, flat


def test_a_run_on_an_empty_database_gets_the_tables(mariadb):
    """tfxsp run's check opens the store as the run will: on a new database ML Metadata creates its tables."""
    from pipeline.metadata import store
    url = new_database(mariadb, "fresh")
    store.check_writable_store(metadata_connection_config(url, ""))
    assert "MLMDEnv" in mariadb.sql("SHOW TABLES", url.rsplit("/", 1)[1]).stdout.split()


def test_the_server_fixture_is_private_and_removed(tmp_path):
    from tools.metadata_server import MetadataServer
    with MetadataServer() as server:
        directory = server.dir
        assert os.stat(server.password_file).st_mode & 0o077 == 0
        assert server.sql("SELECT @@bind_address, @@port, @@skip_networking").stdout.split() == \
            ["127.0.0.1", str(server.port), "0"]
        assert os.path.exists(server.socket)
    assert not os.path.exists(directory)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
