"""The real pipeline, end to end: real TFX components, Beam DirectRunner, SQLite MLMD, run through
the `tfxsp run` command in its own process, three times over one pipeline root:

1. a first run that must bless and push a model that classifies the eval split well;
2. the same run again, which must reuse the cache for every upstream component;
3. a run with a threshold the model cannot meet, which must push nothing and say why.
"""
import glob
import os

import pytest
import tensorflow as tf
from ml_metadata import metadata_store

from pipeline.config import load_config
from pipeline.modules import features
from pipeline.run_report import collect, latest_run_id
from tests.helpers import PENGUINS_DIR, run_tfxsp

pytestmark = pytest.mark.timeout(1200)

UPSTREAM = ["CsvExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform",
            "Trainer"]


class PipelineRuns:
    def __init__(self, root):
        self.root = root
        self.base_args = ["--set", f"data_root={PENGUINS_DIR}", "--set", "tfx_root=runs"]
        self.config = load_config({"data_root": str(PENGUINS_DIR),
                                   "tfx_root": str(root / "runs")}, environ={})
        self.results = {}

    def run(self, name, *extra):
        self.results[name] = run_tfxsp(["run", *self.base_args, *extra], cwd=self.root)
        return self.results[name]

    def report(self):
        store = metadata_store.MetadataStore(self.config.metadata_connection_config())
        return collect(store, latest_run_id(store, self.config.pipeline_name))

    def versions(self):
        return sorted(os.listdir(self.config.serving_model_dir))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return PipelineRuns(tmp_path_factory.mktemp("pipeline"))


def _output(result):
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-5000:]}"


def test_first_run_blesses_and_pushes(runs):
    result = runs.run("first")
    assert result.returncode == 0, _output(result)
    report = runs.report()
    assert {n.node_id: n.state for n in report.nodes} == {
        **{n: "complete" for n in UPSTREAM}, "latest_blessed_model_resolver": "complete",
        "Evaluator": "complete", "Pusher": "complete"}
    assert report.blessed is True
    assert report.accuracy["Overall"] >= 0.9
    assert {"species=Adelie", "species=Gentoo", "species=Chinstrap", "island=Biscoe",
            "island=Dream", "island=Torgersen"} <= set(report.accuracy)
    assert report.pushed and report.pushed_version.isdigit()
    assert report.pushed_destination == os.path.join(runs.config.serving_model_dir,
                                                      report.pushed_version)
    assert runs.versions() == [report.pushed_version]
    # The summary a person reads names the blessing, the accuracy and the pushed version.
    assert "Blessing: blessed" in result.stdout
    assert f"Pushed: version {report.pushed_version}" in result.stdout
    assert "▶ Trainer" in result.stdout and "INFO:absl" not in result.stdout + result.stderr


def _eval_examples(config):
    pattern = os.path.join(config.pipeline_root, "CsvExampleGen", "examples", "*",
                           "Split-eval", "*.gz")
    files = glob.glob(pattern)
    assert files, f"no eval split at {pattern}"
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    return records, [tf.train.Example.FromString(r) for r in records]


def _value(example, key):
    feature = example.features.feature[key]
    values = list(feature.bytes_list.value or feature.float_list.value or feature.int64_list.value)
    return values[0] if values else None


def test_pushed_model_classifies_the_eval_split(runs):
    assert runs.results.get("first") is not None and runs.results["first"].returncode == 0
    version = runs.versions()[-1]
    model = tf.saved_model.load(os.path.join(runs.config.serving_model_dir, version))
    assert {"serving_default", "serving_raw", "transform_features"} <= set(model.signatures)

    records, examples = _eval_examples(runs.config)
    outputs = model.signatures["serving_default"](examples=tf.constant(records))
    predicted = [c.decode() for c in outputs["classes"].numpy()]
    labels = [_value(e, features.LABEL_KEY).decode() for e in examples]
    accuracy = sum(p == l for p, l in zip(predicted, labels)) / len(labels)
    assert len(labels) > 50 and accuracy >= 0.9, accuracy

    # The raw-feature signature (plain JSON rows over REST) agrees with the tf.Example one.
    complete = [i for i, e in enumerate(examples)
                if all(_value(e, k) is not None
                       for k in features.NUMERIC_FEATURE_KEYS + features.CATEGORICAL_FEATURE_KEYS)]
    raw_inputs = {k: tf.constant([float(_value(examples[i], k)) for i in complete])
                  for k in features.NUMERIC_FEATURE_KEYS}
    raw_inputs.update({k: tf.constant([_value(examples[i], k) for i in complete])
                       for k in features.CATEGORICAL_FEATURE_KEYS})
    raw_outputs = model.signatures["serving_raw"](**raw_inputs)
    expected = tf.gather(outputs["probabilities"], complete)
    assert tf.reduce_max(tf.abs(raw_outputs["probabilities"] - expected)) < 1e-5


def test_rerun_with_nothing_changed_reuses_the_cache(runs):
    result = runs.run("second")
    assert result.returncode == 0, _output(result)
    states = {n.node_id: n.state for n in runs.report().nodes}
    assert {n: states[n] for n in UPSTREAM} == {n: "cached" for n in UPSTREAM}


def test_unreachable_threshold_is_not_blessed_and_pushes_nothing(runs):
    versions_before = runs.versions()
    # A barely trained model cannot reach 100% accuracy.
    result = runs.run("unreachable", "--set", "min_accuracy=1.0", "--set", "train_steps=2",
                      "--set", "epochs=1")
    assert result.returncode == 3, _output(result)
    report = runs.report()
    assert report.blessed is False and not report.pushed
    assert runs.versions() == versions_before
    assert "not blessed, not pushed" in result.stdout
    assert "sparse_categorical_accuracy" in result.stdout
    assert any("sparse_categorical_accuracy" in f for f in report.validation_failures)
