"""serving.client against the conformance server."""
import grpc
import pytest

from serving.client import GrpcClient, RestClient, RestError

pytestmark = pytest.mark.timeout(60)


def test_rest_client(conformance_server):
    client = RestClient(conformance_server.handle.rest_url)
    assert client.predict("default", instances=[2.0, 4.0]) == {"predictions": [3.0, 4.0]}
    assert client.predict("two_versions", inputs=[2.0], label="stable") == {"outputs": [3.0]}
    assert client.available_versions("two_versions") == [123, 124]
    assert client.metadata("default", version=123)["model_spec"]["version"] == "123"
    with pytest.raises(RestError) as info:
        client.predict("missing", instances=[1.0])
    assert (info.value.status, info.value.message) == (404, "Servable not found for request: Latest(missing)")


def test_grpc_client(conformance_server):
    with GrpcClient(conformance_server.handle.grpc_target) as client:
        outputs, version = client.predict("two_versions", {"x": [[2.0]]}, version=123)
        assert outputs["y"].tolist() == [[3.0]] and version == 123
        assert client.status("two_versions") == {124: "AVAILABLE", 123: "AVAILABLE"}
        with pytest.raises(grpc.RpcError) as info:
            client.predict("default", {"x": [1.0]}, label="nope")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
