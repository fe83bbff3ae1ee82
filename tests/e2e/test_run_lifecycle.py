"""Whole `tfxsp run` processes stopped by real signals, at moments the tests read from ML Metadata and /proc, over one
pipeline root:

* one run at a time per pipeline root, and a dead run's lock taken over (issue 12, point 9);
* SIGTERM, SIGHUP and SIGKILL during multi-worker training stop the run, its training cluster and the model server
  it started (point 7); another program on the REST port is refused before anything trains (point 7);
* a run SIGKILLed during parameter-server training leaves no process behind, is shown abandoned, and the next run
  completes (point 10);
* where network isolation is unavailable, the run says so on the terminal (point 11);
* the password of a mysql:// metadata_url is in no output and no log (point 6, the pipeline's side; an
  unreachable store is now refused before the run: exit 2).

The runs share the pipeline root only for its cache: the first run's completed components make the later ones reach
the Trainer quickly. Each test asserts only on what its own runs did.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from pipeline.config import load_config
from pipeline.metadata import runs as runs_api
from pipeline.metadata import store as store_api
from pipeline.runners import run_lock
from pipeline.training import network
from serving import launcher
from tests.support.lifecycle import (
    SERVER,
    TF_SERVER,
    TRAINER_CHILD,
    WORKER,
    Tfxsp,
    describe,
    holds,
    lock_record,
    node_states,
    running,
    wait_for,
)
from tests.support.paths import PENGUINS_DIR
from tests.support.processes import free_port, run_tfxsp

pytestmark = pytest.mark.timeout(2400)

SECRET = "S3cr3t-pw-4-mlmd"
CLUSTER_UP_S = 900  # until the Trainer's cluster is up: TensorFlow imports in several processes on a busy machine


class Pipeline:
    """`tfxsp run` over one pipeline root with its own serving ports and a small training."""

    def __init__(self, root):
        self.root = root
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.overrides = {"data_root": str(PENGUINS_DIR), "tfx_root": str(root / "runs"),
                          "grpc_port": str(self.grpc_port), "rest_port": str(self.rest_port),
                          "train_steps": "40", "epochs": "2", "max_accuracy_drop": "1.0"}
        self.config = load_config(self.overrides, environ={})
        self.started: list[Tfxsp] = []

    def args(self, **more: str) -> list[str]:
        return [a for key, value in {**self.overrides, **more}.items() for a in ("--set", f"{key}={value}")]

    def start(self, *flags: str, env=None, **more: str) -> Tfxsp:
        run = Tfxsp(["run", *self.args(**more), *flags], self.root, env)
        self.started.append(run)
        return run

    def run(self, *flags: str, env=None, timeout_s: float = 1500, **more: str) -> Tfxsp:
        run = self.start(*flags, env=env, **more)
        run.wait(timeout_s)
        return run

    def states(self, since_ms: int) -> dict[str, str]:
        return node_states(self.config.metadata_path, self.config.pipeline_name, since_ms)

    def store(self):
        return store_api.open_store(self.config.metadata_connection_config())

    def runs_json(self, *args: str) -> dict:
        result = run_tfxsp(["runs", *args, "--format", "json", "--set", f"tfx_root={self.overrides['tfx_root']}"],
                           cwd=self.root)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    pipeline = Pipeline(tmp_path_factory.mktemp("lifecycle"))
    yield pipeline
    for run in pipeline.started:  # nothing a failed test started outlives the module
        run.kill_tree()


def _flat(text: str) -> str:
    """The text with rich's line wrapping undone."""
    return " ".join(text.split())


def _summary_run_id(run: Tfxsp) -> str:
    match = re.search(r"^Pipeline run (\S+) \(", run.stdout, re.M)
    assert match, run.output()
    return match.group(1)


def _started(record: dict) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["started_ms"] / 1000))


def _trainer_cluster_up(pipeline: Pipeline, run: Tfxsp, task: tuple[str, ...], count: int):
    """The run's process tree once ML Metadata shows its Trainer RUNNING and `count` processes of `task` run."""
    def up():
        tree = run.tree()
        if sum(holds(p, task) for p in tree) < count or not any(holds(p, SERVER) for p in tree):
            return None
        return tree if pipeline.states(run.started_ms).get("Trainer") == "running" else None
    return wait_for(up, CLUSTER_UP_S, f"the Trainer running with {count} {' '.join(task)} process(es)", run)


def _nothing_left(tree, run: Tfxsp) -> None:
    wait_for(lambda: not running(tree), 60, "every process of the run to be gone", run=None)
    assert not running(tree), describe(running(tree))


