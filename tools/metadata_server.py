"""A private MariaDB (or MySQL) server for ML Metadata, as a process of its own: what the tests share
(tests/support/mariadb.py) and what `make metadata-server` starts for a person.

    python -m tools.metadata_server serve [--port N] [--database NAME]

`MetadataServer` initialises a temporary data directory (`mariadb-install-db`), starts `mariadbd` on 127.0.0.1 and
a UNIX socket in that directory, creates a database and a user with a generated password, and, when stopped,
stops the server and removes the directory. The password is written to a file (mode 0600) beside the data, never
printed: the URLs it gives name that file (`?password_file=`), or take the password from
$TFXSP_METADATA_PASSWORD_FILE.

The server gets SIGTERM when the process that started it dies (Linux's parent-death signal), so a test session
that is killed leaves no server behind. Debian's package is `mariadb-server` (.ci/run installs it).
"""
from __future__ import annotations

import argparse
import ctypes
import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

USER = "tfxsp"
DATABASE = "mlmd"
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")


class ServerError(RuntimeError):
    """The server could not be found, initialised or started; the message says why (and where its log is)."""


def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or next((os.path.join(d, name) for d in _SBIN
                                            if os.access(os.path.join(d, name), os.X_OK)), None)
        if found:
            return found
    return None


def available() -> bool:
    """Whether a MariaDB/MySQL server and its tools are installed here."""
    return all((_which("mariadbd", "mysqld"), _which("mariadb-install-db", "mysql_install_db"),
                _which("mariadb", "mysql")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


class MetadataServer:
    """`with MetadataServer() as server:` a running server; `server.url()` the metadata_url of its database."""

    def __init__(self, port: int | None = None, database: str = DATABASE, user: str = USER):
        self.port = port or _free_port()
        self.database, self.user = database, user
        self.password = secrets.token_urlsafe(18)
        self.dir = ""
        self._process: subprocess.Popen | None = None

    # ------------------------------------------------------------------ where
    @property
    def socket(self) -> str:
        return os.path.join(self.dir, "mysqld.sock")

    @property
    def password_file(self) -> str:
        return os.path.join(self.dir, "password")

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "mariadbd.log")

    def url(self, database: str | None = None, with_password: bool = True, via_socket: bool = False) -> str:
        """The metadata_url of `database` (default: the one created at start): over TCP with the password in it,
        or without (then the password comes from the environment or ?password_file=), or over the socket."""
        db = database or self.database
        if via_socket:
            query = urllib.parse.urlencode({"unix_socket": self.socket, "password_file": self.password_file}
                                           if with_password else {"unix_socket": self.socket}, safe="/")
            return f"mysql://{self.user}@localhost/{db}?{query}"
        userinfo = f"{self.user}:{urllib.parse.quote(self.password, safe='')}" if with_password else self.user
        return f"mysql://{userinfo}@127.0.0.1:{self.port}/{db}"

    # ------------------------------------------------------------------ life
    def start(self, timeout_s: float = 120) -> MetadataServer:
        server, install = _which("mariadbd", "mysqld"), _which("mariadb-install-db", "mysql_install_db")
        if not (server and install and _which("mariadb", "mysql")):
            raise ServerError("No MariaDB server here (mariadbd, mariadb-install-db and mariadb are needed): "
                              "install Debian's mariadb-server (apt-get install mariadb-server).")
        # A short path: a UNIX socket's path is limited to 107 bytes.
        self.dir = tempfile.mkdtemp(prefix="tfxsp-mariadb-")
        os.chmod(self.dir, 0o755)  # the server, dropping to --user, must reach the socket and the data
        data = os.path.join(self.dir, "data")
        user = ["--user=" + getpass.getuser()]  # as root, mariadbd refuses to start without --user
        init = subprocess.run([install, "--no-defaults", f"--datadir={data}", *user, "--skip-test-db",
                               "--auth-root-authentication-method=socket"],
                              capture_output=True, text=True, timeout=timeout_s)
        if init.returncode != 0:
            self.stop()
            raise ServerError(f"mariadb-install-db failed (exit {init.returncode}): {init.stderr.strip()[-2000:]}")
        with open(os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(self.password + "\n")
        self._process = subprocess.Popen(
            [server, "--no-defaults", f"--datadir={data}", *user, f"--socket={self.socket}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--skip-networking=0",
             f"--pid-file={os.path.join(self.dir, 'mariadbd.pid')}", f"--log-error={self.log}",
             "--innodb-buffer-pool-size=64M", "--skip-name-resolve", "--max-connections=200"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        while self.sql("SELECT 1", check=False).returncode != 0:
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = open(self.log, errors="replace").read()[-2000:] if os.path.exists(self.log) else ""
                self.stop()
                raise ServerError(f"mariadbd did not start: {tail}")
            time.sleep(0.2)
        self.sql(f"CREATE USER '{self.user}'@'%' IDENTIFIED BY '{self.password}';"
                 f"CREATE USER '{self.user}'@'localhost' IDENTIFIED BY '{self.password}';")
        self.create_database(self.database)
        return self

    def create_database(self, name: str) -> str:
        """A new empty database the user may use (and create tables in); returns its metadata_url."""
        self.sql(f"CREATE DATABASE `{name}`;"
                 f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{self.user}'@'%';"
                 f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{self.user}'@'localhost';")
        return self.url(name)

    def sql(self, statements: str, database: str = "", check: bool = True) -> subprocess.CompletedProcess:
        """Runs SQL as the server's administrator (over the socket), tab-separated output without headers. The
        statements go on stdin, not the command line, where any local user could read a password in them."""
        client = _which("mariadb", "mysql")
        result = subprocess.run([client, "--no-defaults", f"--socket={self.socket}", "-u", getpass.getuser(),
                                 "-N", "-B", *([database] if database else [])],
                                input=statements, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise ServerError(f"SQL failed: {result.stderr.strip()}")
        return result

    def stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

    def __enter__(self) -> MetadataServer:
        return self if self._process is not None else self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def serve(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.metadata_server serve", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--port", type=int, default=3306 if _port_free(3306) else None,
                        help="TCP port on 127.0.0.1 (default 3306 when free, else any free port)")
    parser.add_argument("--database", default=DATABASE)
    args = parser.parse_args(argv)
    server = MetadataServer(port=args.port, database=args.database)
    try:
        server.start()
    except ServerError as e:
        print(f"Cannot start the metadata server: {e}", file=sys.stderr)
        return 2
    stop = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.append(True))
    print(f"MariaDB for ML Metadata: 127.0.0.1:{server.port} and {server.socket} (data in {server.dir}, removed "
          "when this stops)\n\n"
          f"  export TFXSP_METADATA_PASSWORD_FILE={server.password_file}\n"
          f"  export TFXSP_METADATA_URL={server.url(with_password=False)}\n"
          "  tfxsp run   # and tfxsp runs, lineage, models: they all read TFXSP_METADATA_URL\n\n"
          f"or, with the password file in the URL (over the socket):\n"
          f"  --set metadata_url='{server.url(via_socket=True)}'\n\n"
          "Ctrl-C stops the server and removes its data.", flush=True)
    try:
        while not stop and server._process is not None and server._process.poll() is None:
            time.sleep(0.5)
    finally:
        server.stop()
    return 0


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


if __name__ == "__main__":
    sys.exit(serve())
