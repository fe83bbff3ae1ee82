"""Where the Trainer trains: in its own process, in a fresh process, or in a local cluster.

`run_training(fn_args, train_fn)` is what the Trainer's run_fn calls; `train_fn` trains in the
process that calls it (trainer.train_and_export). Which processes take part:

* A strategy without process-level set-up (default, one_device, tpu), or whose set-up this
  process can still do: this process.
* A strategy that must set TensorFlow up before its first op (logical CPU devices for mirrored and
  central_storage; collective ops or a cluster connection for multi_worker_mirrored and
  parameter_server) when this process's TensorFlow runtime already runs -- in `tfxsp run`,
  Transform ran TensorFlow in the same process: the same run_training in one fresh child process.
* multi_worker_mirrored with TF_CONFIG set (a TFJob, Vertex AI, a hand-made cluster): as is, this
  process is the task that TF_CONFIG names. Without TF_CONFIG, a local cluster of `workers`
  workers on loopback: this process is worker 0, the chief (TF_CONFIG is set only while it
  trains, then restored), and `workers`-1 child processes run the same training, each with its
  own TF_CONFIG.
* parameter_server with TF_CONFIG: the chief coordinates (ClusterCoordinator); a worker or ps task
  runs a tf.distribute.Server until the cluster kills it. Without TF_CONFIG: `workers` worker and
  `parameter_servers` ps processes, each a tf.distribute.Server on loopback, and this process
  coordinates as the chief.

TensorFlow's gRPC servers listen on every interface, whatever host the cluster spec names. So a
local cluster runs in a network namespace of its own that has only the loopback interface
(`unshare --net`, where Linux allows it): there the chief is this process only if it already is in
such a namespace; otherwise a fresh child starts the cluster inside one.

Each child process runs in its own process group with its output in a log file. A child that fails
(or a server that exits) stops the whole cluster and fails the Trainer with the end of its log;
every child is killed when training ends, however it ends; the logs are kept in
<model_run_dir>/training/logs and the processes, with their CPU time, in .../training/cluster.json.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from absl import logging

LOOPBACK = "127.0.0.1"
# Set in the processes of an isolated local cluster (see isolated_network_argv).
ISOLATED_ENV = "TFXSP_ISOLATED_NETWORK"
START_TIMEOUT_S = 600  # until a child is up: it imports TensorFlow, slow on a busy machine
FINISH_TIMEOUT_S = 600  # how long the other workers may still run after the chief finished
# How long multi_worker_mirrored's workers wait for each other to join (they are all up by then).
REGISTER_TIMEOUT_S = 180
POLL_S = 0.2
LOG_TAIL_CHARS = 4000
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TrainFn = Callable[[Any], Any]


class WorkerFailed(RuntimeError):
    """A process of a local training cluster failed; the message ends with the end of its log."""


# ------------------------------------------------------------------------------------- entry point
def run_training(fn_args: Any, train_fn: TrainFn) -> None:
    """Runs `train_fn(fn_args)` in the processes that the configured strategy needs."""
    from pipeline.modules import strategies  # TensorFlow: not needed by the helpers below
    hparams = dict(fn_args.custom_config)
    name = hparams["strategy"]
    config = strategies.tf_config()
    if name in strategies.CLUSTER_STRATEGIES and config.get("cluster"):
        task_type = config.get("task", {}).get("type")
        if name == "parameter_server" and task_type in ("worker", "ps"):
            serve()  # a real cluster's worker or parameter server: never returns
        if strategies.runtime_initialized():
            _run_in_fresh_process(fn_args, isolate=False)  # keeps TF_CONFIG
        else:
            train_fn(fn_args)
        return
    if name in strategies.CLUSTER_STRATEGIES:
        if strategies.runtime_initialized() or _should_isolate(fn_args):
            logging.info("Starting the local %s cluster from a fresh process", name)
            _run_in_fresh_process(fn_args, isolate=_can_isolate(fn_args), env={"TF_CONFIG": None})
        elif name == "multi_worker_mirrored":
            _local_multi_worker(fn_args, train_fn, int(hparams["workers"]))
        else:
            _local_parameter_servers(fn_args, train_fn, int(hparams["workers"]),
                                     int(hparams["parameter_servers"]))
        return
    reason = strategies.needs_fresh_process(hparams)
    if reason:
        logging.info("Training in a fresh process: %s", reason)
        _run_in_fresh_process(fn_args, isolate=False, env={"TF_CONFIG": None})
        return
    train_fn(fn_args)


def serve(ready_file: str | None = None) -> None:
    """Runs the tf.distribute.Server of TF_CONFIG's task (a parameter_server worker or ps) until
    the process is killed."""
    import tensorflow as tf
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id,
                                  protocol=resolver.rpc_layer or "grpc", start=True)
    logging.info("%s %d serving at %s", resolver.task_type, resolver.task_id, server.target)
    _touch(ready_file)
    server.join()


# ---------------------------------------------------------------------------------- local clusters
def _local_multi_worker(fn_args: Any, train_fn: TrainFn, workers: int) -> None:
    from pipeline.modules import strategies
    cluster = {"worker": [f"{LOOPBACK}:{port}" for port in free_ports(workers)]}
    register = {strategies.REGISTER_TIMEOUT_ENV: str(REGISTER_TIMEOUT_S)}
    with LocalCluster(fn_args.model_run_dir, "multi_worker_mirrored") as local:
        args_file = local.write_fn_args(fn_args)
        others = [f"worker-{i}" for i in range(1, workers)]
        for i, task in enumerate(others, start=1):
            local.start(task, "task", ["train", "--fn-args", args_file],
                        {"TF_CONFIG": tf_config(cluster, "worker", i), **register})
        # The chief starts its strategy once every other worker is up: a worker that died
        # before joining would leave it waiting for the cluster to form.
        local.wait_ready(others)
        local.run_chief("worker-0", train_fn, fn_args,
                        {"TF_CONFIG": tf_config(cluster, "worker", 0), **register})
        local.wait_tasks(others, FINISH_TIMEOUT_S)


def _local_parameter_servers(fn_args: Any, train_fn: TrainFn, workers: int,
                             parameter_servers: int) -> None:
    ports = free_ports(1 + workers + parameter_servers)
    cluster = {"chief": [f"{LOOPBACK}:{ports[0]}"],
               "worker": [f"{LOOPBACK}:{p}" for p in ports[1:1 + workers]],
               "ps": [f"{LOOPBACK}:{p}" for p in ports[1 + workers:]]}
    # As TF's guide does: lets the coordinator see worker and PS failures.
    fail_fast = {"GRPC_FAIL_FAST": "use_caller"}
    with LocalCluster(fn_args.model_run_dir, "parameter_server") as local:
        servers = []
        for job, count in (("ps", parameter_servers), ("worker", workers)):
            for i in range(count):
                servers.append(f"{job}-{i}")
                local.start(servers[-1], "server", ["serve"],
                            {"TF_CONFIG": tf_config(cluster, job, i), **fail_fast})
        local.wait_ready(servers)
        local.run_chief("chief-0", train_fn, fn_args,
                        {"TF_CONFIG": tf_config(cluster, "chief", 0), **fail_fast})


def _run_in_fresh_process(fn_args: Any, isolate: bool,
                          env: dict[str, str | None] | None = None) -> None:
    """run_training again in a fresh child process (whose TensorFlow runtime has not started)."""
    with LocalCluster(fn_args.model_run_dir, fn_args.custom_config["strategy"]) as local:
        args_file = local.write_fn_args(fn_args)
        local.start("trainer", "task", ["run", "--fn-args", args_file], env or {},
                    isolate=isolate)
        local.wait_tasks(["trainer"], None)


def _remote_paths(fn_args: Any) -> bool:
    paths = [fn_args.model_run_dir, fn_args.serving_model_dir, fn_args.transform_output,
             *fn_args.train_files, *fn_args.eval_files]
    return any("://" in str(p) for p in paths if p)


def _can_isolate(fn_args: Any) -> bool:
    # A local cluster that reads or writes remote storage (gs://, s3://) needs the host network.
    return not _remote_paths(fn_args) and bool(isolated_network_argv(["true"], probe=True))


def _should_isolate(fn_args: Any) -> bool:
    return os.environ.get(ISOLATED_ENV) != "1" and _can_isolate(fn_args)


# -------------------------------------------------------------------------------- process handling
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
        path = os.path.join(self.workdir, "fn_args.json")
        with open(path, "w") as f:
            json.dump(fn_args_to_dict(fn_args), f)
        return path

    def start(self, name: str, role: str, args: list[str], env: dict[str, str | None],
              isolate: bool = False) -> _Child:
        """Starts `python -m pipeline.worker ARGS` as `name`; role 'task' (runs to completion) or
        'server' (runs until killed)."""
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
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (REPO_ROOT, child_env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "pipeline.worker", *args, "--ready-file", ready_path]
        if isolate:
            argv = isolated_network_argv(argv)
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
            with environment(**env):
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


def _touch(path: str | None) -> None:
    if path:
        with open(path, "w"):
            pass


# ------------------------------------------------------------------------------------------ helpers
def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports that are free on the loopback interface right now."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(cluster: dict[str, list[str]], task_type: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Sets (None: removes) environment variables for the block, then restores what was there."""
    saved = {key: os.environ.get(key) for key in values}

    def apply(items):
        for key, value in items:
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        apply(values.items())
        yield
    finally:
        apply(saved.items())


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def isolated_network_argv(argv: list[str], probe: bool = False) -> list[str]:
    """`argv` run in a new network namespace whose only interface is loopback, so that the
    TensorFlow servers it starts (which listen on every interface) are reachable from nowhere
    else. Needs Linux `unshare` and user namespaces (or root); returns `argv` unchanged (with
    probe=True: []) where that is not possible."""
    unshare = shutil.which("unshare")
    prefix = [unshare, "--net", "--map-root-user"] if unshare else []
    if not prefix or not _unshare_works(tuple(prefix)):
        return [] if probe else argv
    return [*prefix, sys.executable, "-m", "pipeline.worker", "loopback", "--", *argv]


