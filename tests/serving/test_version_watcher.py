"""The version watcher never dies (issue 12, point 1): odd folder names and failing polls.

Only names made of ASCII digits within int64 are versions (TF Serving's file-system source parses the
whole name as a number); numeric-looking names that are not versions are ignored and logged once.
An error during a poll is logged and the next poll tries again. A real server polls every 0.1 s.
"""
import os
import shutil
import threading

import psutil
import pytest

from tests.support.serving import start, statuses, stop, wait_until, write_config

pytestmark = pytest.mark.timeout(180)

# Names that look numeric but are not versions (logged once each), and names that do not (ignored silently).
NOT_VERSIONS = ["²", "٣", "1234567890123456789012345", "9223372036854775808", "-4", "+5", " 6", "7 "]
NOT_NUMBERS = ["0x8", "v9", "1e3"]


def publish(source, base_path, version):
    staging = os.path.join(base_path, f".staging-{version}")
    shutil.copytree(source, staging)
    os.rename(staging, os.path.join(base_path, str(version)))


@pytest.fixture(scope="module")
def watched(tmp_path_factory, saved_half_plus_two):
    """One server, a model per test."""
    root = tmp_path_factory.mktemp("watched")
    models = ("odd", "failing", "churn")
    for name in models:
        shutil.copytree(saved_half_plus_two[1.0], root / name / "1")
    config = write_config(root / "models.config", [{"name": name, "base_path": root / name} for name in models])
    server = start("odd", str(root / "odd"), f"--model_config_file={config}", poll_wait_s=0.1)
    server.root = root
    yield server
    stop(server)


def test_odd_folder_names_are_ignored_and_later_versions_load(watched, saved_half_plus_two):
    base = watched.root / "odd"
    for name in NOT_VERSIONS + NOT_NUMBERS:
        # Each holds a complete SavedModel: loading any of them would be a bug, not just a wasted scan.
        shutil.copytree(saved_half_plus_two[3.0], base / name)
    publish(saved_half_plus_two[2.0], base, 2)
    wait_until(lambda: statuses(watched, "odd").get(2, ("",))[0] == "AVAILABLE", what="version 2 to load")
    wait_until(lambda: statuses(watched, "odd").get(1, ("",))[0] == "END", what="version 1 to unload")
    publish(saved_half_plus_two[4.0], base, "0003")  # leading zeros are fine: version 3
    wait_until(lambda: statuses(watched, "odd").get(3, ("",))[0] == "AVAILABLE", what="version 3 to load")
    assert set(statuses(watched, "odd")) == {1, 2, 3}
    assert watched.rest.post("/v1/models/odd:predict", {"instances": [2.0]}).json() == {"predictions": [5.0]}
    wait_until(lambda: all(f"Ignoring {ascii(n)} in base path" in watched.handle.log_tail(400) for n in NOT_VERSIONS),
               what="every odd name to be logged")
    log = watched.handle.log_tail(400)
    for name in NOT_VERSIONS:  # dozens of polls later, still logged once
        assert log.count(f"Ignoring {ascii(name)} in base path") == 1, name
    for name in [".staging-2", *NOT_NUMBERS]:  # plain non-numeric names are ignored silently, as TF Serving does
        assert f"Ignoring {ascii(name)}" not in log


def test_a_failing_poll_is_logged_and_retried(watched, saved_half_plus_two):
    """Too many open files: the server's own fd limit is lowered under it, then restored."""
    server = psutil.Process(watched.handle.process.pid)
    limit = server.rlimit(psutil.RLIMIT_NOFILE)
    server.rlimit(psutil.RLIMIT_NOFILE, (8, limit[1]))  # below what it has open: every new descriptor fails
    try:
        publish(saved_half_plus_two[2.0], watched.root / "failing", 2)
        wait_until(lambda: "Too many open files" in watched.handle.log_tail(), what="the poll error to be logged")
        threading.Event().wait(0.5)  # several more failing polls
        assert "{name: failing version: 2}" not in watched.handle.log_tail()  # the listing could not be read
    finally:
        server.rlimit(psutil.RLIMIT_NOFILE, limit)
    wait_until(lambda: statuses(watched, "failing").get(2, ("",))[0] == "AVAILABLE",
               what="version 2 after the retry")
    log = watched.handle.log_tail(400)
    assert log.count("Failed to scan base path") <= 3  # once per model, not once per poll
    assert f"Scanning base path {watched.root / 'failing'} for servable failing works again" in log


def test_folders_vanishing_mid_scan_do_not_stop_the_watcher(watched, saved_half_plus_two):
    base = watched.root / "churn"
    done = threading.Event()

    def churn():  # numeric directories with nested files appear and vanish while the server scans
        while not done.is_set():
            for name in ("5", "6"):
                shutil.copytree(saved_half_plus_two[1.0], base / name, dirs_exist_ok=True)
            for name in ("5", "6"):
                shutil.rmtree(base / name, ignore_errors=True)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        wait_until(lambda: len(statuses(watched, "churn")) > 1, what="the churn to be seen")
        threading.Event().wait(2.0)
    finally:
        done.set()
        thread.join()
    publish(saved_half_plus_two[3.0], base, 9)
    wait_until(lambda: statuses(watched, "churn").get(9, ("",))[0] == "AVAILABLE", what="version 9 to load")
    assert watched.rest.post("/v1/models/churn:predict", {"instances": [2.0]}).json() == {"predictions": [4.0]}
    assert watched.handle.is_running()
