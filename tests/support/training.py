"""The expensive set-up that tests/test_strategies.py and tests/test_tensorboard.py share.

* `pipeline_run`: the real pipeline (create_pipeline + TFX's LocalDagRunner, in a process of its
  own) up to and including the Trainer component, with strategy=multi_worker_mirrored and 2
  workers: the Trainer trains through run_fn exactly as `tfxsp run` does (Transform has run
  TensorFlow in that process, so the local cluster starts from a fresh process). Its Transform
  outputs feed every other training of the tests.
* `train`: TFX's Trainer executor (tools/trainer_driver.py) in a process of its own, once per
  strategy, on those Transform outputs.

Both are memoized for the pytest session. Processes that may start TensorFlow servers run in a
network namespace of their own (pipeline.training.network.isolated_argv), where they can reach
only each other.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.paths import PENGUINS_DIR, REPO_ROOT

# Short but honest training: accuracy on the eval split still reaches 0.9 with every strategy.
TRAINING = {"train_steps": "120", "epochs": "4", "eval_steps": "4",
            "tensorboard_update_freq": "10", "histogram_freq": "1"}
PROCESS_TIMEOUT_S = 600

_MEMO: dict[str, object] = {}


@dataclasses.dataclass
class Training:
    """One strategy's training: where it wrote, and what its processes reported."""
    strategy: str
    model_dir: str  # the Model artifact's URI; the SavedModel is in <model_dir>/Format-Serving
    model_run_dir: str  # TensorBoard logs, <model_run_dir>/training/*.json summaries

    @property
    def serving_model_dir(self) -> str:
        return os.path.join(self.model_dir, "Format-Serving")

    def summaries(self) -> dict[str, dict]:
        """{task: summary} from <model_run_dir>/training/<task>.json of every training process."""
        found = {}
        for path in glob.glob(os.path.join(self.model_run_dir, "training", "*.json")):
            name = os.path.basename(path)[:-len(".json")]
            if name not in ("cluster", "network"):  # the launcher's records, not a task's
                with open(path) as f:
                    found[name] = json.load(f)
        return found

    def distribution(self) -> dict:
        """<model_run_dir>/distribution.json: where every trainable variable's parts live."""
        with open(os.path.join(self.model_run_dir, "distribution.json")) as f:
            return json.load(f)

    def cluster(self) -> dict | None:
        path = os.path.join(self.model_run_dir, "training", "cluster.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)


@dataclasses.dataclass
class PipelineRun:
    tfx_root: Path
    pipeline_root: str
    metadata_path: str
    output: str
    trainer: Training


def run_process(argv: list[str], cwd: Path, timeout: float = PROCESS_TIMEOUT_S
                ) -> subprocess.CompletedProcess:
    """Runs argv in its own process group; on timeout kills the group (its children die with it:
    every process pipeline.distributed starts has PR_SET_PDEATHSIG)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        output += f"\n[killed after {timeout}s]"
    return subprocess.CompletedProcess(argv, process.returncode, output, "")


def isolated(argv: list[str]) -> list[str]:
    from pipeline.training.network import isolated_argv
    return isolated_argv(argv)


def driver(*args: str) -> list[str]:
    return [sys.executable, "-m", "tools.trainer_driver", *args]


def sets(overrides: dict[str, str]) -> list[str]:
    return [f"--set={key}={value}" for key, value in overrides.items()]


def tail(result: subprocess.CompletedProcess, chars: int = 6000) -> str:
    return f"exit {result.returncode}\n{result.stdout[-chars:]}"


def pipeline_run(tmp_path_factory) -> PipelineRun:
    if "pipeline" not in _MEMO:
        root = tmp_path_factory.mktemp("training_pipeline")
        overrides = {"data_root": str(PENGUINS_DIR), **TRAINING,
                     "strategy": "multi_worker_mirrored", "workers": "2"}
        result = run_process(driver("pipeline", "--tfx-root", str(root / "runs"),
                                    "--to-node", "Trainer", *sets(overrides)), cwd=root)
        assert result.returncode == 0, tail(result)
        pipeline_root = str(root / "runs" / "pipelines" / "penguin_serving")
        metadata_path = os.path.join(pipeline_root, "metadata.db")
        _MEMO["pipeline"] = PipelineRun(
            root / "runs", pipeline_root, metadata_path, result.stdout,
            Training("multi_worker_mirrored", _newest_uri(metadata_path, "Model"),
                     _newest_uri(metadata_path, "ModelRun")))
    return _MEMO["pipeline"]


def _newest_uri(metadata_path: str, type_name: str) -> str:
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    artifacts = metadata_store.MetadataStore(config).get_artifacts_by_type(type_name)
    assert artifacts, f"ML Metadata has no {type_name} artifact"
    return max(artifacts, key=lambda a: a.id).uri


def train(tmp_path_factory, strategies: list[str], overrides: dict[str, str],
          network_isolated: bool = False) -> dict[str, Training]:
    """Trains each strategy with TFX's Trainer executor, all in one fresh process."""
    key = json.dumps([strategies, overrides, network_isolated])
    if key not in _MEMO:
        run = pipeline_run(tmp_path_factory)
        out = tmp_path_factory.mktemp("trained")
        argv = driver("train", "--pipeline-root", run.pipeline_root, "--out", str(out),
                      "--strategies", ",".join(strategies), *sets({**TRAINING, **overrides}))
        result = run_process(isolated(argv) if network_isolated else argv, cwd=out)
        assert result.returncode == 0, tail(result)
        _MEMO[key] = {s: Training(s, str(out / s / "model"), str(out / s / "model_run"))
                      for s in strategies}
    return _MEMO[key]


def eval_split(pipeline_root: str):
    """The raw eval split that CsvExampleGen wrote: serialized records and their species."""
    import tensorflow as tf
    files = glob.glob(os.path.join(pipeline_root, "CsvExampleGen", "examples", "*",
                                   "Split-eval", "*.gz"))
    assert files, "no eval split"
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    labels = [tf.train.Example.FromString(r).features.feature["species"].bytes_list.value[0]
              .decode() for r in records]
    return records, labels


def eval_accuracy(serving_model_dir: str, pipeline_root: str) -> float:
    """Accuracy of the exported SavedModel's serving_default signature on the whole eval split."""
    import tensorflow as tf
    records, labels = eval_split(pipeline_root)
    model = tf.saved_model.load(serving_model_dir)
    classes = model.signatures["serving_default"](examples=tf.constant(records))["classes"]
    predicted = [c.decode() for c in classes.numpy()]
    assert len(labels) > 50
    return sum(p == label for p, label in zip(predicted, labels)) / len(labels)
