"""Property-based fuzzing: thousands of invalid requests, each refused with a 4xx / non-OK status.

Every generated request is invalid by construction (an independent oracle, not the server's code,
decides what a valid tensor is), so every answer must be a refusal, never a success, never a 5xx
and never a hang; afterwards the server must be healthy. Bounded by example counts and timeouts.
"""
import json
import string
import urllib.parse
import warnings

import grpc
import numpy as np
import psutil
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

from tests.support.serving import predict_request

pytestmark = pytest.mark.timeout(240)

REST_FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
GRPC_FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
KNOWN_MODELS = {"default", "two_versions", "slow"}
SIGNATURES = {"serving_default", "regress_x_to_y", "regress_x_to_y2", "regress_x2_to_y3", "classify_x_to_y",
              "classify_x2_to_y3", "__saved_model_init_op"}
NAME = st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=1, max_size=12)
NUMBER = st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False, width=32))
JSON = st.recursive(st.none() | st.booleans() | NUMBER | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children,
                                                                                      max_size=3),
                    max_leaves=12)


def is_dense_numeric(value) -> bool:
    """The oracle: a rectangular nesting of JSON numbers (what a float input accepts)."""
    def shape(v):
        if isinstance(v, list):
            inner = [shape(item) for item in v]
            if any(s is None for s in inner) or len(set(inner)) > 1:
                return None
            return (len(v),) + (inner[0] if inner else ())
        return () if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return shape(value) is not None


VALID_BODY = json.dumps({"instances": [2.0]})

bad_rest_requests = st.one_of(
    # not JSON at all, or not an object
    st.binary(max_size=64).filter(lambda b: not b.lstrip().startswith(b"{")).map(
        lambda b: ("POST", "/v1/models/default:predict", b)),
    # a valid body cut short
    st.integers(0, len(VALID_BODY) - 1).map(lambda n: ("POST", "/v1/models/default:predict", VALID_BODY[:n].encode())),
    # neither 'instances' nor 'inputs'
    st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("instances", "inputs")), JSON, max_size=3).map(
        lambda d: ("POST", "/v1/models/default:predict", json.dumps(d).encode())),
    # instances that are not a dense list of numbers (wrong dtypes, ragged, nested objects)
    st.lists(JSON, min_size=1, max_size=5).filter(lambda v: not is_dense_numeric(v)).map(
        lambda v: ("POST", "/v1/models/default:predict", json.dumps({"instances": v}).encode())),
    st.one_of(JSON.filter(lambda v: not is_dense_numeric(v) and not isinstance(v, dict))).map(
        lambda v: ("POST", "/v1/models/default:predict", json.dumps({"inputs": v}).encode())),
    # numbers beyond double range
    st.integers(min_value=10**309, max_value=10**320).map(
        lambda n: ("POST", "/v1/models/default:predict", f'{{"instances": [{n}]}}'.encode())),
    st.tuples(st.sampled_from(["", "-"]), st.integers(1, 9), st.integers(309, 100_000)).map(
        lambda t: ("POST", "/v1/models/default:predict", f'{{"instances": [{t[0]}{t[1]}e{t[2]}]}}'.encode())),
    # wrong input names
    NAME.filter(lambda n: n != "x").map(
        lambda n: ("POST", "/v1/models/default:predict", json.dumps({"inputs": {n: [1.0]}}).encode())),
    NAME.filter(lambda n: n != "x").map(
        lambda n: ("POST", "/v1/models/default:predict", json.dumps({"instances": [{n: 1.0}]}).encode())),
    # unknown models, versions, labels, signatures
    NAME.filter(lambda n: n not in KNOWN_MODELS).map(
        lambda n: ("POST", f"/v1/models/{n}:predict", VALID_BODY.encode())),
    NAME.filter(lambda n: n not in KNOWN_MODELS).map(lambda n: ("GET", f"/v1/models/{n}", b"")),
    st.integers(0, 2**64).filter(lambda v: v != 123).map(
        lambda v: ("POST", f"/v1/models/default/versions/{v}:predict", VALID_BODY.encode())),
    NAME.map(lambda label: ("POST", f"/v1/models/default/labels/{label}:predict", VALID_BODY.encode())),
    NAME.filter(lambda s: s not in SIGNATURES).map(
        lambda s: ("POST", "/v1/models/default:predict",
                   json.dumps({"signature_name": s, "instances": [1.0]}).encode())),
    # classify/regress bodies without usable examples
    st.dictionaries(st.sampled_from(["signature_name", "examples", "context"]), JSON, max_size=3).filter(
        lambda d: not isinstance(d.get("examples"), list) or not d.get("examples")).map(
        lambda d: ("POST", "/v1/models/default:regress", json.dumps(d).encode())),
    # any path under /v1/ with another method or no valid body
    st.tuples(st.sampled_from(["POST", "PUT", "DELETE", "PATCH"]), st.text(max_size=30)).map(
        lambda t: (t[0], "/v1/" + urllib.parse.quote(t[1], safe="/:"), b"")),
)


