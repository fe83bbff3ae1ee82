"""The child processes of one local training run: started, watched, stopped, and accounted for.

Each child runs `python -m pipeline.training.worker ...` in its own process group with its output in a log file.
A child that fails (or a server that exits) stops the whole cluster and fails the Trainer with the end of its log;
every child is killed when training ends, however it ends (and dies with its parent: PR_SET_PDEATHSIG, see
worker.py); the logs are kept in <model_run_dir>/training/logs and the processes, with their CPU time, in
<model_run_dir>/training/cluster.json.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from absl import logging

from pipeline.training import fn_args as fn_args_lib
from pipeline.training import network, tf_config

START_TIMEOUT_S = 600  # until a child is up: it imports TensorFlow, slow on a busy machine
# The pid of the process that started a child: the child checks, once its parent-death signal is set, that this
# process is still its parent (worker.die_with_parent), or it would outlive a parent that died before that.
PARENT_ENV = "TFXSP_PARENT_PID"
POLL_S = 0.2
LOG_TAIL_CHARS = 4000
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TrainFn = Callable[[Any], Any]


class WorkerFailed(RuntimeError):
    """A process of a local training cluster failed; the message ends with the end of its log."""


class _Child:
    def __init__(self, name: str, role: str, popen: subprocess.Popen, log_path: str,
                 ready_path: str):
        self.name, self.role, self.popen = name, role, popen
        self.log_path, self.ready_path = log_path, ready_path
        self.cpu_start: float | None = None
        self.cpu_end: float | None = None

    @property
    def exit_code(self) -> int | None:
        return self.popen.poll()

    def failed(self) -> bool:
        """A task that exited with an error, or a server that exited at all."""
        code = self.exit_code
        return code is not None and (code != 0 or self.role == "server")


class LocalCluster:
    """The child processes of one training run; each runs in its own process group and is killed
    when the block ends, whichever way it ends."""

    def __init__(self, model_run_dir: str, strategy: str):
        self.model_run_dir, self.strategy = model_run_dir, strategy
        self.workdir = tempfile.mkdtemp(prefix="tfxsp-cluster-")
        # The children's TMPDIR: what a killed worker leaves there goes with the workdir.
        self.tmpdir = os.path.join(self.workdir, "tmp")
        os.makedirs(self.tmpdir)
        self.children: list[_Child] = []
        self.failure: _Child | None = None
        self.chief: dict[str, Any] | None = None
        self._stop_watch = threading.Event()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def write_fn_args(self, fn_args: Any) -> str:
        path = os.path.join(self.workdir, "fn_args.pkl")
        fn_args_lib.save(fn_args, path)
        return path

    def start(self, name: str, role: str, args: list[str], env: dict[str, str | None],
              isolate: bool = False) -> _Child:
        """Starts `python -m pipeline.training.worker ARGS` as `name`; role 'task' (runs to completion) or
        'server' (runs until killed). isolate: in a loopback-only network namespace (network.isolated_argv)."""
        log_path = os.path.join(self.workdir, f"{name}.log")
        ready_path = os.path.join(self.workdir, f"{name}.ready")
        child_env = dict(os.environ)
        for key, value in env.items():
            if value is None:
                child_env.pop(key, None)
            else:
                child_env[key] = value
        child_env["PYTHONUNBUFFERED"] = "1"
        child_env["TMPDIR"] = self.tmpdir
        child_env[PARENT_ENV] = str(os.getpid())
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (REPO_ROOT, child_env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "pipeline.training.worker", *args, "--ready-file", ready_path]
        if isolate:
            argv = network.isolated_argv(argv)
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(argv, env=child_env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        child = _Child(name, role, popen, log_path, ready_path)
        self.children.append(child)
        logging.info("Started %s (pid %d): %s", name, popen.pid,
                     env.get("TF_CONFIG") or " ".join(args))
        return child

    def _get(self, names: list[str]) -> list[_Child]:
        return [c for c in self.children if c.name in names]

    def _check(self) -> None:
        for child in self.children:
            if child.failed():
                self.failure = self.failure or child
                raise self.error(self.failure)

    def wait_ready(self, names: list[str], timeout: float = START_TIMEOUT_S) -> None:
        """Waits until the named children are up (they write their ready file)."""
        deadline = time.monotonic() + timeout
        pending = self._get(names)
        while pending:
            self._check()
            pending = [c for c in pending if not os.path.exists(c.ready_path)]
            if pending and time.monotonic() > deadline:
                raise self.error(pending[0], f"was not up after {timeout:.0f}s")
            time.sleep(POLL_S)
        for child in self.children:
            child.cpu_start = cpu_seconds(child.popen.pid)

    def wait_tasks(self, names: list[str], timeout: float | None) -> None:
        """Waits until the named tasks exit; any failure (theirs or a server's) raises."""
        deadline = None if timeout is None else time.monotonic() + timeout
        tasks = self._get(names)
        while True:
            for task in tasks:
                if task.exit_code is None:
                    task.cpu_end = cpu_seconds(task.popen.pid)
            self._check()
            running = [t for t in tasks if t.exit_code is None]
            if not running:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise self.error(running[0], f"was still running {timeout:.0f}s after the chief "
                                             "finished")
            time.sleep(POLL_S)

    def run_chief(self, task: str, train_fn: TrainFn, fn_args: Any,
                  env: dict[str, str]) -> None:
        """Trains in this process as the cluster's chief, with `env` (TF_CONFIG) set only while it
        does. A child failing meanwhile stops the others, so that the chief's collective ops fail
        rather than wait, and the child's error is the one raised."""
        self.chief = {"name": task, "role": "chief (this process)", "pid": os.getpid()}
        for child in self.children:
            if child.cpu_start is None:
                child.cpu_start = cpu_seconds(child.popen.pid)
        cpu_start = time.process_time()
        watcher = threading.Thread(target=self._watch, name="tfxsp-cluster-watch", daemon=True)
        watcher.start()
        try:
            with tf_config.environment(**env):
                train_fn(fn_args)
        except BaseException as e:
            if self.failure is not None:
                raise self.error(self.failure) from e
            raise
        finally:
            self._stop_watch.set()
            watcher.join()
            self.chief["cpu_seconds"] = time.process_time() - cpu_start
            for child in self.children:
                if child.exit_code is None:
                    child.cpu_end = cpu_seconds(child.popen.pid)
        self._check()

    def _watch(self) -> None:
        while not self._stop_watch.wait(POLL_S):
            failed = next((c for c in self.children if c.failed()), None)
            if failed is not None:
                self.failure = failed
                logging.error("%s exited with %s while the chief trained; stopping the cluster",
                              failed.name, failed.exit_code)
                self.kill_all()
                return

    def error(self, child: _Child, what: str | None = None) -> WorkerFailed:
        code = child.exit_code
        if what is None:
            what = f"exited with code {code}"
            if code is not None and code < 0:
                what = f"was killed by {signal.Signals(-code).name}"
            elif child.role == "server":
                what = f"(a server) exited with code {code} during training"
        return WorkerFailed(f"{self.strategy}: {child.name} (pid {child.popen.pid}) {what}. "
                            f"The end of its log:\n{_tail(child.log_path)}")

    def kill_all(self) -> None:
        """SIGTERM to every child's process group, SIGKILL after 5 s, and reaps them."""
        alive = [c for c in self.children if c.exit_code is None]
        for child in alive:
            _signal_group(child.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for child in alive:
            try:
                child.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in self.children:
            # The whole group: a task's own children (a fresh process's cluster) go with it.
            _signal_group(child.popen.pid, signal.SIGKILL)
            try:
                child.popen.wait(5)
            except subprocess.TimeoutExpired:
                logging.error("%s (pid %d) did not exit after SIGKILL", child.name,
                              child.popen.pid)

    def report(self) -> dict[str, Any]:
        processes = [self.chief] if self.chief else []
        for child in self.children:
            used = (child.cpu_end - child.cpu_start
                    if child.cpu_end is not None and child.cpu_start is not None else None)
            processes.append({"name": child.name, "role": child.role, "pid": child.popen.pid,
                              "exit_code": child.exit_code, "cpu_seconds": used})
        return {"strategy": self.strategy, "processes": processes,
                "failed": self.failure.name if self.failure else None}

    def close(self) -> None:
        self._stop_watch.set()
        try:
            self.kill_all()
            if self.children:
                self._keep_logs()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _keep_logs(self) -> None:
        """Copies the children's logs and the process report into <model_run_dir>/training."""
        import tensorflow as tf  # gfile: model_run_dir may be remote storage
        try:
            target = os.path.join(self.model_run_dir, "training")
            tf.io.gfile.makedirs(os.path.join(target, "logs"))
            for child in self.children:
                tf.io.gfile.copy(child.log_path, os.path.join(target, "logs", f"{child.name}.log"),
                                 overwrite=True)
            # A fresh process that ran a local cluster wrote the cluster's report already.
            if not (len(self.children) == 1 and self.children[0].name == "trainer"
                    and tf.io.gfile.exists(os.path.join(target, "cluster.json"))):
                with tf.io.gfile.GFile(os.path.join(target, "cluster.json"), "w") as f:
                    json.dump(self.report(), f, indent=1)
        except Exception as e:
            logging.warning("Could not keep the training processes' logs: %s", e)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: str, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - chars))
            return f.read().decode("utf-8", "replace").strip() or "(empty)"
    except OSError as e:
        return f"(no log: {e})"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