# ------------------------------------------------------------------------------------------------ point 9


def test_one_run_at_a_time_and_a_dead_runs_lock_is_taken_over(pipeline):
    root = pipeline.config.pipeline_root
    first = pipeline.start()
    record = wait_for(lambda: (lock_record(root) or {}).get("pid") == first.pid and lock_record(root), 300,
                      "the first run's record in the run lock", first)

    second = pipeline.run(timeout_s=300)
    assert second.popen.returncode == 2, second.output()
    message = _flat(second.stderr)
    assert "Another run holds this pipeline root:" in message
    assert f"locked by another tfxsp run (pid {first.pid}, started {_started(record)}" in message
    assert f"kill {first.pid} stops it cleanly" in message and "Nothing was run or pushed." in message
    assert "Running pipeline" not in second.stdout  # refused before anything ran
    assert first.popen.poll() is None  # and the first run goes on

    tree = first.tree()
    first.send(signal.SIGKILL)
    assert first.wait(60) == -signal.SIGKILL
    _nothing_left(tree, first)
    state = run_lock.lock_state(root)
    assert state.exists and not state.held  # the kernel dropped the lock with the process...
    assert lock_record(root)["pid"] == first.pid  # ...which had no chance to clear its record

    third = pipeline.run()
    assert third.popen.returncode == 0, third.output()
    assert (f"The previous tfxsp run here (pid {first.pid}, started {_started(record)}) ended without finishing: it "
            "no longer holds the run lock, which this run took over.") in _flat(third.stdout)
    assert lock_record(root) is None and not run_lock.lock_state(root).held  # released, record cleared
    # The summary is of the run the third process started.
    ours = runs_api.run_started_since(pipeline.store(), pipeline.config.pipeline_name, third.started_ms)
    assert _summary_run_id(third) == ours.name


# ------------------------------------------------------------------------------------------------ point 7


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_stops_the_run_its_training_cluster_and_its_model_server(pipeline, signum):
    run = pipeline.start(strategy="multi_worker_mirrored", workers="2")
    tree = _trainer_cluster_up(pipeline, run, WORKER, 1)
    assert [p for p in tree if holds(p, SERVER)] and [p for p in tree if holds(p, TRAINER_CHILD)], describe(tree)
    run_id = runs_api.run_started_since(pipeline.store(), pipeline.config.pipeline_name, run.started_ms).name

    run.send(signum)
    code = run.wait(300)
    _nothing_left(tree, run)
    for port in (pipeline.grpc_port, pipeline.rest_port):
        wait_for(lambda port=port: launcher.port_is_free("127.0.0.1", port), 30, f"port {port} to be free")
    assert not run_lock.lock_state(pipeline.config.pipeline_root).held
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL, run.output()
        return
    name = signal.Signals(signum).name
    assert code == 128 + signum, run.output()
    assert _summary_run_id(run) == run_id
    assert re.search(r"│ Trainer\s+│ interrupted\s+│", run.stdout), run.output()
    assert (f"Stopped by {name}: Trainer was running. Every process this run started is stopped, the model "
            "server included.") in _flat(run.stderr), run.output()
    assert lock_record(pipeline.config.pipeline_root) is None  # released cleanly


