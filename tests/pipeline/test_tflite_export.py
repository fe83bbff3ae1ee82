"""export_tflite (pipeline/modules/tflite_export.py), with real models and real server processes:

* on the penguins (TFX's Trainer executor on the real Transform outputs, export_tflite=true) the Trainer writes
  model.tflite, its transform graph's vocabulary tables filled from constants (tflite_tables), which answers as the
  SavedModel on the eval split; the embedded server started with --prefer_tflite_model serves it, and the
  ServingValidator passes on it and records that it probed the TF Lite model;
* a tf.Example model without tables is converted: TF Lite's interpreter answers as the SavedModel does, and the
  embedded server with --prefer_tflite_model serves model.tflite (its embedded SignatureDef) over REST and gRPC
  with the SavedModel's answers;
* a SavedModel the converter cannot convert at all is exported alone, the converter's reason logged."""
import base64
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_log_pb2
from tfx.types import artifact_utils, standard_artifacts

from components.serving_validation import ServingValidation
from components.serving_validation.executor import Executor
from pipeline.cli import summary
from pipeline.config import load_config
from pipeline.dataset import examples as eval_examples
from pipeline.metadata import trainer_inputs
from pipeline.metadata.properties import properties_of
from pipeline.modules import tflite_export
from tests.support import training as fixtures
from tests.support.serving import start, stop

# The training pipeline run of tests/support/training.py, shared with test_strategies and test_tensorboard.
pytestmark = [pytest.mark.timeout(1500), pytest.mark.xdist_group("training")]

MODEL_NAME = "penguin"
TOLERANCE = 1e-5  # the ServingValidator's default (config probe_tolerance)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = fixtures.pipeline_run(tmp_path_factory)
    [training] = fixtures.train(tmp_path_factory, ["default"], {"export_tflite": "true"}).values()
    records, labels = fixtures.eval_split(run.pipeline_root)
    return {"run": run, "training": training, "records": records, "labels": labels}


def test_without_export_tflite_no_tflite_model_is_written(exported):
    assert not os.path.exists(os.path.join(exported["run"].trainer.serving_model_dir, "model.tflite"))


def test_on_the_penguins_model_tflite_answers_as_the_saved_model(exported):
    # tf.Transform's vocabularies are lookup tables filled from files, which TF Lite cannot fill: model.tflite has
    # them filled from constants. An island no vocabulary holds goes to the out-of-vocabulary bucket in both.
    model_dir = exported["training"].serving_model_dir
    path = os.path.join(model_dir, "model.tflite")
    assert os.path.isfile(path) and os.path.isfile(os.path.join(model_dir, "saved_model.pb"))
    unseen = tf.train.Example.FromString(exported["records"][0])
    unseen.features.feature["island"].bytes_list.value[:] = [b"Atlantis"]
    records = [*exported["records"], unseen.SerializeToString()]
    expected = tf.saved_model.load(model_dir).signatures["serving_default"](examples=tf.constant(records))
    lite = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")(
        examples=np.array(records, dtype=object))
    np.testing.assert_allclose(lite["probabilities"], expected["probabilities"].numpy(), rtol=0, atol=TOLERANCE)
    assert list(lite["classes"].ravel()) == list(expected["classes"].numpy().ravel())
    assert len(records) > 100
    # Its warmup requests are to what both formats serve: a server preferring model.tflite serves serving_default
    # alone, and a warmup request to another signature would fail the version's load.
    warmup = os.path.join(model_dir, "assets.extra", "tf_serving_warmup_requests")
    logged = [prediction_log_pb2.PredictionLog.FromString(r)
              for r in tf.data.TFRecordDataset(warmup).as_numpy_iterator()]
    assert logged and {log.predict_log.request.model_spec.signature_name for log in logged} == {"serving_default"}


@pytest.fixture(scope="module")
def tflite_server(exported, tmp_path_factory):
    """--prefer_tflite_model over the penguins' export: its model.tflite is served."""
    base = tmp_path_factory.mktemp("tflite_base")
    shutil.copytree(exported["training"].serving_model_dir, base / "1")
    server = start(MODEL_NAME, str(base), "--prefer_tflite_model")
    yield server
    stop(server)


