"""No allocation a request has not paid for (issue 12, point 2), on a real server.

A TensorProto declaring a huge shape with one value (or none) is refused as INVALID_ARGUMENT before
anything of that size exists; the tensors of one request may hold at most --max_request_elements
elements (RESOURCE_EXHAUSTED, REST 413); deeply nested or high-rank JSON is a 400, never a 500.
"""
import json
import shutil

import grpc
import numpy as np
import psutil
import pytest
import tensorflow as tf

from tests.support.serving import predict_request, start, stop

pytestmark = pytest.mark.timeout(180)

MAX_ELEMENTS = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory, saved_half_plus_two):
    root = tmp_path_factory.mktemp("limits")
    shutil.copytree(saved_half_plus_two[2.0], root / "default" / "1")
    server = start("default", str(root / "default"), f"--max_request_elements={MAX_ELEMENTS}")
    yield server
    stop(server)


def rss(server) -> int:
    return psutil.Process(server.handle.process.pid).memory_info().rss


def predict_error(server, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        server.predictions.Predict(request, timeout=30)
    return info.value


def declared(proto, *dims):
    del proto.tensor_shape.dim[:]
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    return proto


@pytest.mark.parametrize("make", [
    lambda: tf.make_tensor_proto(1.0, shape=[60_000_000]),  # one float for 60M
    lambda: tf.make_tensor_proto("a", shape=[60_000_000]),  # one string for 60M
    lambda: declared(tf.make_tensor_proto([], dtype=tf.float32), 8_000, 8_000),  # no value at all
    lambda: declared(tf.make_tensor_proto(2.0, shape=[10]), 10, 3_000_000),  # one float_val for 30M
], ids=["float", "string", "empty", "ten"])
def test_a_huge_declared_shape_is_refused_before_allocating(server, make):
    before = rss(server)
    request = predict_request()
    request.inputs["x"].CopyFrom(make())
    error = predict_error(server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("tensor parsing error: x: its shape [") and "implicit" in error.details()
    assert rss(server) - before < 64 << 20  # a float32 of the declared shape alone would be 240 MB
    assert server.predictions.Predict(predict_request(), timeout=30).outputs["y"].float_val == [3.0]


@pytest.mark.parametrize("dims", [[2**40, 2**40], [1] * 33, [-1]], ids=["over-int64", "rank-33", "negative"])
def test_impossible_shapes_are_tensor_parsing_errors(server, dims):
    request = predict_request()
    declared(request.inputs["x"], *dims)
    error = predict_error(server, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x")


def test_short_value_lists_within_the_allowance_still_repeat_the_last_value(server):
    request = predict_request()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(2.0, shape=[1000]))  # what make_tensor_proto sends
    assert list(server.predictions.Predict(request, timeout=30).outputs["y"].float_val) == [3.0] * 1000


def test_the_element_cap(server):
    request = predict_request()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones(MAX_ELEMENTS, np.float32)))
    assert len(server.predictions.Predict(request, timeout=30).outputs["y"].float_val) == MAX_ELEMENTS
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones(MAX_ELEMENTS + 1, np.float32)))
    error = predict_error(server, request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == (f"The request's tensors hold {MAX_ELEMENTS + 1} elements, more than the limit of "
                               f"{MAX_ELEMENTS} (--max_request_elements)")
    response = server.rest.post("/v1/models/default:predict", {"instances": [1.0] * (MAX_ELEMENTS + 1)})
    assert response.status == 413 and "--max_request_elements" in response.error
    assert server.rest.post("/v1/models/default:predict", {"instances": [1.0] * MAX_ELEMENTS}).status == 200


def nested(depth, leaf="1.0"):
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("depth", [33, 34, 100, 500, 900, 1000, 1024, 1100, 5000, 100_000])
@pytest.mark.parametrize("place", ["instances", "inputs", "named_instance", "named_input", "regress"])
def test_deeply_nested_json_is_a_400(server, depth, place):
    inner = nested(depth - 1)
    body, verb = {
        "instances": ('{"instances": [@]}'.replace("@", inner), "predict"),  # the batch adds a level
        "inputs": ('{"inputs": @}'.replace("@", nested(depth)), "predict"),
        "named_instance": ('{"instances": [{"x": @}]}'.replace("@", inner), "predict"),
        "named_input": ('{"inputs": {"x": @}}'.replace("@", nested(depth)), "predict"),
        "regress": ('{"examples": [{"x": @}]}'.replace("@", nested(depth)), "regress"),
    }[place]
    response = server.rest.post(f"/v1/models/default:{verb}", body)
    assert response.status == 400, (response.status, response.body[:200])
    assert response.error


def test_the_deepest_tensor_numpy_can_hold_is_served(server):
    response = server.rest.post("/v1/models/default:predict", '{"instances": [' + nested(31) + "]}")
    assert response.status == 200 and json.dumps(response.json()["predictions"]) == "[" + nested(31, "2.5") + "]"
    response = server.rest.post("/v1/models/default:predict", '{"inputs": ' + nested(32) + "}")
    assert response.status == 200
