"""TF Lite servables (``--prefer_tflite_model``): loading, signatures, every API, interpreter pools.

Models: TF Serving's own ``saved_model_half_plus_two_tflite`` (no SignatureDefs: one is generated) and
``..._tflite_with_sigdef`` (a SignatureDef naming ``tflite_input:0``, served as ``tflite_input``), and
models converted here with ``tf.lite.TFLiteConverter``: a Classify/Regress model parsing tf.Examples with
Flex ops and SignatureDefs written by ``tflite_servable.with_signature_defs``, and a plain conversion
without SignatureDefs. Servers are real ``python -m serving`` processes; the in-process tests use real
interpreters.
"""
from __future__ import annotations

import base64
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, inference_pb2, predict_pb2

from serving import half_plus_two, tflite_servable
from serving.errors import Code, ServingError
from tests.support.serving import (
    classification_request,
    example_input,
    predict_request,
    regression_request,
    start,
    statuses,
    stop,
    tflite_model,
    tflite_tensor_names,
    write_config,
    write_tflite,
)

pytestmark = pytest.mark.timeout(300)

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tfserving", "testdata")
OFFICIAL = os.path.join(TESTDATA, "saved_model_half_plus_two_tflite")
OFFICIAL_SIGDEF = os.path.join(TESTDATA, "saved_model_half_plus_two_tflite_with_sigdef")
PARSE_EXAMPLE = os.path.join(TESTDATA, "parse_example_tflite")
EXAMPLE_X2 = base64.b64decode("Cg8KDQoBeBIIEgYKBAAAAEA=")  # serialized Example{x: [2.0]}


# ------------------------------------------------------------------------------------------ models


