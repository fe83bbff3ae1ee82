"""The real pipeline, end to end: real TFX components, Beam DirectRunner, ML Metadata, run through
the `tfxsp run` command in its own process, three times over one pipeline root:

1. a first run that must bless and push a model that classifies the eval split well;
2. the same run again, which must reuse the cache for every component up to Pusher, push nothing new and still
   probe the live version;
3. a run with a threshold the model cannot meet, which must push nothing and say why.

1 and 2 run on both stores: SQLite (pipeline_runs) and a real MariaDB server (mariadb_pipeline_runs, whose first
run ran at the same time as another pipeline's: tests/e2e/test_shared_store.py). 3 is about the Evaluator, not
the store, and runs on SQLite only.
"""
import glob
import os

import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.metadata.report import collect
from pipeline.metadata.runs import latest_run_id

# The runs fixture picks the shared runs by name: the shared_runs group of tests/conftest.py.
pytestmark = [pytest.mark.timeout(1200), pytest.mark.xdist_group("shared_runs")]

UPSTREAM = ["CsvExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform",
            "Trainer"]


def _report(runs):
    store = metadata_store.MetadataStore(runs.config.metadata_connection_config())
    return collect(store, latest_run_id(store, runs.config.pipeline_name))


def _versions(runs):
    return sorted(d for d in os.listdir(runs.config.serving_model_dir) if d.isdigit())


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def runs(request):
    return request.getfixturevalue({"sqlite": "pipeline_runs", "mariadb": "mariadb_pipeline_runs"}[request.param])


def _output(result):
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-5000:]}"


def test_first_run_blesses_pushes_and_proves_the_model_live(runs):
    result = runs.results["first"]
    assert result.returncode == 0, _output(result)
    report = _report(runs)
    assert {n.node_id: n.state for n in report.nodes} == {
        **{n: "complete" for n in UPSTREAM}, "latest_blessed_model_resolver": "complete",
        "Evaluator": "complete", "Pusher": "complete", "ServingValidator": "complete"}
    assert report.blessed is True
    accuracy = report.by_slice("sparse_categorical_accuracy")
    assert report.gate_metric == "sparse_categorical_accuracy" and accuracy["Overall"] >= 0.9
    assert {"species=Adelie", "species=Gentoo", "species=Chinstrap", "island=Biscoe",
            "island=Dream", "island=Torgersen", "sex=female", "year=2007"} <= set(accuracy)
    assert report.pushed and report.pushed_version.isdigit()
    assert report.pushed_destination == os.path.join(runs.config.serving_model_dir,
                                                      report.pushed_version)
    assert _versions(runs) == [report.pushed_version]
    # The summary a person reads names the blessing, the accuracy and the pushed version.
    assert "Blessing: blessed" in result.stdout
    assert f"Pushed: version {report.pushed_version}" in result.stdout
    assert "▶ Trainer" in result.stdout and "INFO:absl" not in result.stdout + result.stderr


