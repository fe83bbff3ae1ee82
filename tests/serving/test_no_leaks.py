"""No stack traces to clients, whatever fails inside (issue 12, point 6), on a real server.

* A SavedModel whose ``tf.py_function`` cannot run in the server: TensorFlow's status message carries the
  Python traceback of the server process (file paths, source lines); clients get the status without it.
* The server's own failure, provoked for real: its address space is capped under it so that reading a
  large body fails with MemoryError. Clients get INTERNAL with an incident id; the log has the traceback.
* aiohttp's own error pages carry no traceback even with asyncio's debug mode on.
"""
import json
import re
import shutil
import socket

import grpc
import psutil
import pytest
import tensorflow as tf

from tests.support.serving import predict_request, start, stop, write_config

pytestmark = pytest.mark.timeout(180)

TRACE = re.compile(r'Traceback|File "|line \d+, in |\.py\b|site-packages')


class PyFunction(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.float32, name="x")])
    def predict(self, x):
        return {"y": tf.py_function(lambda v: v * 2, [x], tf.float32)}  # its Python is not saved with the model


@pytest.fixture(scope="module")
def server(tmp_path_factory, saved_half_plus_two):
    root = tmp_path_factory.mktemp("leaks")
    shutil.copytree(saved_half_plus_two[2.0], root / "default" / "1")
    model = PyFunction()
    tf.saved_model.save(model, str(root / "pyfunc" / "1"), signatures={"serving_default": model.predict})
    config = write_config(root / "models.config", [{"name": "default", "base_path": root / "default"},
                                                   {"name": "pyfunc", "base_path": root / "pyfunc"}])
    server = start("default", str(root / "default"), f"--model_config_file={config}",
                   f"--rest_api_max_body_bytes={256 << 20}", env={"PYTHONASYNCIODEBUG": "1"})
    yield server
    stop(server)


def test_tensorflow_statuses_reach_clients_without_the_python_traceback_they_carry(server):
    response = server.rest.post("/v1/models/pyfunc:predict", {"instances": [1.0]})
    assert response.status == 400
    # The key's number counts the py_functions the server process has made (a warmup or reload makes more).
    assert re.search(r"Could not find callback with key=pyfunc_\d+ ", response.error), response.error
    assert "EagerPyFunc" in response.error
    assert not TRACE.search(response.error), response.error
    with pytest.raises(grpc.RpcError) as info:
        server.predictions.Predict(predict_request("pyfunc"), timeout=20)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Could not find callback" in info.value.details() and not TRACE.search(info.value.details())


def test_an_internal_failure_is_internal_with_an_incident_id_and_the_log_has_the_traceback(server):
    process = psutil.Process(server.handle.process.pid)
    limit = process.rlimit(psutil.RLIMIT_AS)
    process.rlimit(psutil.RLIMIT_AS, (process.memory_info().vms + (48 << 20), limit[1]))
    try:
        with socket.create_connection((server.handle.host, server.handle.rest_port), timeout=30) as sock:
            sock.sendall(b"POST /v1/models/default:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{"
                         % (200 << 20))
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    finally:
        process.rlimit(psutil.RLIMIT_AS, limit)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500"), answer[:300]
    error = json.loads(body)["error"]
    incident = re.fullmatch(r"Internal error ([0-9a-f]{8}); the server log has the details", error)
    assert incident, error
    log = server.handle.log_tail(200)
    assert f"Internal error {incident.group(1)} (REST POST /v1/models/default:predict)" in log
    assert "MemoryError" in log and "Traceback" in log  # the details went to the log, not the client
    assert server.rest.post("/v1/models/default:predict", {"instances": [2.0]}).json() == {"predictions": [3.0]}


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET /v1/models/default HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/models/default:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
    b"GET /v1/models/default HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n",
])
def test_malformed_http_is_answered_without_a_traceback(server, request_bytes):
    with socket.create_connection((server.handle.host, server.handle.rest_port), timeout=30) as sock:
        sock.sendall(request_bytes)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", answer), answer[:200]
    assert not TRACE.search(answer.decode("latin-1")), answer