class ExampleScores(tf.Module):
    """Parses tf.Examples {x} and scores 0.5 * x + 2: a Classify/Regress model (ParseExampleV2 as a Flex op)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def scores(self, serialized):
        x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        return {"scores": 0.5 * x + 2.0}


class Rows(tf.Module):
    """Answers, for every row of x [None, 1], how many rows the model was called with (shows batching)."""

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def rows(self, x):
        return {"y": tf.zeros_like(x) + tf.cast(tf.shape(x)[0], tf.float32)}


class Affine(tf.Module):
    """y = 0.5 * x + b for x of shape [None, 1]."""

    def __init__(self, b: float):
        super().__init__()
        self.b = b

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x):
        return {"y": 0.5 * x + self.b}


def tensor_info(name: str, dtype: tf.DType, dims: list[int]) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=name, dtype=dtype.as_datatype_enum)
    for size in dims:
        info.tensor_shape.dim.add(size=size)
    return info


def example_scores_model() -> bytes:
    """ExampleScores with SignatureDefs as TF Serving reads them: predict, classify and regress."""
    module = ExampleScores()
    content = tflite_model(module.scores.get_concrete_function(), module, select_tf_ops=True)
    (inputs,), (scores,) = tflite_tensor_names(content)
    examples = tensor_info(inputs, tf.string, [-1])
    score = tensor_info(scores, tf.float32, [-1, 1])
    signatures = {
        "serving_default": meta_graph_pb2.SignatureDef(
            inputs={"examples": examples}, outputs={"y": score}, method_name="tensorflow/serving/predict"),
        "classify_x_to_y": meta_graph_pb2.SignatureDef(
            inputs={"inputs": examples}, outputs={"scores": score}, method_name="tensorflow/serving/classify"),
        "regress_x_to_y": meta_graph_pb2.SignatureDef(
            inputs={"inputs": examples}, outputs={"outputs": score}, method_name="tensorflow/serving/regress"),
    }
    return tflite_servable.with_signature_defs(content, signatures)


def affine_model(b: float, signature_defs: bool) -> bytes:
    module = Affine(b)
    content = tflite_model(module.predict.get_concrete_function(), module)
    if not signature_defs:
        return content
    (x,), (y,) = tflite_tensor_names(content)
    return tflite_servable.with_signature_defs(content, {"serving_default": meta_graph_pb2.SignatureDef(
        inputs={"x": tensor_info(x, tf.float32, [-1, 1])}, outputs={"y": tensor_info(y, tf.float32, [-1, 1])},
        method_name="tensorflow/serving/predict")})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tflite")
    shutil.copytree(OFFICIAL, root / "tflite")
    shutil.copytree(OFFICIAL_SIGDEF, root / "tflite_sigdef")
    write_tflite(root / "examples", 1, example_scores_model())
    converted = affine_model(2.0, signature_defs=False)
    write_tflite(root / "converted", 1, converted)
    # Both formats in one version: the SavedModel adds 2, the TF Lite model 3.
    half_plus_two.save(str(root / "both" / "1"))
    write_tflite(root / "both", 1, affine_model(3.0, signature_defs=True))
    half_plus_two.save(str(root / "saved_only" / "1"))
    # Version 1 a SavedModel, version 2 only a TF Lite model.
    half_plus_two.save(str(root / "mixed" / "1"))
    write_tflite(root / "mixed", 2, affine_model(3.0, signature_defs=True))
    rows = Rows()
    write_tflite(root / "rows", 1, tflite_model(rows.rows.get_concrete_function(), rows))
    return {"root": root, "converted_names": tflite_tensor_names(converted)}


@pytest.fixture(scope="module")
def server(models):
    root = models["root"]
    config = write_config(root / "models.config", [
        {"name": name, "base_path": root / name} for name in
        ("tflite", "tflite_sigdef", "examples", "converted", "both", "saved_only", "rows")
    ] + [{"name": "mixed", "base_path": root / "mixed", "extra": "model_version_policy { all {} }"}])
    server = start("tflite", str(root / "tflite"), f"--model_config_file={config}", "--prefer_tflite_model",
                   "--num_tflite_pools=2", "--num_tflite_interpreters_per_pool=4")
    yield server
    stop(server)


def metadata(server, model: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    response = server.predictions.GetModelMetadata(request, timeout=20)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    return dict(signature_map.signature_def)


def predict(server, model: str, x: np.ndarray, alias="x", signature="",
            output_filter=()) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(x))
    request.output_filter.extend(output_filter)
    return server.predictions.Predict(request, timeout=30)


# ------------------------------------------------------------------------------------------ signatures


def test_a_model_without_signature_defs_gets_a_generated_predict_signature(server):
    assert metadata(server, "tflite") == {"serving_default": meta_graph_pb2.SignatureDef(
        inputs={"x": tensor_info("x", tf.float32, [1, 1])}, outputs={"y": tensor_info("y", tf.float32, [1, 1])},
        method_name="tensorflow/serving/predict")}


def test_embedded_signature_defs_are_served_with_tensor_names_fixed(server):
    # The model's SignatureDef names tflite_input:0 and y:0; the TF Lite tensors are tflite_input and y.
    assert metadata(server, "tflite_sigdef") == {"serving_default": meta_graph_pb2.SignatureDef(
        inputs={"x": tensor_info("tflite_input", tf.float32, [1, 1])},
        outputs={"y": tensor_info("y", tf.float32, [1, 1])}, method_name="tensorflow/serving/predict")}


def test_a_converted_model_without_signature_defs_is_keyed_by_tensor_names(server, models):
    (x,), (y,) = models["converted_names"]
    assert x == "serving_default_x:0"
    signature = metadata(server, "converted")["serving_default"]
    assert dict(signature.inputs) == {"serving_default_x": tensor_info(x, tf.float32, [1, 1])}
    assert dict(signature.outputs) == {y.split(":")[0]: tensor_info(y, tf.float32, [1, 1])}
    response = predict(server, "converted", np.array([[2.0], [4.0]], np.float32), alias="serving_default_x")
    assert tf.make_ndarray(response.outputs[y.split(":")[0]]).tolist() == [[3.0], [4.0]]


def test_rest_metadata_and_status(server):
    response = server.rest.get("/v1/models/tflite_sigdef/metadata")
    assert response.status == 200
    body = response.json()
    assert body["model_spec"] == {"name": "tflite_sigdef", "version": "123", "signature_name": ""}
    assert body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]["name"] == \
        "tflite_input"
    assert statuses(server, "tflite") == {123: ("AVAILABLE", "OK", "")}
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tflite"
    status = server.models.GetModelStatus(request, timeout=20).model_version_status
    assert [(s.version, s.state, s.status.error_code) for s in status] == [(123, 30, 0)]


# ------------------------------------------------------------------------------------------ predict


@pytest.mark.parametrize("model", ["tflite", "tflite_sigdef"])
def test_grpc_predict(server, model):
    response = server.predictions.Predict(predict_request(model), timeout=20)  # x = [2.0], shape [1]
    assert list(response.outputs["y"].float_val) == [3.0]
    assert (response.model_spec.name, response.model_spec.signature_name, response.model_spec.version.value) == \
        (model, "serving_default", 123)
    # Any shape the model's ops accept: the interpreter's input is resized for it.
    for x in (np.array([[1.0], [2.0], [3.0]], np.float32), np.full((2, 2), 4.0, np.float32), np.float32(6.0)):
        y = tf.make_ndarray(predict(server, model, x, output_filter=["y"]).outputs["y"])
        np.testing.assert_array_equal(y, 0.5 * x + 2.0)


def test_rest_predict_row_and_columnar(server):
    response = server.rest.post("/v1/models/tflite:predict", {"instances": [2.0, 3.0, 4.0]})
    assert response.status == 200 and response.json() == {"predictions": [3.0, 3.5, 4.0]}
    response = server.rest.post("/v1/models/tflite_sigdef/versions/123:predict", {"inputs": {"x": [[2.0], [5.0]]}})
    assert response.status == 200 and response.json() == {"outputs": [[3.0], [4.5]]}


def test_predict_errors_are_the_saved_model_ones(server):
    with pytest.raises(grpc.RpcError) as error:
        predict(server, "tflite", np.array([1.0], np.float32), alias="z")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Signature input alias: x(feed name: x) not found in request" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        predict(server, "tflite", np.array([1], np.int64))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expects arg[0] to be float but int64 is provided" in error.value.details()
    response = server.rest.post("/v1/models/tflite:predict", {"signature_name": "nope", "instances": [1.0]})
    assert response.status == 400 and 'Serving signature name: "nope" not found in signature def' in response.error


def test_a_large_run_is_split_across_the_pool(server):
    # --num_tflite_interpreters_per_pool=4: runs of more than ceil(500 / 4) = 125 rows are split.
    def rows_seen(rows):
        response = predict(server, "rows", np.ones((rows, 1), np.float32), alias="serving_default_x")
        return tf.make_ndarray(next(iter(response.outputs.values()))).ravel().tolist()

    assert rows_seen(1000) == [125.0] * 1000  # eight runs of 125 rows, in order
    assert rows_seen(300) == [125.0] * 250 + [50.0] * 50
    assert rows_seen(125) == [125.0] * 125  # not split
    x = np.arange(1000, dtype=np.float32).reshape(1000, 1)
    response = predict(server, "tflite_sigdef", x)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), 0.5 * x + 2.0)


def test_concurrent_runs_of_any_shape_get_their_own_results(server):
    """32 clients, 2 interpreters: every run resizes the interpreter it gets; none may see another's data."""
    def client(seed):
        rng = np.random.default_rng(seed)
        for _ in range(15):
            x = rng.normal(size=(int(rng.integers(1, 9)), 1)).astype(np.float32)
            y = tf.make_ndarray(predict(server, "tflite_sigdef", x).outputs["y"])
            np.testing.assert_allclose(y, 0.5 * x + 2.0, rtol=1e-6)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        for future in [pool.submit(client, seed) for seed in range(32)]:
            future.result()


