"""Running the real `tfxsp` command as a user would, and free loopback ports for the servers tests start."""
import os
import signal
import socket
import subprocess

from tests.support.paths import TFXSP


def run_tfxsp(args, cwd, timeout=900, env=None) -> subprocess.CompletedProcess:
    """Runs `tfxsp ARGS` in `cwd` and returns its exit code and output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([TFXSP, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Stops a `tfxsp` process as Ctrl-C would (SIGINT), killing it after 30 s."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
