"""Every tf.distribute strategy of the Trainer, trained through the real Trainer code path on the
real Transform output (see tests/support/training.py), reaches 0.9 accuracy on the eval split with
the replicas, workers and parameter servers it claims:

* multi_worker_mirrored: the Trainer component of a real LocalDagRunner pipeline run, 2 worker
  processes (TF_CONFIG, loopback) that end with identical weights;
* mirrored, central_storage (2 logical CPUs), default, one_device: TFX's Trainer executor;
* parameter_server: TFX's Trainer executor coordinating 2 worker and 1 ps server processes;
* tpu: a clear error before anything trains; and a worker that dies fails the training and
  leaves no process behind.
"""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from pipeline.training import tf_config
from tests.support import training as fixtures

# One training pipeline run (tests/support/training.py) serves both modules: one xdist worker runs them.
pytestmark = [pytest.mark.timeout(1200), pytest.mark.xdist_group("training")]

SINGLE_PROCESS = ["mirrored", "central_storage", "default", "one_device"]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    return fixtures.pipeline_run(tmp_path_factory)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    # One fresh process trains the four in turn: mirrored first, which splits its CPU into two
    # logical devices before TensorFlow starts; the rest then run in the same process.
    return fixtures.train(tmp_path_factory, SINGLE_PROCESS, {"cpu_replicas": "2"})


@pytest.fixture(scope="module")
def parameter_server(tmp_path_factory):
    return fixtures.train(tmp_path_factory, ["parameter_server"],
                          {"workers": "2", "parameter_servers": "1"}, network_isolated=True)[
        "parameter_server"]


def _only_chief(training):
    summaries = training.summaries()
    assert list(summaries) == ["chief-0"], summaries.keys()
    return summaries["chief-0"]


def _kernel_holders(training):
    """distribution.json: {kernel name: [(devices holding each part, part shape)]}, checking each kernel is whole
    in every part (these strategies copy variables, they do not split them)."""
    distribution = training.distribution()
    assert distribution["strategy"] == training.strategy
    kernels = {}
    for variable in distribution["variables"]:
        if "kernel" in variable["name"]:
            assert variable["split"] == [None, None], variable
            kernels[variable["name"]] = [(part["devices"], part["shape"]) for part in variable["parts"]]
            assert all(shape == variable["shape"] for _, shape in kernels[variable["name"]])
    assert len(kernels) == 3, kernels.keys()  # dense_0, dense_1, logits
    return kernels


def _assert_trained_well(training, pipeline_root, summary):
    assert summary["keras"].startswith("tf_keras"), summary["keras"]
    assert summary["history"]["val_accuracy"][-1] >= 0.9, summary["history"]
    # The export holds the weights of the epoch with the lowest validation loss (keep_best_epoch).
    val_loss = summary["history"]["val_loss"]
    assert summary["kept_epoch"] == 1 + val_loss.index(min(val_loss)), summary["history"]
    accuracy = fixtures.eval_accuracy(training.serving_model_dir, pipeline_root)
    assert accuracy >= 0.9, accuracy


@pytest.mark.parametrize("strategy", ["mirrored", "central_storage"])
def test_two_logical_cpus_are_two_replicas(strategy, single_process, pipeline_run):
    training = single_process[strategy]
    summary = _only_chief(training)
    assert summary["strategy_class"] == {"mirrored": "MirroredStrategy",
                                         "central_storage": "CentralStorageStrategy"}[strategy]
    assert summary["num_replicas_in_sync"] == 2
    assert summary["replica_devices"] == ["/job:localhost/replica:0/task:0/device:CPU:0",
                                          "/job:localhost/replica:0/task:0/device:CPU:1"]
    # Each step: a batch of 32 per replica, 64 in all, gradients aggregated over both.
    assert summary["global_batch_size"] == 64
    assert summary["examples"] == 64 * summary["steps"]
    # mirrored keeps a copy of every variable per replica; central_storage one, on the CPU.
    assert summary["variable_copies"] == (2 if strategy == "mirrored" else 1)
    assert summary["variable_devices"] == ["/job:localhost/replica:0/task:0/device:CPU:0"]
    cpus = [f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(2)]
    for parts in _kernel_holders(training).values():
        # mirrored: one whole copy on each replica's device; central_storage: one, on the CPU.
        assert parts == [(cpus if strategy == "mirrored" else cpus[:1], parts[0][1])]
    _assert_trained_well(training, pipeline_run.pipeline_root, summary)


