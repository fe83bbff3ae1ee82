"""Start a TF Serving model server for a model base path: the real one where possible.

``start_server`` picks, in order:

1. ``binary``: the real ``tensorflow_model_server`` on PATH;
2. ``docker``: the ``tensorflow/serving:2.16.1`` image (TF Serving matching TensorFlow 2.16), if a
   Docker engine answers ``docker info``; the base path is bind-mounted at the same absolute path and
   the ports are published on ``host`` only;
3. ``embedded``: this package's server (``python -m serving``) in a subprocess.

It says which one it chose (``handle.kind`` and a log line), waits until the model has a version
AVAILABLE (REST ``GET /v1/models/NAME``), and raises ``LaunchError`` with the tail of the
server's log when the server exits or does not become ready in time. ``handle.stop()`` (or leaving
the ``with`` block) stops exactly what was started: the server's process group, or the container.
Servers still running when the Python process exits are stopped too, and a server dies with the
process that started it however that process ends, SIGKILL included: it runs under Linux's
parent-death signal (``die_with_parent.py``; SIGKILL for the binary and the embedded server, SIGTERM
for ``docker run``, which passes it on to the container).

``probe_rest`` tells a TF Serving REST API from any other program on a port, by the answer TF
Serving gives for a model it does not have.

Note: the real binary listens on all interfaces (it has no bind-address flag); the embedded server
and the Docker port mapping listen on ``host`` only.

This module imports no TensorFlow, so callers can use it cheaply.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import dataclasses
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Sequence

from serving import config as config_lib

DOCKER_IMAGE = "tensorflow/serving:2.16.1"
BINARY = "tensorflow_model_server"
KINDS = ("binary", "docker", "embedded")
# File flags whose paths a Docker container must see (mounted at the same path).
_FILE_FLAGS = ("--batching_parameters_file", "--monitoring_config_file", "--model_config_file", "--ssl_config_file")
_DIE_WITH_PARENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "die_with_parent.py")

log = logging.getLogger("serving.launcher")
_live_handles: weakref.WeakSet[ServerHandle] = weakref.WeakSet()


class LaunchError(RuntimeError):
    """The model server could not be started or did not become ready."""


def choose_kind() -> tuple[str, str]:
    """The kind of server ``start_server`` would start here, and why."""
    if shutil.which(BINARY):
        return "binary", f"{BINARY} found at {shutil.which(BINARY)}"
    if _docker_answers():
        return "docker", f"no {BINARY} on PATH; the Docker engine answers, using {DOCKER_IMAGE}"
    return "embedded", f"no {BINARY} on PATH and no Docker engine; using the embedded server"


def start_server(
    model_name: str,
    model_base_path: str,
    grpc_port: int | None = None,
    rest_port: int | None = None,
    host: str = "127.0.0.1",
    ready_timeout_s: float = 120.0,
    poll_wait_s: float = 1.0,
    extra_args: Sequence[str] = (),
    kind: str | None = None,
    wait_for_model: bool = True,
    env: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> ServerHandle:
    """Starts a model server serving ``model_base_path`` as ``model_name``.

    ``grpc_port``/``rest_port`` default to free ephemeral ports. ``poll_wait_s`` is
    ``--file_system_poll_wait_seconds`` (the real server takes whole seconds; fractions are rounded up
    for it). ``extra_args`` are more ``tensorflow_model_server`` flags, e.g. ``--model_config_file=...``
    (then ``model_name`` is the model whose readiness is awaited). ``kind`` forces one of KINDS.
    With ``wait_for_model=False`` the call returns once the process is started; use
    ``handle.wait_ready()`` later. The base path is created if it does not exist yet, so a server can
    be started before the first model is pushed. A server given ``--ssl_config_file`` serves HTTPS:
    pass ``tls``, the client context to probe it with (trusting its certificate, and presenting a client
    certificate if it asks for one).
    """
    if kind is None:
        kind, reason = choose_kind()
    elif kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    elif kind == "binary" and not shutil.which(BINARY):
        raise LaunchError(f"kind='binary' was requested but there is no {BINARY} on PATH")
    elif kind == "docker" and not shutil.which("docker"):
        raise LaunchError("kind='docker' was requested but there is no docker command on PATH")
    else:
        reason = "requested"
    base_path = os.path.abspath(model_base_path)
    os.makedirs(base_path, exist_ok=True)
    grpc_port = grpc_port or free_port(host)
    rest_port = rest_port or free_port(host)
    flags = [
        f"--model_name={model_name}",
        f"--model_base_path={base_path}",
        f"--file_system_poll_wait_seconds={_poll_flag(poll_wait_s, kind)}",
        *extra_args,
    ]
    log_file = tempfile.NamedTemporaryFile(prefix="tfxsp-serving-", suffix=".log", delete=False)
    container = None
    if kind == "binary":
        command = [shutil.which(BINARY) or BINARY, f"--port={grpc_port}", f"--rest_api_port={rest_port}", *flags]
        if host not in ("0.0.0.0", "::"):
            log.warning("%s listens on all interfaces, not only %s", BINARY, host)
    elif kind == "docker":
        container = f"tfxsp-serving-{uuid.uuid4().hex[:12]}"
        command = ["docker", "run", "--rm", "--name", container,
                   "-p", f"{host}:{grpc_port}:8500", "-p", f"{host}:{rest_port}:8501",
                   *_docker_mounts(base_path, extra_args),
                   "--entrypoint", BINARY, DOCKER_IMAGE, "--port=8500", "--rest_api_port=8501", *flags]
    else:
        command = [sys.executable, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                   f"--bind_address={host}", *flags]
    log.info("Starting model server (%s: %s) for %s on %s:%d (gRPC) and %s:%d (REST)", kind, reason, base_path,
             host, grpc_port, host, rest_port)
    # The docker client passes SIGTERM on to the container (--sig-proxy); SIGKILL would leave it running.
    death_signal = signal.SIGTERM if kind == "docker" else signal.SIGKILL
    process = _spawner.popen(
        _dying_with_this_process(command, death_signal), stdin=subprocess.DEVNULL, stdout=log_file,
        stderr=subprocess.STDOUT, env=_child_env(env), start_new_session=True,
    )
    log_file.close()
    handle = ServerHandle(kind, model_name, host, grpc_port, rest_port, process, log_file.name, container, tls)
    _live_handles.add(handle)
    if wait_for_model:
        try:
            handle.wait_ready(ready_timeout_s)
        except BaseException:
            handle.stop()
            raise
    return handle


class ServerHandle:
    """A started model server. ``stop()`` (also on leaving a ``with`` block) ends it."""

    def __init__(self, kind: str, model_name: str, host: str, grpc_port: int, rest_port: int,
                 process: subprocess.Popen, log_path: str, container: str | None = None,
                 tls: ssl.SSLContext | None = None):
        self.kind = kind
        self.model_name = model_name
        self.host = host
        self.grpc_port = grpc_port
        self.rest_port = rest_port
        self.process = process
        self.log_path = log_path
        self.container = container
        self.tls = tls
        self.started_at = time.monotonic()

    @property
    def rest_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{_url_host(self.host)}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{_url_host(self.host)}:{self.grpc_port}"

    def is_running(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout_s: float = 120.0, model_name: str | None = None) -> float:
        """Waits until ``model_name`` (default: the handle's) has a version AVAILABLE.

        Returns the seconds since the server was started. Raises LaunchError if the server
        exits first or the timeout passes.
        """
        model_name = model_name or self.model_name
        deadline = time.monotonic() + timeout_s
        url = f"{self.rest_url}/v1/models/{model_name}"
        while True:
            if not self.is_running():
                raise LaunchError(
                    f"The {self.kind} model server exited with status {self.process.returncode} before model "
                    f"{model_name} was available.\n{self._tail_block()}"
                )
            if _model_available(url, self.tls):
                return time.monotonic() - self.started_at
            if time.monotonic() >= deadline:
                raise LaunchError(
                    f"The {self.kind} model server did not have a version of model {model_name} AVAILABLE at "
                    f"{url} within {timeout_s:g} s.\n{self._tail_block()}"
                )
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """Stops the server (SIGTERM, then SIGKILL after ``timeout_s``); returns its exit status."""
        if self.container and self.is_running():
            subprocess.run(["docker", "stop", "-t", str(int(timeout_s)), self.container],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if self.is_running():
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait()
        else:
            # The server is gone; make sure nothing it started outlives it.
            self._signal(signal.SIGKILL)
        _live_handles.discard(self)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)
        return self.process.returncode

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)  # its own session: the group is exactly what we started

    def _tail_block(self) -> str:
        return f"--- last lines of the server log ({self.log_path}) ---\n{self.log_tail()}"

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerHandle(kind={self.kind!r}, rest={self.rest_url}, grpc={self.grpc_target})"


@dataclasses.dataclass(frozen=True)
class RestAnswer:
    """What answers HTTP on a port. kind: ``model_server`` (TF Serving's REST API), ``other`` (another program
    holds the port) or ``nothing`` (no one listens). detail says what came back, for messages."""
    kind: str
    detail: str


def probe_rest(host: str, port: int, timeout_s: float = 5.0) -> RestAnswer:
    """Asks ``host:port`` for the status of a model no server has (``GET /v1/models/tfxsp-probe-<random>``).

    TF Serving answers 404 with the JSON body ``{"error": "Could not find any versions of model <name>"}``
    (``model_servers/get_model_status_impl.cc``; every REST error is a JSON object with the one key ``error``,
    ``util/json_tensor.cc``), and so does the embedded server. Only that shape, naming the model asked for,
    counts as a model server; any other answer (an HTML 404 of ``python -m http.server``, a 200, a program that
    does not speak HTTP or does not answer) is ``other``.
    """
    name = f"tfxsp-probe-{uuid.uuid4().hex[:12]}"
    url = f"http://{_url_host(host)}:{port}/v1/models/{name}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status, body = response.status, response.read(4096)
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read(4096)
    except urllib.error.URLError as e:
        if isinstance(e.reason, ConnectionRefusedError):
            return RestAnswer("nothing", f"nothing listens on {host}:{port}")
        return RestAnswer("other", f"{host}:{port} accepted a connection but gave no HTTP answer ({e.reason})")
    except (OSError, http.client.HTTPException, ValueError) as e:
        return RestAnswer("other", f"{host}:{port} accepted a connection but gave no HTTP answer "
                                   f"({type(e).__name__}: {e})")
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if status == 404 and isinstance(doc, dict) and set(doc) == {"error"} and isinstance(doc["error"], str) \
            and f"model {name}" in doc["error"]:
        return RestAnswer("model_server", f"a TF Serving REST API answers at {host}:{port}")
    shown = " ".join(body[:60].decode("utf-8", "replace").split())
    return RestAnswer("other", f"GET /v1/models/{name} on {host}:{port} answered HTTP {status} {shown!r}, "
                               "where TF Serving answers 404 {\"error\": \"Could not find any versions of model "
                               f"{name}\"}}")


def rest_is_answering(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether an HTTP server answers on ``host:port`` (any HTTP status counts as an answer)."""
    try:
        with urllib.request.urlopen(f"http://{_url_host(host)}:{port}/v1/models/_", timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that is free right now on ``host``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (nothing else is bound there)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As servers do: connections of a stopped server in TIME_WAIT do not block the port, a
        # listening socket does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _model_available(url: str, tls: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=tls) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return any(s.get("state") == "AVAILABLE" for s in body.get("model_version_status", []))


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        result = subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _docker_mounts(base_path: str, extra_args: Sequence[str]) -> list[str]:
    paths = [base_path]
    for arg in extra_args:
        flag, _, value = arg.partition("=")
        if flag in _FILE_FLAGS and value:
            paths.append(os.path.abspath(value))
            if flag == "--model_config_file":
                paths.extend(_config_base_paths(value))
    mounts = []
    for path in dict.fromkeys(paths):
        mounts += ["-v", f"{path}:{path}:ro"]
    return mounts


def _config_base_paths(config_file: str) -> list[str]:
    config = config_lib.read_model_server_config(config_file)
    return [entry.base_path for entry in config.model_config_list.config]


def _poll_flag(seconds: float, kind: str) -> str:
    if kind == "embedded" or seconds <= 0:
        return f"{seconds:g}"
    return str(max(1, int(-(-seconds // 1))))  # the real server's flag is a whole number of seconds


def _child_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    # The embedded server must import this package whatever the caller's working directory.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def _dying_with_this_process(command: list[str], death_signal: signal.Signals) -> list[str]:
    """``command`` run through die_with_parent.py: it gets ``death_signal`` when this process exits."""
    return [sys.executable, "-I", "-S", _DIE_WITH_PARENT, str(os.getpid()), death_signal.name, "--", *command]


class _Spawner:
    """Starts child processes from a thread that lives as long as this process.

    Linux sends the parent-death signal when the thread that forked the child exits (prctl(2)), so a server
    started from a short-lived thread (a pool's worker, a test's helper thread) would be killed when that thread
    ends. The main thread lives as long as the process: it forks itself; any other thread hands the fork to one
    daemon thread that never exits.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._requests: list = []
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        if threading.current_thread() is threading.main_thread():
            return subprocess.Popen(args, **kwargs)
        done: concurrent.futures.Future = concurrent.futures.Future()
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="serving-launcher-fork", daemon=True)
                self._thread.start()
            self._requests.append((done, args, kwargs))
            self._wake.notify()
        return done.result()

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._requests:
                    self._wake.wait()
                done, args, kwargs = self._requests.pop(0)
            try:
                done.set_result(subprocess.Popen(args, **kwargs))
            except BaseException as e:  # handed to the caller
                done.set_exception(e)


_spawner = _Spawner()
# A forked child has none of its parent's threads: it starts its own fork thread when it needs one.
os.register_at_fork(after_in_child=_spawner.__init__)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@atexit.register
def _stop_live_servers() -> None:
    for handle in list(_live_handles):
        handle.stop(timeout_s=5.0)
