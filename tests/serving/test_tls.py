"""TLS, security flags that fail closed, and who may reload the config (issue 12, point 5), on real servers.

Keys and certificates are made in the test with ``cryptography``. --ssl_config_file is TF Serving's SSLConfig
(PEM contents); the embedded server uses it on the gRPC port, as the reference does, and on the REST port too.
"""
import http.client
import shutil
import socket
import subprocess
import sys

import grpc
import psutil
import pytest
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc

from serving import config as config_lib
from serving import grpc_api
from tests.support.serving import GRPC_OPTIONS, make_tls, predict_request, start, stop

pytestmark = pytest.mark.timeout(180)


def local_address() -> str | None:
    """This host's own address on a non-loopback interface (the traffic still stays on the host)."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


@pytest.fixture(scope="module")
def models(tmp_path_factory, saved_half_plus_two):
    root = tmp_path_factory.mktemp("tls")
    shutil.copytree(saved_half_plus_two[2.0], root / "default" / "1")
    return root


@pytest.fixture(scope="module")
def tls_server(models):
    tls = make_tls(models, client_verify=False)
    server = start("default", str(models / "default"), tls=tls)
    server.tls = tls
    yield server
    stop(server)


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, models):
    tls = make_tls(tmp_path_factory.mktemp("mtls"), client_verify=True)
    server = start("default", str(models / "default"), "--bind_address=0.0.0.0", tls=tls, host="127.0.0.1")
    server.tls = tls
    yield server
    stop(server)


def predict_over(channel) -> list[float]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return list(stub.Predict(predict_request(), timeout=10).outputs["y"].float_val)


def test_both_ports_serve_tls_and_refuse_plaintext(tls_server):
    assert list(tls_server.predictions.Predict(predict_request(), timeout=10).outputs["y"].float_val) == [3.0]
    assert tls_server.rest.post("/v1/models/default:predict", {"instances": [2.0]}).json() == {"predictions": [3.0]}
    log = tls_server.handle.log_tail()
    assert "Using SSL credentials" in log and "Exporting HTTPS/REST" in log
    with grpc.insecure_channel(tls_server.handle.grpc_target) as plaintext, pytest.raises(grpc.RpcError) as info:
        predict_over(plaintext)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    connection = http.client.HTTPConnection(tls_server.handle.host, tls_server.handle.rest_port, timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        connection.request("POST", "/v1/models/default:predict", body=b'{"instances": [2.0]}')
        connection.getresponse()


def test_mutual_tls_requires_a_certificate_signed_by_custom_ca(mtls_server):
    tls, handle = mtls_server.tls, mtls_server.handle
    assert predict_over(mtls_server.channel) == [3.0]
    assert mtls_server.rest.post("/v1/models/default:predict", {"instances": [2.0]}).status == 200
    for who in (None, tls.stranger):  # no certificate; one from another CA
        client = tls.as_(who)
        with grpc.secure_channel(handle.grpc_target, client.grpc_credentials(), options=GRPC_OPTIONS) as channel:
            with pytest.raises(grpc.RpcError) as info:
                predict_over(channel)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        connection = http.client.HTTPSConnection(handle.host, handle.rest_port, timeout=10, context=client.context())
        with pytest.raises((OSError, http.client.HTTPException)):
            connection.request("GET", "/v1/models/default")
            connection.getresponse()


# ------------------------------------------------------------------------------------------ model management


def reload(channel, base_path) -> model_management_pb2.ReloadConfigResponse:
    request = model_management_pb2.ReloadConfigRequest()
    request.config.CopyFrom(config_lib.single_model_config("default", str(base_path)))
    return model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=30)


@pytest.fixture(scope="module")
def open_servers(models):
    """Plaintext servers on every interface: one as by default, one with --allow_remote_model_management."""
    closed = start("default", str(models / "default"), "--bind_address=0.0.0.0")
    allowing = start("default", str(models / "default"), "--bind_address=0.0.0.0", "--allow_remote_model_management")
    yield closed, allowing
    stop(closed)
    stop(allowing)


def test_model_management_is_local_or_client_authenticated_unless_allowed(open_servers, mtls_server, models):
    address = local_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address to call from")
    closed, allowing = open_servers
    base = models / "default"
    assert reload(closed.channel, base).status.error_code == 0  # over loopback
    with grpc.insecure_channel(f"{address}:{closed.handle.grpc_port}") as remote:
        with pytest.raises(grpc.RpcError) as info:
            reload(remote, base)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "--allow_remote_model_management" in info.value.details()
        assert predict_over(remote) == [3.0]  # only model management is restricted
    with grpc.insecure_channel(f"{address}:{allowing.handle.grpc_port}") as remote:
        assert reload(remote, base).status.error_code == 0
    # Every client of a client_verify server has a verified certificate: it may manage models from anywhere.
    options = [*GRPC_OPTIONS, ("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"{address}:{mtls_server.handle.grpc_port}", mtls_server.tls.grpc_credentials(),
                             options=options) as remote:
        assert reload(remote, base).status.error_code == 0


@pytest.mark.parametrize("peer, local", [
    ("ipv4:127.0.0.1:5000", True), ("ipv4:127.8.9.10:1", True), ("ipv6:[::1]:5000", True),
    ("ipv6:[::ffff:127.0.0.1]:5000", True), ("unix:/tmp/socket", True), ("unix:", True),
    ("ipv4:192.0.2.7:5000", False), ("ipv6:[2001:db8::1]:5000", False), ("ipv6:[::ffff:192.0.2.7]:1", False),
    ("", False), ("ipv4:localhost:5000", False),
])
def test_which_peers_are_local(peer, local):
    assert grpc_api._is_local_peer(peer) is local


# ------------------------------------------------------------------------------------------ failing closed


def run_server(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("edit, message", [
    (None, "Cannot read --ssl_config_file"),
    ("bogus", "Error parsing text-format tensorflow.serving.SSLConfig"),
    ({"server_key": ""}, "server_key must be set"),
    ({"server_cert": ""}, "server_cert must be set"),
    ({"custom_ca": "", "client_verify": True}, "client_verify needs custom_ca"),
    ({"server_key": "stranger"}, "are not usable"),  # a key that is not the certificate's
    ({"custom_ca": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"}, "are not usable"),
], ids=["missing", "garbage", "no-key", "no-cert", "verify-without-ca", "wrong-key", "bad-ca"])
def test_a_tls_configuration_that_cannot_be_honoured_stops_the_server(tmp_path, models, edit, message):
    tls = make_tls(tmp_path)
    path = tmp_path / "edited.config"
    if isinstance(edit, dict):
        if edit.get("server_key") == "stranger":
            edit = {"server_key": tls.stranger.key_pem.decode()}
        tls.write_ssl_config(path, edit.pop("client_verify", False), **edit)
    elif edit is not None:
        path.write_text(edit)
    result = run_server(f"--model_base_path={models}/default", f"--ssl_config_file={path}")
    assert result.returncode == 255 and "Failed to start server. Error: " in result.stderr
    assert message in result.stderr and "--ssl_config_file" in result.stderr


def test_a_security_flag_the_server_cannot_honour_stops_it(models):
    result = run_server(f"--model_base_path={models}/default", "--use_alts_credentials")
    assert result.returncode == 255
    assert "--use_alts_credentials is not supported by the embedded server" in result.stderr
    assert "refusing to start" in result.stderr
    usage = run_server("--help").stdout  # and --help says so
    assert "--use_alts_credentials=false\tbool\tUse Google ALTS credentials  [refused by the embedded server" in usage