# ------------------------------------------------------------------------------------------ classify, regress


def test_grpc_classify_regress_and_multi_inference(server):
    result = server.predictions.Classify(classification_request("examples", xs=(2.0, 4.0)), timeout=20)
    assert [[c.score for c in r.classes] for r in result.result.classifications] == [[3.0], [4.0]]
    assert (result.model_spec.signature_name, result.model_spec.version.value) == ("classify_x_to_y", 1)
    result = server.predictions.Regress(regression_request("examples", xs=(2.0, 6.0)), timeout=20)
    assert [r.value for r in result.result.regressions] == [3.0, 5.0]
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = request.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name = "examples"
        task.model_spec.signature_name = signature
    example_input(request, 2.0)
    result = server.predictions.MultiInference(request, timeout=20)
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0


def test_rest_classify_regress_and_predict_on_examples(server):
    response = server.rest.post("/v1/models/examples:classify",
                                {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert response.status == 200 and response.json() == {"results": [[["", 3.0]]]}
    response = server.rest.post("/v1/models/examples:regress",
                                {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]})
    assert response.status == 200 and response.json() == {"results": [3.0, 4.0]}
    response = server.rest.post("/v1/models/examples:predict",
                                {"instances": [{"b64": base64.b64encode(EXAMPLE_X2).decode()}]})
    assert response.status == 200 and response.json() == {"predictions": [[3.0]]}


def test_classify_needs_a_signature_that_allows_it(server):
    with pytest.raises(grpc.RpcError) as error:
        server.predictions.Classify(classification_request("tflite", signature="serving_default"), timeout=20)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "No classification inputs found in SignatureDef" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        server.predictions.Regress(regression_request("examples", signature="classify_x_to_y"), timeout=20)
    assert "No regression outputs found in SignatureDef" in error.value.details()


# ------------------------------------------------------------------------------------------ choosing the format


def test_model_tflite_is_preferred_and_saved_models_still_load(server):
    assert predict(server, "both", np.array([[2.0]], np.float32)).outputs["y"].float_val == [4.0]  # TF Lite: +3
    assert server.predictions.Predict(predict_request("saved_only"), timeout=20).outputs["y"].float_val == [3.0]
    assert statuses(server, "mixed") == {2: ("AVAILABLE", "OK", ""), 1: ("AVAILABLE", "OK", "")}
    assert predict(server, "mixed", np.array([[2.0]], np.float32)).outputs["y"].float_val == [4.0]


def test_without_the_flag_a_tflite_only_version_is_not_served(models):
    root = models["root"]
    config = write_config(root / "mixed.config", [
        {"name": "mixed", "base_path": root / "mixed", "extra": "model_version_policy { all {} }"}])
    server = start("mixed", str(root / "mixed"), f"--model_config_file={config}")
    try:
        state = statuses(server, "mixed")
        assert state[1] == ("AVAILABLE", "OK", "")
        assert state[2][:2] == ("END", "NOT_FOUND")
        assert "Could not find SavedModel .pb or .pbtxt at supplied export directory path" in state[2][2]
        assert server.predictions.Predict(predict_request("mixed"), timeout=20).outputs["y"].float_val == [3.0]
    finally:
        stop(server)


def test_a_model_with_an_op_this_runtime_lacks_fails_to_load(tmp_path):
    # TF Serving's parse_example_tflite uses its native ParseExample custom op (see tflite_servable).
    shutil.copytree(PARSE_EXAMPLE, tmp_path / "m")
    result = subprocess.run([sys.executable, "-m", "serving", f"--model_base_path={tmp_path}/m",
                             "--prefer_tflite_model", "--max_num_load_retries=0", "--port=0",
                             f"--grpc_socket_path={tmp_path}/sock"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 255
    assert "1 servable(s) did not become available" in result.stderr
    assert "Failed to allocate tensors: Encountered unresolved custom op: ParseExampleV2" in result.stderr


def test_batching_merges_tflite_runs(models, tmp_path):
    config = write_config(tmp_path / "models.config", [
        {"name": "default", "base_path": models["root"] / "tflite_sigdef"},
        {"name": "rows", "base_path": models["root"] / "rows"}])
    (tmp_path / "batching.config").write_text(
        "max_batch_size { value: 8 } batch_timeout_micros { value: 50000 } num_batch_threads { value: 1 }")
    (tmp_path / "monitoring.config").write_text("prometheus_config { enable: true }")
    server = start("default", str(models["root"] / "tflite_sigdef"), f"--model_config_file={config}",
                   "--prefer_tflite_model", "--enable_batching",
                   f"--batching_parameters_file={tmp_path}/batching.config",
                   f"--monitoring_config_file={tmp_path}/monitoring.config", "--num_tflite_pools=1")
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(predict, server, "rows", np.ones((1, 1), np.float32), "serving_default_x")
                       for _ in range(8)]
            rows_seen = [next(iter(f.result().outputs.values())).float_val[0] for f in futures]
        assert max(rows_seen) > 1 and all(1 <= rows <= 8 for rows in rows_seen)  # merged, within max_batch_size
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = {i: pool.submit(predict, server, "default", np.full((1, 1), float(i), np.float32))
                       for i in range(16)}
            results = {i: list(f.result().outputs["y"].float_val) for i, f in futures.items()}
        assert results == {i: [0.5 * i + 2] for i in range(16)}
        text = server.rest.get("/monitoring/prometheus/metrics").body.decode()
        batches = re.search(r"^:tensorflow:serving:batching_session:processed_batch_size_count\{[^}]*\} (\S+)$",
                            text, re.M)
        assert batches and float(batches.group(1)) < 24  # 24 requests, fewer model calls
    finally:
        stop(server)


# ------------------------------------------------------------------------------------------ in process


def load_official(pools=1, per_pool=1, path=OFFICIAL_SIGDEF) -> tflite_servable.TfLiteServable:
    return tflite_servable.load("m", 123, os.path.join(path, "00000123"), pools, per_pool)


def test_an_interpreter_serves_one_run_at_a_time():
    servable = load_official(pools=1)
    pool = servable._pool
    held, release = threading.Event(), threading.Event()

    def holder():
        with pool.interpreter(None, "unloaded"):
            held.set()
            release.wait()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait()
    with pytest.raises(ServingError) as error:  # the only interpreter is lent out
        servable.run(["tflite_input"], [np.ones((1, 1), np.float32)], ["y"], deadline=time.monotonic() + 0.2)
    assert error.value.code == Code.DEADLINE_EXCEEDED
    closer = threading.Thread(target=servable.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # close waits for the interpreter to come back
    release.set()
    thread.join()
    closer.join(10)
    assert not closer.is_alive()
    with pytest.raises(ServingError) as error:
        servable.run(["tflite_input"], [np.ones((1, 1), np.float32)], ["y"], None)
    assert error.value.code == Code.UNAVAILABLE


def test_signature_defs_round_trip_through_the_model_file(tmp_path):
    content = open(os.path.join(OFFICIAL, "00000123", "model.tflite"), "rb").read()
    assert tflite_servable.signature_defs_from_model(tflite_servable.parse_model(content)) == {}
    signature = meta_graph_pb2.SignatureDef(inputs={"a": tensor_info("x:0", tf.float32, [-1, 1])},
                                            outputs={"b": tensor_info("y", tf.float32, [-1, 1])},
                                            method_name="tensorflow/serving/regress")
    written = tflite_servable.with_signature_defs(content, {"k": signature})
    assert tflite_servable.signature_defs_from_model(tflite_servable.parse_model(written)) == {"k": signature}
    rewritten = tflite_servable.with_signature_defs(written, {"other": signature})  # replaces, not appends
    assert list(tflite_servable.signature_defs_from_model(tflite_servable.parse_model(rewritten))) == ["other"]
    # The written model still runs, and serves the signature with x:0 matched to the tensor x.
    servable = tflite_servable.load("m", 1, write_tflite(tmp_path, 1, rewritten), 1, 1)
    assert servable.signatures["other"].inputs["a"].name == "x"
    assert servable.run(["x"], [np.array([[4.0]], np.float32)], ["y"], None)[0].tolist() == [[4.0]]
    servable.close()


def test_a_truncated_or_foreign_file_is_refused_not_run(tmp_path):
    content = open(os.path.join(OFFICIAL, "00000123", "model.tflite"), "rb").read()
    for size in range(0, len(content), 7):  # TF Lite's own loader would crash on most of these
        write_tflite(tmp_path, 1, content[:size])
        with pytest.raises(ServingError) as error:
            tflite_servable.load("m", 1, str(tmp_path / "1"), 1, 1)
        assert error.value.code == Code.INVALID_ARGUMENT
        assert "Cannot build FlatBufferModel from buffer" in error.value.message
