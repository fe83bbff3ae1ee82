"""export_tflite: the Trainer (TFX's Trainer executor, on the penguins' real Transform outputs) writes model.tflite
beside the SavedModel; TF Lite's interpreter answers the eval rows as the SavedModel does; the embedded server
started with --prefer_tflite_model serves it over REST and gRPC, and the ServingValidator's checks pass on it and
record that they probed TF Lite. A SavedModel the converter cannot convert is exported alone."""
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

pytestmark = pytest.mark.timeout(1500)

MODEL_NAME = "penguin"
TOLERANCE = 1e-5  # the ServingValidator's default (config probe_tolerance)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = fixtures.pipeline_run(tmp_path_factory)
    [training] = fixtures.train(tmp_path_factory, ["default"], {"export_tflite": "true"}).values()
    records, labels = fixtures.eval_split(run.pipeline_root)
    return {"run": run, "training": training, "records": records, "labels": labels}


def _saved_model_answers(serving_model_dir, records):
    outputs = tf.saved_model.load(serving_model_dir).signatures["serving_default"](examples=tf.constant(records))
    return {k: v.numpy() for k, v in outputs.items()}


def test_without_export_tflite_no_tflite_model_is_written(exported):
    assert not os.path.exists(os.path.join(exported["run"].trainer.serving_model_dir, "model.tflite"))


def test_the_tflite_model_answers_eval_rows_as_the_saved_model(exported):
    model_dir = exported["training"].serving_model_dir
    path = os.path.join(model_dir, "model.tflite")
    assert os.path.isfile(path) and os.path.isfile(os.path.join(model_dir, "saved_model.pb"))
    records = exported["records"]
    expected = _saved_model_answers(model_dir, records)
    interpreter = tf.lite.Interpreter(model_path=path)
    assert set(interpreter.get_signature_list()) == {"serving_default", "serving_raw"}
    got = interpreter.get_signature_runner("serving_default")(examples=np.array(records, dtype=object))
    assert len(records) > 50
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"], rtol=0, atol=TOLERANCE)
    assert list(got["classes"]) == list(expected["classes"])
    accuracy = np.mean([c.decode() == label for c, label in zip(got["classes"], exported["labels"])])
    assert accuracy >= 0.9, accuracy


@pytest.fixture(scope="module")
def tflite_server(exported, tmp_path_factory):
    base = tmp_path_factory.mktemp("tflite_base")
    shutil.copytree(exported["training"].serving_model_dir, base / "1")
    server = start(MODEL_NAME, str(base), "--prefer_tflite_model")
    yield server
    stop(server)


def test_the_server_serves_the_tflite_model_over_rest_and_grpc(exported, tflite_server):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL_NAME
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    tflite_server.predictions.GetModelMetadata(request, timeout=30).metadata["signature_def"].Unpack(signature_map)
    # The SavedModel has serving_raw and transform_features too: only the TF Lite model serves serving_default alone.
    assert set(signature_map.signature_def) == {"serving_default"}
    assert set(signature_map.signature_def["serving_default"].outputs) == {"probabilities", "class_ids", "classes"}

    records = exported["records"][:16]
    expected = _saved_model_answers(exported["training"].serving_model_dir, records)

    grpc_request = predict_pb2.PredictRequest()
    grpc_request.model_spec.name = MODEL_NAME
    grpc_request.model_spec.signature_name = "serving_default"
    grpc_request.inputs["examples"].CopyFrom(tf.make_tensor_proto(records, dtype=tf.string))
    answer = tflite_server.predictions.Predict(grpc_request, timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs["probabilities"]), expected["probabilities"],
                               rtol=0, atol=TOLERANCE)
    assert list(tf.make_ndarray(answer.outputs["classes"])) == list(expected["classes"])

    body = {"signature_name": "serving_default",
            "instances": [{"b64": base64.b64encode(r).decode()} for r in records]}
    response = tflite_server.rest.post(f"/v1/models/{MODEL_NAME}:predict", body)
    assert response.status == 200, response.body
    predictions = response.json()["predictions"]
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected["probabilities"],
                               rtol=0, atol=TOLERANCE)
    assert [p["classes"] for p in predictions] == [c.decode() for c in expected["classes"]]


def test_the_serving_validator_probes_the_tflite_model(exported, tflite_server, tmp_path):
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