class Scores(tf.Module):
    """A tf.Example model without lookup tables, which TF Lite converts (ParseExampleV2 as a select TF op)."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable([[0.5, -1.0, 2.0]])
        self.b = tf.Variable([0.25, 0.0, -0.5])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        x = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        probabilities = tf.nn.softmax(tf.matmul(x, self.w) + self.b)
        return {"probabilities": probabilities, "class_ids": tf.argmax(probabilities, axis=1)}


def _examples(xs):
    return [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})).SerializeToString() for x in xs]


def _metadata_signatures(server):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL_NAME
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    server.predictions.GetModelMetadata(request, timeout=30).metadata["signature_def"].Unpack(signature_map)
    return dict(signature_map.signature_def)


def test_a_converted_model_is_served_from_model_tflite_over_rest_and_grpc(tmp_path):
    module = Scores()
    version_dir = tmp_path / "base" / "1"
    tf.saved_model.save(module, str(version_dir), signatures={"serving_default": module.serve.get_concrete_function()})
    path = tflite_export.export(str(version_dir))
    assert path == str(version_dir / "model.tflite") and os.path.isfile(path)
    records = _examples([-2.0, -0.5, 0.0, 0.75, 3.0])
    expected = {k: v.numpy() for k, v in module.serve(tf.constant(records)).items()}
    runner = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")
    np.testing.assert_allclose(runner(examples=np.array(records, dtype=object))["probabilities"],
                               expected["probabilities"], rtol=0, atol=TOLERANCE)

    server = start(MODEL_NAME, str(tmp_path / "base"), "--prefer_tflite_model")
    try:
        signatures = _metadata_signatures(server)
        assert set(signatures) == {"serving_default"}
        # The embedded SignatureDef names TF Lite tensors: the server runs the TF Lite model, not the SavedModel.
        assert signatures["serving_default"].inputs["examples"].name == "serving_default_examples:0"
        grpc_request = predict_pb2.PredictRequest()
        grpc_request.model_spec.name = MODEL_NAME
        grpc_request.inputs["examples"].CopyFrom(tf.make_tensor_proto(records, dtype=tf.string))
        answer = server.predictions.Predict(grpc_request, timeout=30)
        np.testing.assert_allclose(tf.make_ndarray(answer.outputs["probabilities"]), expected["probabilities"],
                                   rtol=0, atol=TOLERANCE)
        assert list(tf.make_ndarray(answer.outputs["class_ids"])) == list(expected["class_ids"])
        body = {"instances": [{"b64": base64.b64encode(r).decode()} for r in records]}
        response = server.rest.post(f"/v1/models/{MODEL_NAME}:predict", body)
        assert response.status == 200, response.body
        predictions = response.json()["predictions"]
        np.testing.assert_allclose([p["probabilities"] for p in predictions], expected["probabilities"],
                                   rtol=0, atol=TOLERANCE)
        assert [p["class_ids"] for p in predictions] == list(expected["class_ids"])
    finally:
        stop(server)


def test_the_serving_validator_records_the_format_it_probed(exported, tflite_server, tmp_path):
    model = standard_artifacts.Model()
    model.uri = exported["training"].model_dir
    examples = standard_artifacts.Examples()
    [examples.uri] = glob.glob(os.path.join(exported["run"].pipeline_root, "CsvExampleGen", "examples", "*"))
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    pushed_model = standard_artifacts.PushedModel()
    pushed_model.set_int_custom_property("pushed", 1)
    pushed_model.set_string_custom_property("pushed_version", "1")
    pushed_model.set_string_custom_property("pushed_destination", "")
    validation = ServingValidation()
    validation.uri = str(tmp_path / f"validation-{time.monotonic_ns()}")
    handle = tflite_server.handle
    Executor().Do(
        {"pushed_model": [pushed_model], "model": [model], "examples": [examples]}, {"validation": [validation]},
        {"model_name": MODEL_NAME, "rest_url": handle.rest_url, "grpc_target": handle.grpc_target,
         "signature_names": ["serving_default", "serving_raw"],
         "tflite_signature_names": [tflite_export.SERVED_SIGNATURE], "num_examples": 8,
         "load_deadline_s": 30.0, "tolerance": TOLERANCE, "latency_requests": 10,
         "max_p50_ms": 1000.0, "max_p99_ms": 5000.0, "rollback": 0})
    with open(os.path.join(validation.uri, "report.json")) as f:
        report = json.load(f)
    assert report["outcome"] == "passed", report
    # The server serves model.tflite (its primary subgraph, serving_default alone): the validator probes that
    # signature against the SavedModel's answers and says which format it probed.
    assert report["served_format"] == "tflite"
    checked = " ".join(c["check"] for c in report["checks"])
    assert "'serving_default'" in checked and "'serving_raw'" not in checked


def test_a_model_the_converter_cannot_convert_is_exported_alone(tmp_path, caplog):
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(x):
        # A Python function: no TF Lite kernel, builtin or select TF op, can run it.
        return {"y": tf.py_function(lambda v: v * 2.0, [x], tf.float32)}
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": serve.get_concrete_function()})
    with caplog.at_level("WARNING"):
        assert tflite_export.export(str(tmp_path)) is None
    # Logged, with the converter's own reason: the op it has no kernel for.
    assert "TF Lite cannot convert" in caplog.text and "EagerPyFunc" in caplog.text, caplog.text[-3000:]
    assert not os.path.exists(tmp_path / "model.tflite")
    assert os.path.isfile(tmp_path / "saved_model.pb")


def test_the_run_summary_queries_a_tflite_served_model_with_commands_that_answer(exported, tflite_server):
    # A server serving model.tflite has serving_default alone: the summary's curl and gRPC commands send it an eval
    # tf.Example (serving_raw would be "not found"), and they answer as printed.
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = exported["run"].metadata_path
    store = metadata_store.MetadataStore(connection)
    [trainer] = store.get_executions_by_type("tfx.components.trainer.component.Trainer")
    contract = trainer_inputs.contract_of(properties_of(trainer))
    [examples_dir] = glob.glob(os.path.join(exported["run"].pipeline_root, "CsvExampleGen", "examples", "*"))
    [example] = eval_examples.eval_examples(examples_dir, contract)
    handle = tflite_server.handle
    config = load_config({"rest_port": str(handle.rest_port), "grpc_port": str(handle.grpc_port),
                          "model_name": MODEL_NAME}, environ={})
    curl, python = summary.query_commands(config, contract, example, "tflite")
    assert '"signature_name": "serving_default"' in curl and '"b64"' in curl
    species = {"Adelie", "Chinstrap", "Gentoo"}
    rest = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
    assert rest.returncode == 0 and json.loads(rest.stdout)["predictions"][0]["classes"] in species, rest
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    grpc_answer = subprocess.run(["bash", "-c", python], capture_output=True, text=True, timeout=120,
                                 env=dict(os.environ, PATH=path))
    assert grpc_answer.returncode == 0, grpc_answer.stderr[-3000:]
    assert any(f"b'{name}'" in grpc_answer.stdout for name in species), grpc_answer.stdout
