"""Whole `tfxsp run` processes that tests start, watch and stop with real signals: what they print, which processes
they started (read from /proc through psutil), and what ML Metadata says about their run while it runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from tests.support.paths import TFXSP

# The processes a run starts, by what their command line holds.
SERVER = ("-m", "serving")
TRAINER_CHILD = ("pipeline.training.worker", "run")
WORKER = ("pipeline.training.worker", "train")
TF_SERVER = ("pipeline.training.worker", "server")


class Tfxsp:
    """`tfxsp ARGS` started in the background, its stdout and stderr in files (no pipe to fill and block it)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None, name: str = "tfxsp"):
        self.out_path = cwd / f"{name}-{time.monotonic_ns()}.out"
        self.err_path = self.out_path.with_suffix(".err")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen([TFXSP, *args], cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=err, start_new_session=True)
        self.pid = self.popen.pid
        self.started_ms = int(time.time() * 1000)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)  # the tfxsp process only, as `kill PID` does: not its process group

    def wait(self, timeout_s: float = 900) -> int:
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"tfxsp did not exit within {timeout_s:g} s\n{self.output()}") from None

    def output(self) -> str:
        return f"exit {self.popen.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-6000:]}"

    def tree(self) -> list[psutil.Process]:
        """Every process this run started (children, their children, ...), now."""
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill_tree(self) -> None:
        """Leaves nothing behind after a failed test."""
        for process in [*self.tree(), psutil.Process(self.pid)] if self.popen.poll() is None else self.tree():
            try:
                process.kill()
            except psutil.Error:
                pass


def holds(process: psutil.Process, words: tuple[str, ...]) -> bool:
    """Whether the process's command line has `words` in a row."""
    try:
        cmdline = process.cmdline()
    except psutil.Error:
        return False
    return any(tuple(cmdline[i:i + len(words)]) == words for i in range(len(cmdline)))


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `processes` that still run: the same process (psutil checks its start time, so a reused pid does
    not count) and not a zombie (dead, waiting for its parent to read its status). A main thread shows as a zombie
    while the process's other threads still exit, holding its files and sockets: that process still runs."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and (process.status() != psutil.STATUS_ZOMBIE or process.num_threads() > 1):
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def describe(processes: list[psutil.Process]) -> str:
    lines = []
    for process in processes:
        try:
            lines.append(f"{process.pid} {process.status()} {' '.join(process.cmdline())[:200]}")
        except psutil.Error as e:
            lines.append(f"{process.pid} ({e})")
    return "\n".join(lines)


def wait_for(condition, timeout_s: float, what: str, run: Tfxsp | None = None, poll_s: float = 0.2):
    """condition()'s first true value; fails after timeout_s, or when `run` exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if run is not None and run.popen.poll() is not None:
            raise AssertionError(f"tfxsp exited while the test waited for {what}\n{run.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}"
                                 + (f"\n{run.output()}" if run else ""))
        time.sleep(poll_s)


def node_states(metadata_path: str, pipeline_name: str, since_ms: int) -> dict[str, str]:
    """node id -> state of the newest run of `pipeline_name` that started at or after since_ms, from ML Metadata
    (opened read-only, as `tfxsp runs` opens it); {} while there is none, or the store is busy."""
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.metadata import executions, runs, store
    if not os.path.exists(metadata_path):
        return {}
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    try:
        metadata = store.open_store(config)
        run = runs.run_started_since(metadata, pipeline_name, since_ms)
        if run is None:
            return {}
        return {n.node_id: n.state for n in executions.node_results(metadata, [run])[run.id]}
    except Exception:  # the store is being written: ask again
        return {}


def lock_record(pipeline_root: str) -> dict | None:
    from pipeline.runners.run_lock import LOCK_FILE
    try:
        with open(os.path.join(pipeline_root, LOCK_FILE)) as f:
            text = f.read()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
