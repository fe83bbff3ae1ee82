"""Flags that change API behaviour: CORS, tensor_content outputs, method-name check, channel args."""
import shutil

import grpc
import pytest
import tensorflow as tf

from tests.support.serving import classification_request, predict_request, start, stop

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def flagged_server(tmp_path_factory, saved_half_plus_two):
    root = tmp_path_factory.mktemp("flags")
    shutil.copytree(saved_half_plus_two[2.0], root / "default" / "123")
    server = start("default", str(root / "default"), "--rest_api_enable_cors_support",
                   "--enable_serialization_as_tensor_content", "--enable_signature_method_name_check",
                   # testGoodGrpcChannelArgs
                   "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb")
    yield server
    stop(server)


CORS = {"access-control-allow-origin": "*", "access-control-allow-methods": "POST, GET",
        "access-control-allow-headers": "Content-Type"}


def test_cors_headers_on_every_api_response(flagged_server):
    for response in (flagged_server.rest.post("/v1/models/default:predict", {"instances": [2.0]}),
                     flagged_server.rest.get("/v1/models/missing"),
                     flagged_server.rest.request("OPTIONS", "/v1/models/default",
                                                 headers={"Origin": "https://example.com"})):
        assert CORS.items() <= response.headers.items()


def test_predict_outputs_as_tensor_content(flagged_server):
    y = flagged_server.predictions.Predict(predict_request(), timeout=20).outputs["y"]
    assert y.tensor_content and not y.float_val
    assert tf.make_ndarray(y).tolist() == [3.0]


def test_signature_method_name_check(flagged_server):
    # The TF2 model's signatures all say tensorflow/serving/predict (spec §4.1).
    with pytest.raises(grpc.RpcError) as info:
        flagged_server.predictions.Classify(classification_request(), timeout=20)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == ("Expected classification signature method_name to be "
                                    "tensorflow/serving/classify. Was: tensorflow/serving/predict")
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    response = flagged_server.rest.post("/v1/models/default:regress", body)
    assert response.status == 400 and response.json()["error"] == (
        "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/predict")
    assert flagged_server.rest.post("/v1/models/default:predict", {"instances": [2.0]}).json() == {
        "predictions": [3.0]}