@pytest.mark.parametrize("strategy, class_name", [("default", "_DefaultDistributionStrategy"),
                                                  ("one_device", "OneDeviceStrategy")])
def test_single_device_strategies(strategy, class_name, single_process, pipeline_run):
    training = single_process[strategy]
    summary = _only_chief(training)
    assert summary["strategy_class"] == class_name
    assert summary["num_replicas_in_sync"] == 1 and summary["global_batch_size"] == 32
    for parts in _kernel_holders(training).values():
        assert len(parts) == 1 and len(parts[0][0]) == 1  # one copy, on one device
    _assert_trained_well(training, pipeline_run.pipeline_root, summary)


def test_multi_worker_mirrored_two_worker_processes_end_identical(pipeline_run):
    training = pipeline_run.trainer  # the Trainer component of the pipeline run
    summaries = training.summaries()
    assert sorted(summaries) == ["worker-0", "worker-1"], summaries.keys()
    chief, other = summaries["worker-0"], summaries["worker-1"]
    assert chief["chief"] and not other["chief"]
    assert chief["pid"] != other["pid"]
    for summary in (chief, other):
        assert summary["strategy_class"] == "CollectiveAllReduceStrategy"  # MWMS's class
        assert summary["workers"] == 2 and summary["num_replicas_in_sync"] == 2
        assert summary["global_batch_size"] == 64
        assert summary["steps"] == chief["steps"]
    # Both processes took every step together and ended with the same weights.
    assert chief["weights_sha256"] == other["weights_sha256"]
    weights = [np.load(os.path.join(training.model_run_dir, "training", f"{task}.weights.npz"))
               for task in ("worker-0", "worker-1")]
    assert len(weights[0].files) == len(weights[1].files) >= 8
    for name in weights[0].files:
        np.testing.assert_array_equal(weights[0][name], weights[1][name])
    cluster = training.cluster()
    assert [(p["name"], p.get("exit_code")) for p in cluster["processes"]] == [
        ("worker-0", None), ("worker-1", 0)], cluster
    # distribution.json (the chief's): a whole copy of each kernel on each worker's CPU.
    workers = [f"/job:worker/replica:0/task:{i}/device:CPU:0" for i in range(2)]
    for parts in _kernel_holders(training).values():
        assert parts == [(workers, parts[0][1])]
    # Only the chief exported, once, into the Model artifact.
    assert sorted(os.listdir(training.model_dir)) == ["Format-Serving"]
    _assert_trained_well(training, pipeline_run.pipeline_root, chief)


def test_parameter_server_two_workers_one_ps(parameter_server, pipeline_run):
    summary = _only_chief(parameter_server)  # the coordinator; workers and PS only serve
    assert summary["strategy_class"] == "ParameterServerStrategyV2"
    assert summary["workers"] == 2 and summary["parameter_servers"] == 1
    # Steps run asynchronously, each on one worker: a step is one batch of 32.
    assert summary["num_replicas_in_sync"] == 1 and summary["global_batch_size"] == 32
    # The variables live on the parameter server, not with the coordinator.
    assert summary["variable_devices"] == ["/job:ps/replica:0/task:0/device:CPU:0"]
    for parts in _kernel_holders(parameter_server).values():
        assert parts == [(["/job:ps/replica:0/task:0/device:CPU:0"], parts[0][1])]
    cluster = parameter_server.cluster()
    processes = {p["name"]: p for p in cluster["processes"]}
    assert sorted(processes) == ["chief-0", "ps-0", "worker-0", "worker-1"], processes
    for name in ("ps-0", "worker-0", "worker-1"):
        assert processes[name]["role"] == "server" and processes[name]["pid"] != summary["pid"]
        # An idle tf.distribute.Server uses no CPU; each of these worked during training.
        assert processes[name]["cpu_seconds"] > 0.2, processes[name]
    _assert_trained_well(parameter_server, pipeline_run.pipeline_root, summary)


def test_tpu_without_a_tpu_is_a_clear_error_before_training(pipeline_run, tmp_path):
    from pipeline.training.strategies import NoTPUError
    from tools.trainer_driver import run_trainer_executor
    with pytest.raises(NoTPUError, match="no TPU is reachable from this machine") as error:
        run_trainer_executor(pipeline_run.pipeline_root, str(tmp_path), "tpu",
                             fixtures.TRAINING)
    assert "Nothing was trained" in str(error.value)
    assert not os.path.exists(tmp_path / "tpu" / "model" / "Format-Serving")
    assert not os.path.exists(tmp_path / "tpu" / "model_run" / "training")