@REST_FUZZ
@given(bad_rest_requests)
def test_rest_refuses_invalid_requests(conformance_server, request):
    method, path, body = request
    response = conformance_server.rest.request(method, path, body)
    assert 400 <= response.status < 500, (request, response)
    assert "error" in response.json() and b"Traceback" not in response.body


REQUESTS = {
    "/tensorflow.serving.PredictionService/Predict": predict_pb2.PredictRequest,
    "/tensorflow.serving.PredictionService/Classify": classification_pb2.ClassificationRequest,
    "/tensorflow.serving.PredictionService/Regress": regression_pb2.RegressionRequest,
    "/tensorflow.serving.PredictionService/MultiInference": inference_pb2.MultiInferenceRequest,
    "/tensorflow.serving.PredictionService/GetModelMetadata": get_model_metadata_pb2.GetModelMetadataRequest,
    "/tensorflow.serving.ModelService/GetModelStatus": get_model_status_pb2.GetModelStatusRequest,
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest": model_management_pb2.ReloadConfigRequest,
}


def names_a_known_model(method: str, data: bytes) -> bool:
    try:
        with warnings.catch_warnings():  # protobuf warns about some undecodable inputs
            warnings.simplefilter("ignore")
            message = REQUESTS[method].FromString(data)
    except Exception:
        return False
    if method.endswith("HandleReloadConfigRequest"):
        return True  # any decodable config could be a legal reload: never send one here
    text = str(message)
    return any(f'"{name}"' in text for name in KNOWN_MODELS)


FULL_PREDICT = predict_request().SerializeToString()

bad_grpc_requests = st.one_of(
    st.tuples(st.sampled_from(sorted(REQUESTS)), st.binary(max_size=80)).filter(
        lambda t: not names_a_known_model(*t)),
    st.integers(0, len(FULL_PREDICT) - 1).map(
        lambda n: ("/tensorflow.serving.PredictionService/Predict", FULL_PREDICT[:n])),
)


@GRPC_FUZZ
@given(bad_grpc_requests)
def test_grpc_refuses_undecodable_and_truncated_messages(conformance_server, request):
    method, data = request
    with pytest.raises(grpc.RpcError) as info:
        conformance_server.raw_grpc(method)(data, timeout=20)
    assert info.value.code() not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert "Traceback" not in (info.value.details() or "")


DTYPES = [tf.int32, tf.int64, tf.string, tf.bool, tf.float64, tf.float16, tf.uint8]


@st.composite
def bad_predict_requests(draw):
    request = predict_request(draw(st.sampled_from(["default", "two_versions"])))
    kind = draw(st.sampled_from(["dtype", "name", "values", "filter"]))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    count = int(np.prod(shape)) if shape else 1
    if kind == "dtype":
        dtype = draw(st.sampled_from(DTYPES))
        values = np.zeros(count, dtype=dtype.as_numpy_dtype if dtype != tf.string else object)
        if dtype == tf.string:
            values[:] = b"a"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(values.reshape(shape), dtype=dtype))
    elif kind == "name":
        request.inputs[draw(NAME.filter(lambda n: n != "x"))].CopyFrom(request.inputs.pop("x"))
    elif kind == "values":  # more values than the declared shape holds
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones(count + draw(st.integers(1, 4)), np.float32)))
        del request.inputs["x"].tensor_shape.dim[:]
        for size in shape:
            request.inputs["x"].tensor_shape.dim.add(size=size)
        request.inputs["x"].ClearField("tensor_content")
        request.inputs["x"].float_val.extend([1.0] * (count + 1))
    else:
        request.output_filter.append(draw(NAME.filter(lambda n: n != "y")))
    return request


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(bad_predict_requests())
def test_grpc_refuses_wrong_dtypes_names_and_shapes(conformance_server, request):
    with pytest.raises(grpc.RpcError) as info:
        conformance_server.predictions.Predict(request, timeout=20)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()