def test_first_run_records_the_serving_validation_linked_to_the_push(runs):
    report = _report(runs)
    store = metadata_store.MetadataStore(runs.config.metadata_connection_config())
    [validation] = store.get_artifacts_by_type("tfxsp.ServingValidation")
    assert validation.custom_properties["blessed"].int_value == 1
    assert validation.custom_properties["outcome"].string_value == "passed"
    assert validation.custom_properties["probed_version"].int_value == int(report.pushed_version)
    for api in ("rest", "grpc"):
        assert 0 < validation.custom_properties[f"{api}_p50_ms"].double_value <= \
            validation.custom_properties[f"{api}_p99_ms"].double_value
    # Linked in MLMD: the execution that wrote it read the PushedModel of this push.
    [output_event] = store.get_events_by_artifact_ids([validation.id])
    inputs = [e.artifact_id for e in store.get_events_by_execution_ids([output_event.execution_id])
              if e.type == metadata_store_pb2.Event.INPUT]
    pushed = [a for a in store.get_artifacts_by_id(inputs) if a.type == "PushedModel"]
    assert [p.custom_properties["pushed_version"].string_value for p in pushed] == \
        [report.pushed_version]
    # The summary proves the model live and shows how to query it.
    stdout = runs.results["first"].stdout
    assert "Serving validation: passed" in stdout
    assert "curl -d '" in stdout and f"/v1/models/{runs.config.model_name}:predict" in stdout
    assert '"classes"' in stdout  # the live answer to that curl command
    assert "stub.Predict(request" in stdout


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
    version = _versions(runs)[-1]
    model = tf.saved_model.load(os.path.join(runs.config.serving_model_dir, version))
    assert {"serving_default", "serving_raw", "transform_features"} <= set(model.signatures)

    records, examples = _eval_examples(runs.config)
    outputs = model.signatures["serving_default"](examples=tf.constant(records))
    predicted = [c.decode() for c in outputs["classes"].numpy()]
    labels = [_value(e, "species").decode() for e in examples]
    accuracy = sum(p == label for p, label in zip(predicted, labels)) / len(labels)
    assert len(labels) > 50 and accuracy >= 0.9, accuracy

    # The raw-feature signature (plain JSON rows over REST) agrees with the tf.Example one, gaps included (NaN for
    # a missing number, "" for a missing string): they are filled as Transform filled the training data's.
    numeric = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year")
    raw_inputs = {k: tf.constant([float("nan") if _value(e, k) is None else float(_value(e, k)) for e in examples])
                  for k in numeric}
    raw_inputs.update({k: tf.constant([_value(e, k) or b"" for e in examples]) for k in ("island", "sex")})
    raw_outputs = model.signatures["serving_raw"](**raw_inputs)
    assert any(_value(e, "sex") is None for e in examples)  # the eval split has gaps
    assert tf.reduce_max(tf.abs(raw_outputs["probabilities"] - outputs["probabilities"])) < 1e-5


def _pushes(runs):
    """The PushedModel artifacts in ML Metadata that record a push of this pipeline (a shared store holds others)."""
    store = metadata_store.MetadataStore(runs.config.metadata_connection_config())
    return [a for a in store.get_artifacts_by_type("PushedModel") if a.custom_properties["pushed"].int_value == 1
            and a.uri.startswith(runs.config.pipeline_root)]


def test_rerun_with_nothing_changed_reuses_the_cache_and_pushes_nothing(runs):
    first_version = _report(runs).pushed_version
    versions_before, pushes_before = _versions(runs), _pushes(runs)
    result = runs.run("second")
    assert result.returncode == 0, _output(result)
    report = _report(runs)
    states = {n.node_id: n.state for n in report.nodes}
    assert {n: states[n] for n in UPSTREAM} == {n: "cached" for n in UPSTREAM}
    # The baseline is not the cached model itself, so the Evaluator's inputs are those of the first run: it and
    # Pusher come from the cache, and the ServingValidator still probes the live version.
    assert states["Evaluator"] == "cached" and states["Pusher"] == "cached", states
    assert states["ServingValidator"] == "complete", states
    # Nothing new in the model base path, nor in ML Metadata.
    assert _versions(runs) == versions_before == [first_version]
    assert [p.id for p in _pushes(runs)] == [p.id for p in pushes_before] and len(pushes_before) == 1
    assert report.push_reused and report.pushed_version == first_version
    store = metadata_store.MetadataStore(runs.config.metadata_connection_config())
    validations = sorted(store.get_artifacts_by_type("tfxsp.ServingValidation"), key=lambda a: a.id)
    assert len(validations) == 2, "the second run probes again"
    assert validations[-1].custom_properties["outcome"].string_value == "passed"
    assert validations[-1].custom_properties["probed_version"].int_value == int(first_version)
    assert report.serving_validation["outcome"] == "passed"
    assert f"unchanged: version {first_version} already serves this model" in result.stdout
    assert "Serving validation: passed" in result.stdout


def test_unreachable_threshold_is_not_blessed_and_pushes_nothing(pipeline_runs):
    runs = pipeline_runs
    versions_before = _versions(runs)
    # A barely trained model cannot reach 100% accuracy.
    result = runs.run("unreachable", "--set", "min_accuracy=1.0", "--set", "train_steps=2",
                      "--set", "epochs=1")
    assert result.returncode == 3, _output(result)
    report = _report(runs)
    assert report.blessed is False and not report.pushed
    assert _versions(runs) == versions_before
    assert "not blessed, not pushed" in result.stdout
    assert "sparse_categorical_accuracy = " in result.stdout and "below the required 1" in result.stdout
    assert any("sparse_categorical_accuracy" in f for f in report.validation_failures)