def _descendants(pid):
    """pids of every live process below `pid`."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_worker_that_dies_fails_the_training_and_leaves_no_process(pipeline_run,
                                                                     tmp_path):
    """Kills worker-1 of a 2-worker multi_worker_mirrored training once the chief is in fit()."""
    overrides = {**fixtures.TRAINING, "train_steps": "2000", "workers": "2"}
    argv = fixtures.isolated(fixtures.driver(
        "train", "--pipeline-root", pipeline_run.pipeline_root, "--out", str(tmp_path),
        "--strategies", "multi_worker_mirrored", *fixtures.sets(overrides)))
    process = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(fixtures.REPO_ROOT)})
    seen, victim = set(), None
    try:
        train_logs = tmp_path / "multi_worker_mirrored" / "model_run" / "train"
        deadline = time.monotonic() + 400
        while victim is None and time.monotonic() < deadline and process.poll() is None:
            seen.update(_descendants(process.pid))
            workers = [p for p in seen if "pipeline.training.worker train" in _cmdline(p)]
            if workers and list(train_logs.glob("events.out.tfevents.*")):
                victim = workers[0]
                os.kill(victim, signal.SIGKILL)
            time.sleep(0.5)
        assert victim is not None, "the chief never started fit() with a worker running"
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode != 0
    assert "WorkerFailed: multi_worker_mirrored: worker-1" in output, output[-5000:]
    assert "was killed by SIGKILL" in output
    time.sleep(1)
    assert [p for p in seen | {process.pid} if _alive(p)] == []
    assert not (tmp_path / "multi_worker_mirrored" / "model" / "Format-Serving").exists()
    report = json.loads((tmp_path / "multi_worker_mirrored" / "model_run" / "training"
                         / "cluster.json").read_text())
    assert report["failed"] == "worker-1"


def test_environment_is_restored_after_the_chief_trained(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "from the cluster")
    monkeypatch.delenv("TFXSP_CLUSTER_REGISTER_TIMEOUT_S", raising=False)
    with tf_config.environment(TF_CONFIG='{"task": {}}', TFXSP_CLUSTER_REGISTER_TIMEOUT_S="9"):
        assert os.environ["TF_CONFIG"] == '{"task": {}}'
        assert os.environ["TFXSP_CLUSTER_REGISTER_TIMEOUT_S"] == "9"
    assert os.environ["TF_CONFIG"] == "from the cluster"
    assert "TFXSP_CLUSTER_REGISTER_TIMEOUT_S" not in os.environ
    with pytest.raises(RuntimeError):
        with tf_config.environment(TF_CONFIG=None):
            assert "TF_CONFIG" not in os.environ
            raise RuntimeError
    assert os.environ["TF_CONFIG"] == "from the cluster"


@pytest.mark.parametrize("overrides, message", [
    ({"strategy": "horovod"}, "'strategy' = 'horovod': must be one of default, one_device, "
                              "mirrored, multi_worker_mirrored, central_storage, "
                              "parameter_server, tpu, model_parallel, hybrid_parallel"),
    ({"cpu_replicas": "0"}, "'cpu_replicas' = 0: must be between 1 and 64"),
    ({"workers": "0"}, "'workers' = 0: must be between 1 and 32"),
    ({"parameter_servers": "9"}, "'parameter_servers' = 9: must be between 1 and 8"),
    ({"workers": "two"}, "'workers' = 'two': expected an int"),
])
def test_distribution_settings_are_validated(overrides, message):
    from pipeline.config import ConfigError, load_config
    with pytest.raises(ConfigError) as error:
        load_config(overrides, environ={})
    assert message in str(error.value)


def test_distribution_settings_reach_run_fn():
    from pipeline.config import load_config
    hparams = load_config({"strategy": "parameter_server", "workers": "3",
                           "parameter_servers": "2", "cpu_replicas": "4"},
                          environ={}).trainer_hparams()
    keys = ("strategy", "workers", "parameter_servers", "cpu_replicas")
    assert {k: hparams[k] for k in keys} == {
        "strategy": "parameter_server", "workers": 3, "parameter_servers": 2, "cpu_replicas": 4}