# ------------------------------------------------------------------------- depth, rank and declared shapes


def _nest(depth: int, kinds: list[str], leaf: str) -> str:
    # kinds[i % len(kinds)] says whether level i is an array or an object member
    text = leaf
    for level in range(depth):
        text = f"[{text}]" if kinds[level % len(kinds)] == "a" else f'{{"x": {text}}}'
    return text


deep_json_bodies = st.builds(
    lambda depth, kinds, leaf, place: {
        "instances": '{"instances": [%s]}',
        "inputs": '{"inputs": %s}',
        "named": '{"instances": [{"x": %s}]}',
        "named_inputs": '{"inputs": {"x": %s}}',
        "signature": '{"signature_name": %s, "instances": [1.0]}',
        "examples": '{"examples": [{"x": %s}]}',
        "context": '{"context": {"x": %s}, "examples": [{"x": 1.0}]}',
    }[place] % _nest(depth, kinds, leaf),
    st.one_of(st.integers(33, 1200), st.integers(1200, 20_000)),  # beyond numpy's 32 dimensions
    st.lists(st.sampled_from("ao"), min_size=1, max_size=3),
    st.sampled_from(["1.0", "true", '"s"', "null", '{"b64": "AA=="}', "[]", "{}"]),
    st.sampled_from(["instances", "inputs", "named", "named_inputs", "signature", "examples", "context"]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(deep_json_bodies, st.sampled_from(["predict", "regress", "classify"]))
def test_rest_refuses_deeply_nested_and_high_rank_json_with_a_400(conformance_server, body, verb):
    response = conformance_server.rest.post(f"/v1/models/default:{verb}", body)
    assert response.status == 400, (body[:120], response.status, response.body[:300])
    assert response.error


@st.composite
def shape_declared_tensors(draw):
    """A TensorProto whose shape asks for far more values than it carries (at most three), or a shape no tensor
    can have: refused as INVALID_ARGUMENT before anything of the declared size is allocated."""
    request = predict_request(draw(st.sampled_from(["default", "two_versions"])))
    proto = request.inputs["x"]
    proto.Clear()
    dtype = draw(st.sampled_from([tf.float32, tf.string, tf.int64, tf.float64, tf.bool, tf.complex64]))
    proto.dtype = dtype.as_datatype_enum
    kind = draw(st.sampled_from(["huge", "rank", "overflow"]))
    if kind == "rank":
        dims = [1] * draw(st.integers(33, 300))
    elif kind == "overflow":
        dims = draw(st.lists(st.integers(2**20, 2**62), min_size=4, max_size=6))
    else:  # 2^21 to 2^62 elements in all: more than the 1 MiB a request may leave implicit, even for bools
        total = draw(st.integers(21, 62))
        dims = [2 ** part for part in np.diff(sorted({0, total, *draw(st.lists(st.integers(0, total), max_size=3))}))]
    for size in dims:
        proto.tensor_shape.dim.add(size=int(size))
    count = draw(st.integers(0, 3))
    if dtype == tf.string:
        proto.string_val.extend([draw(st.binary(max_size=8)) for _ in range(count)])
    elif dtype == tf.complex64:
        proto.scomplex_val.extend([1.0, 2.0] * count)
    else:
        field = {tf.float32: "float_val", tf.int64: "int64_val", tf.float64: "double_val", tf.bool: "bool_val"}[dtype]
        getattr(proto, field).extend([1] * count)
    return request


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(shape_declared_tensors())
def test_grpc_refuses_shape_declared_tensors_without_allocating(conformance_server, request):
    with pytest.raises(grpc.RpcError) as info:
        conformance_server.predictions.Predict(request, timeout=20)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert info.value.details().startswith("tensor parsing error: x")


def test_server_is_healthy_after_the_fuzzing(conformance_server):
    status = conformance_server.rest.get("/v1/models/default").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert conformance_server.predictions.Predict(predict_request(), timeout=20).outputs["y"].float_val == [3.0]
    assert conformance_server.rest.post("/v1/models/default:predict", {"instances": [2.0]}).json() == {
        "predictions": [3.0]}
    assert conformance_server.handle.is_running()
    # Thousands of requests declaring gigabytes later, the server holds no more than a model server should.
    assert psutil.Process(conformance_server.handle.process.pid).memory_info().rss < 2 << 30
