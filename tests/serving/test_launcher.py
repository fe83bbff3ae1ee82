"""serving.launcher: which server it picks, readiness, errors with the log tail, no orphan processes."""
import os
import shutil
import stat
import sys

import psutil
import pytest

from serving import launcher

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def base_path(tmp_path, saved_half_plus_two):
    shutil.copytree(saved_half_plus_two[2.0], tmp_path / "models" / "1")
    return str(tmp_path / "models")


@pytest.fixture
def bare_path(tmp_path, monkeypatch):
    """A PATH with the Python interpreter's directory only: no tensorflow_model_server, no docker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}")
    return bin_dir


def processes_serving(path: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(path in arg for arg in cmdline) and process.pid != os.getpid():
            found.append(process)
    return found


def test_without_binary_or_docker_the_embedded_server_is_chosen(bare_path):
    assert launcher.choose_kind()[0] == "embedded"
    with pytest.raises(launcher.LaunchError, match="no tensorflow_model_server on PATH"):
        launcher.start_server("m", str(bare_path), kind="binary")
    with pytest.raises(launcher.LaunchError, match="no docker command"):
        launcher.start_server("m", str(bare_path), kind="docker")


def test_a_tensorflow_model_server_on_path_is_preferred(bare_path, base_path):
    """A stand-in binary that runs the embedded server: the launcher must pick it and pass TF's flags."""
    fake = bare_path / "tensorflow_model_server"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -m serving \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    assert launcher.choose_kind()[0] == "binary"
    with launcher.start_server("half", base_path, poll_wait_s=0.5) as handle:
        assert handle.kind == "binary"
        assert launcher.rest_is_answering(handle.host, handle.rest_port)
        pid = handle.process.pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert processes_serving(base_path) == []


def test_embedded_server_ready_and_stopped_cleanly(base_path):
    handle = launcher.start_server("half", base_path, kind="embedded", poll_wait_s=0.2)
    try:
        assert handle.kind == "embedded" and handle.rest_url.startswith("http://127.0.0.1:")
        assert launcher.rest_is_answering("127.0.0.1", handle.rest_port)
    finally:
        assert handle.stop() == 0
    assert not launcher.rest_is_answering("127.0.0.1", handle.rest_port)
    assert processes_serving(base_path) == []
    assert not os.path.exists(handle.log_path)


def test_readiness_timeout_names_the_model_and_shows_the_log(tmp_path):
    empty = str(tmp_path / "empty")
    with pytest.raises(launcher.LaunchError) as info:
        launcher.start_server("half", empty, kind="embedded", ready_timeout_s=5)
    message = str(info.value)
    assert "did not have a version of model half AVAILABLE" in message
    assert "last lines of the server log" in message
    assert processes_serving(empty) == []


def test_a_server_that_exits_is_reported_with_its_log(tmp_path, base_path):
    with pytest.raises(launcher.LaunchError) as info:
        launcher.start_server("half", base_path, kind="embedded",
                              extra_args=[f"--monitoring_config_file={tmp_path}/missing.config"])
    message = str(info.value)
    assert "exited with status 255" in message and "Cannot read --monitoring_config_file" in message


def test_rest_is_answering_on_a_closed_port():
    assert not launcher.rest_is_answering("127.0.0.1", launcher.free_port())
