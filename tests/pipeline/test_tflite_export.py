"""export_tflite (pipeline/modules/tflite_export.py), with real models and real server processes:

* on the penguins (TFX's Trainer executor on the real Transform outputs, export_tflite=true) the transform graph's
  vocabulary tables cannot be filled in TF Lite, so the Trainer exports the SavedModel alone; the embedded server
  started with --prefer_tflite_model then serves the SavedModel, and the ServingValidator passes on it and records
  that it probed the SavedModel;
* a tf.Example model without tables is converted: TF Lite's interpreter answers as the SavedModel does, and the
  embedded server with --prefer_tflite_model serves model.tflite (its embedded SignatureDef) over REST and gRPC
  with the SavedModel's answers;
* a SavedModel the converter cannot convert at all is exported alone, the converter's reason logged."""
import base64
import glob
import json
import os
import shutil
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
from tfx.types import artifact_utils, standard_artifacts

from components.serving_validation import ServingValidation
from components.serving_validation.executor import Executor
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


def test_on_the_penguins_the_saved_model_is_exported_alone_and_the_reason_is_clear(exported):
    # tf.Transform's vocabularies are lookup tables filled from files, which TF Lite cannot fill: the converter's
    # output would fail every run, so the Trainer keeps the SavedModel alone.
    model_dir = exported["training"].serving_model_dir
    assert os.path.isfile(os.path.join(model_dir, "saved_model.pb"))
    assert not os.path.exists(os.path.join(model_dir, "model.tflite"))
    with pytest.raises(ValueError, match="hashtable need to be initialized"):
        tflite_export.convert(model_dir)


@pytest.fixture(scope="module")
def tflite_server(exported, tmp_path_factory):
    """--prefer_tflite_model over the penguins' export (no model.tflite: the SavedModel is served)."""
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
    # No model.tflite beside the SavedModel: the server serves the SavedModel, and the validator probes its
    # signatures and says so.
    assert report["served_format"] == "saved_model"
    checked = " ".join(c["check"] for c in report["checks"])
    assert "'serving_default'" in checked and "'serving_raw'" in checked


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