def test_another_program_on_the_rest_port_is_refused_before_anything_trains(pipeline):
    other = subprocess.Popen([sys.executable, "-m", "http.server", str(pipeline.rest_port), "--bind", "127.0.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: launcher.probe_rest("127.0.0.1", pipeline.rest_port).kind != "nothing", 30,
                 "python -m http.server to listen")
        run = pipeline.run(timeout_s=300)
    finally:
        other.terminate()
        other.wait(10)
    assert run.popen.returncode == 2, run.output()
    message = _flat(run.stderr)
    assert (f"Serving port {pipeline.rest_port} on 127.0.0.1 is taken by a program that is not a TF Serving model "
            "server") in message
    assert "answered HTTP 404 '<!DOCTYPE HTML" in message and "Nothing was run or pushed." in message
    assert "Running pipeline" not in run.stdout
    assert pipeline.states(run.started_ms) == {}  # no run recorded
    assert not run_lock.lock_state(pipeline.config.pipeline_root).held


# ------------------------------------------------------------------------------------------------ point 10


def test_killed_during_parameter_server_training_then_run_again(pipeline):
    cluster = {"strategy": "parameter_server", "workers": "1", "parameter_servers": "1"}
    killed = pipeline.start(**cluster)
    tree = _trainer_cluster_up(pipeline, killed, TF_SERVER, 2)
    killed_run = runs_api.run_started_since(pipeline.store(), pipeline.config.pipeline_name, killed.started_ms).name
    killed.send(signal.SIGKILL)
    assert killed.wait(60) == -signal.SIGKILL
    _nothing_left(tree, killed)  # the model server, the trainer's process, the worker and the parameter server

    listed = {r["run_id"]: r for r in pipeline.runs_json()["runs"]}
    assert listed[killed_run]["state"] == "abandoned"
    shown = pipeline.runs_json("show", killed_run)
    assert {n["node_id"]: n["state"] for n in shown["nodes"]}["Trainer"] == "abandoned"

    again = pipeline.run(**cluster)
    assert again.popen.returncode == 0, again.output()
    output = _flat(again.stdout)
    assert (f"Run {killed_run} was abandoned: its process ended while Trainer ran. ML Metadata keeps those "
            "executions RUNNING (tfxsp runs shows them abandoned); this run does that work again.") in output
    states = pipeline.states(again.started_ms)
    assert states["Trainer"] == "complete" and states["ServingValidator"] == "complete", states
    # Network isolation works on this machine: the cluster ran isolated, and nothing warns about it.
    assert "not network-isolated" not in output
    trainer = next(r for r in pipeline.runs_json("show", _summary_run_id(again))["nodes"] if r["node_id"] == "Trainer")
    model_run = next(o["uri"] for o in trainer["outputs"] if o["type"] == "ModelRun")
    assert network.read_marker(model_run)["isolated"] is True
    listed = {r["run_id"]: r["state"] for r in pipeline.runs_json()["runs"]}
    assert listed[killed_run] == "abandoned" and listed[_summary_run_id(again)] == "complete"


# ------------------------------------------------------------------------------------------------ point 11


def test_without_network_isolation_the_run_says_so_on_the_terminal(pipeline, tmp_path):
    # A kernel that forbids unprivileged user namespaces, as many containers do: what unshare(1) says there.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "unshare").write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\n"
                                     "exit 1\n")
    (bin_dir / "unshare").chmod(0o755)
    run = pipeline.run(env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
                       strategy="multi_worker_mirrored", workers="2", random_seed="7")
    assert run.popen.returncode == 0, run.output()
    output = _flat(run.stdout)
    reason = "`unshare --net --map-root-user` is not allowed here (unshare: unshare failed: Operation not permitted)"
    # While the Trainer runs (the progress line), and in the summary.
    assert (f"Warning: the local multi_worker_mirrored training cluster is not network-isolated: {reason}. Its "
            "TensorFlow servers listen on every interface of this host") in output
    assert "TensorFlow servers listened on every interface of this host" in output
    trainer = next(r for r in pipeline.runs_json("show", _summary_run_id(run))["nodes"] if r["node_id"] == "Trainer")
    marker = network.read_marker(next(o["uri"] for o in trainer["outputs"] if o["type"] == "ModelRun"))
    assert marker["isolated"] is False and marker["reason"] == reason
    # The cluster's addresses are loopback ones, the most TensorFlow lets a caller choose.
    addresses = [a for tasks in marker["cluster"].values() for a in tasks]
    assert len(addresses) == 2 and all(a.startswith("127.0.0.1:") for a in addresses), marker
    assert f"ports {', '.join(str(p) for p in marker['ports'])}" in output


# ------------------------------------------------------------------------------------------------ point 6


@pytest.mark.parametrize("verbose", [False, True], ids=["log file", "verbose"])
def test_no_password_of_a_mysql_metadata_url_in_the_output_or_the_log(pipeline, verbose):
    """An unreachable MySQL store is found before anything runs (exit 2); the password is in no output and no
    log. (The log lines of a real run on MariaDB, TFX's connection config among them, are redacted:
    tests/e2e/test_shared_store.py.)"""
    port = free_port()
    url = f"mysql://tfxsp:{SECRET}@127.0.0.1:{port}/mlmd"  # nothing listens there: MySQL is refused
    logs = os.path.join(pipeline.config.pipeline_root, "logs")
    before = set(os.listdir(logs)) if os.path.isdir(logs) else set()
    run = pipeline.run(*(["-v"] if verbose else []), metadata_url=url, timeout_s=600)
    assert run.popen.returncode == 2, run.output()
    written = [os.path.join(logs, name) for name in set(os.listdir(logs)) - before] if os.path.isdir(logs) else []
    log = "".join(open(path, errors="replace").read() for path in written)
    assert SECRET not in run.stdout + run.stderr + log
    assert f"Cannot reach the metadata store at mysql://tfxsp@127.0.0.1:{port}/mlmd" in " ".join(run.stderr.split())
