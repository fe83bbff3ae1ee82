"""No head-of-line blocking (issue 12, point 3): a 64 MB body in flight does not stop other requests.

A separate process sends the large request (so this process's own GIL does not get in the way) while
this one keeps asking for the model status and sending small predictions. Before the fix, decoding a
64 MB REST body held the event loop for seconds, and status calls waited for all of it. Only a generous
bound is asserted (the machine is shared); benchmarks/serving_bench.py measures the figures.
"""
import shutil
import statistics
import subprocess
import sys
import threading
import time

import pytest

from tests.support.serving import predict_request, start, stop

pytestmark = pytest.mark.timeout(300)

SENDER = r"""
import http.client, sys, time
import grpc, numpy as np, orjson
from tensorflow_serving.apis import predict_pb2

kind, host, rest_port, grpc_target, rows = sys.argv[1:6]
x = np.random.default_rng(0).random((int(rows), 10)).astype(np.float32)
if kind == "rest":
    payload = orjson.dumps({"instances": x.tolist()})
else:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    tensor = request.inputs["x"]
    tensor.dtype = 1
    for size in x.shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.float_val.extend(x.ravel().tolist())  # typed values, as tf.make_tensor_proto would not
    payload = request.SerializeToString()
print(len(payload), flush=True)
sys.stdin.readline()
if kind == "rest":
    connection = http.client.HTTPConnection(host, int(rest_port), timeout=240)
    connection.request("POST", "/v1/models/default:predict", payload)
    response = connection.getresponse()
    body = response.read()
    ok = response.status == 200 and body.startswith(b'{"predictions":[[2.') and len(body) > 30 << 20
else:
    options = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
    channel = grpc.insecure_channel(grpc_target, options=options)
    predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    body = predict(payload, timeout=240)
    ok = len(body) > len(payload) // 2
print("ok" if ok else "failed", flush=True)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, saved_half_plus_two):
    root = tmp_path_factory.mktemp("hol")
    shutil.copytree(saved_half_plus_two[2.0], root / "default" / "1")
    server = start("default", str(root / "default"), f"--rest_api_max_body_bytes={80 << 20}")
    yield server
    stop(server)


@pytest.mark.parametrize("kind, rows", [("rest", 330_000), ("grpc", 1_600_000)])  # each about 64 MB
def test_status_and_small_predictions_answer_while_a_64_mb_request_is_in_flight(server, kind, rows):
    handle = server.handle
    sender = subprocess.Popen([sys.executable, "-c", SENDER, kind, handle.host, str(handle.rest_port),
                               handle.grpc_target, str(rows)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        size = int(sender.stdout.readline())
        assert size > 60 << 20
        latencies, predictions = [], []
        done = threading.Event()

        def small_requests():
            while not done.is_set():
                start_s = time.perf_counter()
                assert server.rest.get("/v1/models/default").status == 200
                latencies.append(time.perf_counter() - start_s)
                predictions.append(server.predictions.Predict(predict_request(), timeout=30).outputs["y"].float_val)
                time.sleep(0.01)

        poller = threading.Thread(target=small_requests)
        poller.start()
        time.sleep(0.5)
        sender.stdin.write("go\n")
        sender.stdin.flush()
        started = len(latencies)
        result = sender.stdout.readline().strip()
        done.set()
        poller.join()
        assert result == "ok"
        during = latencies[started:]
        # Blocked, the loop answered a status call after 0.8-4 s; now within tens of milliseconds. The bounds
        # leave room for a loaded machine.
        assert len(during) >= 10, during
        assert statistics.median(during) < 0.1, during
        assert max(during) < 0.75, during
        assert all(list(p) == [3.0] for p in predictions)
    finally:
        sender.kill()
        sender.wait()
