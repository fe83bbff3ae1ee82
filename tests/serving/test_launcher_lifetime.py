"""serving.launcher: a server lives exactly as long as the process that started it (SIGKILL of that process
included, and not shorter than it when a short-lived thread started it); probe_rest tells TF Serving's REST API from
any other program on a port."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from serving import launcher
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(180)

# A process that starts an embedded server (from its main thread, or from a thread that ends at once), prints the
# server's pid, and waits to be killed.
PARENT = textwrap.dedent("""
    import sys, threading, time
    from serving import launcher
    started = []
    def start():
        started.append(launcher.start_server("half", sys.argv[1], kind="embedded", poll_wait_s=0.2))
    if sys.argv[2] == "thread":
        thread = threading.Thread(target=start)
        thread.start()
        thread.join()
    else:
        start()
    print(started[0].process.pid, started[0].rest_port, flush=True)
    time.sleep(600)
""")


@pytest.fixture
def base_path(tmp_path, saved_half_plus_two):
    shutil.copytree(saved_half_plus_two[2.0], tmp_path / "models" / "1")
    return str(tmp_path / "models")


def _gone(pid: int, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE and process.num_threads() <= 1:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("started_from", ["main thread", "thread"])
def test_a_server_dies_with_the_process_that_started_it_even_by_sigkill(base_path, started_from):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, base_path, started_from.split()[0]],
                              stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        pid, rest_port = (int(x) for x in parent.stdout.readline().split())
        server = psutil.Process(pid)
        assert server.ppid() == parent.pid and "serving" in server.cmdline()
        # Alive and answering while its parent lives, however long after the starting thread ended.
        time.sleep(1)
        assert launcher.probe_rest("127.0.0.1", rest_port).kind == "model_server"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert _gone(pid), f"the server {pid} outlived its parent"
        assert launcher.probe_rest("127.0.0.1", rest_port).kind == "nothing"
    finally:
        parent.kill()
        parent.wait()


def test_probe_rest_knows_a_model_server_from_any_other_program(base_path):
    assert launcher.probe_rest("127.0.0.1", launcher.free_port()).kind == "nothing"
    with launcher.start_server("half", base_path, kind="embedded", poll_wait_s=0.2) as handle:
        answer = launcher.probe_rest("127.0.0.1", handle.rest_port)
        assert answer.kind == "model_server", answer
    port = launcher.free_port()
    other = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while (answer := launcher.probe_rest("127.0.0.1", port)).kind == "nothing" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answer.kind == "other", answer
        assert "answered HTTP 404 '<!DOCTYPE HTML" in answer.detail
        assert 'where TF Serving answers 404 {"error": "Could not find any versions of model tfxsp-probe-' in \
            answer.detail
    finally:
        other.terminate()
        other.wait(10)