_UNSHARE_WORKS: dict[tuple, bool] = {}


def _unshare_works(prefix: tuple) -> bool:
    if prefix not in _UNSHARE_WORKS:
        try:
            _UNSHARE_WORKS[prefix] = subprocess.run(
                [*prefix, "true"], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _UNSHARE_WORKS[prefix] = False
    return _UNSHARE_WORKS[prefix]


def bring_up_loopback() -> None:
    """Brings up `lo` (down in a new network namespace) with the SIOCSIFFLAGS ioctl."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, request)[:18])[1]
        if not flags & iff_up:
            fcntl.ioctl(s, siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))


# ------------------------------------------------------------------------ FnArgs between processes
_TELEMETRY = ["Trainer"]


def fn_args_to_dict(fn_args: Any) -> dict[str, Any]:
    """FnArgs as JSON: every field but the DataAccessor, rebuilt from its payload format."""
    import attr
    values = {f.name: getattr(fn_args, f.name) for f in attr.fields(type(fn_args))
              if f.name != "data_accessor"}
    payload_format, data_view_uri = _payload_format(fn_args.data_accessor)
    return {"fn_args": values, "payload_format": payload_format, "data_view_uri": data_view_uri}


def _payload_format(data_accessor: Any):
    """The examples' payload format. TFX's DataAccessor keeps it only in its dataset factory's
    closure; Transform's output, which this Trainer reads, is tf.Example."""
    from tfx.proto import example_gen_pb2
    factory = getattr(data_accessor, "tf_dataset_factory", None)
    cells: dict[str, Any] = {}
    if factory is not None and getattr(factory, "__closure__", None):
        cells = dict(zip(factory.__code__.co_freevars,
                         (c.cell_contents for c in factory.__closure__)))
    return (int(cells.get("payload_format", example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)),
            cells.get("data_view_uri"))


def fn_args_from_dict(data: dict[str, Any]) -> Any:
    from tfx.components.trainer import fn_args_utils
    from tfx.components.util import tfxio_utils
    payload_format, data_view_uri = data["payload_format"], data["data_view_uri"]

    def make_tfxio(file_pattern, schema):
        return tfxio_utils.make_tfxio(file_pattern=file_pattern, telemetry_descriptors=_TELEMETRY,
                                      payload_format=payload_format, data_view_uri=data_view_uri,
                                      schema=schema)
    accessor = fn_args_utils.DataAccessor(
        tf_dataset_factory=lambda files, options, schema: make_tfxio(
            files, schema).TensorFlowDataset(options),
        record_batch_factory=lambda files, options, schema: make_tfxio(
            files, schema).RecordBatches(options),
        data_view_decode_fn=None)
    return fn_args_utils.FnArgs(data_accessor=accessor, **data["fn_args"])
