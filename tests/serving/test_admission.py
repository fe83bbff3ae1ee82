"""Admission control and shutdown (issue 12, point 4), on real servers.

--rest_api_num_threads / --grpc_max_threads cap the inference requests running at once; more wait in a
bounded queue, beyond it they are refused at once (REST 503 with Retry-After, gRPC RESOURCE_EXHAUSTED);
status calls are never held up. Many concurrent large bodies do not make memory grow with their number.
A client that sends its body slowly holds no slot and is cut off. SIGTERM drains requests in flight up
to --drain_timeout_seconds, then the server exits.
"""
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving import admission, launcher
from tests.support import memory
from tests.support.serving import Rest, export_spin, predict_request, start, stop

pytestmark = pytest.mark.timeout(240)

QUEUE = admission.QUEUE_PER_SLOT  # with one slot


@pytest.fixture(scope="module")
def server(tmp_path_factory, saved_half_plus_two):
    """One slot per front end: a queue of 16 (admission.QUEUE_PER_SLOT), one large slot with a queue of one."""
    root = tmp_path_factory.mktemp("admission")
    shutil.copytree(saved_half_plus_two[2.0], root / "default" / "1")
    export_spin(str(root / "slow"))
    config = root / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "default" base_path: "{root}/default" '
                      f'model_platform: "tensorflow" }} config {{ name: "slow" base_path: "{root}/slow" '
                      'model_platform: "tensorflow" } }\n')
    server = start("default", str(root / "default"), f"--model_config_file={config}", "--rest_api_num_threads=1",
                   "--grpc_max_threads=1", f"--rest_api_max_body_bytes={32 << 20}")
    yield server
    stop(server)


def spin_rest(server, seconds, extra=0):
    body = json.dumps({"instances": [seconds] + [0.0] * extra})
    return server.rest.post("/v1/models/slow:predict", body, timeout=60)


def spin_grpc(server, seconds):
    request = predict_request("slow")
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([seconds], dtype=tf.float32))
    try:
        server.predictions.Predict(request, timeout=60)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def test_rest_requests_beyond_the_slots_queue_then_are_refused_with_503(server):
    with concurrent.futures.ThreadPoolExecutor(QUEUE + 2) as pool:
        admitted = [pool.submit(spin_rest, server, 4.0)]  # holds the slot
        time.sleep(0.5)
        admitted += [pool.submit(spin_rest, server, 0.05) for _ in range(QUEUE)]  # fill the queue
        time.sleep(1.0)
        began = time.monotonic()
        refused = spin_rest(server, 0.0)
        assert time.monotonic() - began < 1.0  # refused at once, not after waiting
        assert refused.status == 503 and refused.headers["retry-after"] == "1"
        assert "The server is busy" in refused.error
        began = time.monotonic()
        assert server.rest.get("/v1/models/slow").status == 200  # status calls are never gated
        assert time.monotonic() - began < 1.0
        assert server.predictions.Predict(predict_request(), timeout=10).outputs["y"].float_val == [3.0]  # gRPC
        assert [f.result().status for f in admitted] == [200] * (QUEUE + 1)  # the queue was served in turn


def test_grpc_calls_beyond_the_slots_queue_then_get_resource_exhausted(server):
    with concurrent.futures.ThreadPoolExecutor(QUEUE + 2) as pool:
        admitted = [pool.submit(spin_grpc, server, 4.0)]
        time.sleep(0.5)
        admitted += [pool.submit(spin_grpc, server, 0.05) for _ in range(QUEUE)]
        time.sleep(1.0)
        code, details = spin_grpc(server, 0.0)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "The server is busy" in details
        assert server.rest.post("/v1/models/default:predict", {"instances": [2.0]}).status == 200  # REST's own gate
        assert [f.result()[0] for f in admitted] == [grpc.StatusCode.OK] * (QUEUE + 1)


def post_raw(host, port, body: bytes) -> int:
    """POST a body over a raw socket, reading the answer even if the server refuses before reading it all."""
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(b"POST /v1/models/slow:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        try:
            sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            status_line = sock.recv(64).split(b"\r\n")[0]
        except ConnectionResetError:
            return 0
        return int(status_line.split()[1]) if status_line else 0


def grpc_large(server, request) -> grpc.StatusCode:
    try:
        server.predictions.Predict(request, timeout=60)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_memory_stays_bounded_under_many_concurrent_large_bodies(server, protocol):
    values = np.zeros(2_500_000, np.float32)
    values[0] = 1.0  # each request spins the model for 1 s, holding its slot
    if protocol == "rest":
        body = json.dumps({"instances": values.tolist()}).encode()  # 10 MB

        def send(_):
            return post_raw(server.handle.host, server.handle.rest_port, body)
        served, expected = 200, {200, 503, 0}  # 0: closed before it answered
    else:
        request = predict_request("slow")
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(values))  # 10 MB

        def send(_):
            return grpc_large(server, request)
        served, expected = grpc.StatusCode.OK, {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}

    def send_all():
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            return list(pool.map(send, range(24)))

    statuses, grew = memory.growth_mb(send_all, pid=server.handle.process.pid, every_s=0.02)
    assert served in statuses and set(statuses) <= expected and len(set(statuses)) > 1, statuses  # some refused
    # 24 bodies of 10 MB, each decoded to arrays and answered: without the bound, well over 1 GB at once.
    print(f"{protocol}: peak RSS growth {grew:.0f} MB")
    assert grew < 400, grew
    assert server.rest.post("/v1/models/default:predict", {"instances": [2.0]}).status == 200


def test_a_client_sending_its_body_slowly_holds_no_slot_and_is_cut_off(server):
    slow = []
    for _ in range(6):  # were they holding the one slot, the requests below would wait for them to time out
        sock = socket.create_connection((server.handle.host, server.handle.rest_port), timeout=60)
        sock.sendall(b"POST /v1/models/default:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        slow.append(sock)
    try:
        began = time.monotonic()
        for _ in range(5):  # meanwhile, normal requests are served, long before the slow bodies time out
            assert server.rest.post("/v1/models/default:predict", {"instances": [2.0]}).status == 200
        assert time.monotonic() - began < 5
        for sock in slow:  # the slow bodies time out (10 s grace) with 408 and a closed connection
            sock.settimeout(30)
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
            assert b"did not arrive within" in answer
        assert 8 < time.monotonic() - began < 25
    finally:
        for sock in slow:
            sock.close()


# ------------------------------------------------------------------------------------------ shutdown


@pytest.fixture
def spin_base(tmp_path):
    export_spin(str(tmp_path / "slow"))
    return str(tmp_path / "slow")


def test_sigterm_drains_requests_in_flight_then_exits(spin_base):
    handle = launcher.start_server("slow", spin_base, kind="embedded", extra_args=["--drain_timeout_seconds=20"])
    rest = Rest(handle.host, handle.rest_port)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            in_flight = pool.submit(rest.post, "/v1/models/slow:predict", {"instances": [3.0]}, timeout=60)
            time.sleep(1.0)
            handle.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(OSError):  # no new connections once draining
                socket.create_connection((handle.host, handle.rest_port), timeout=2).close()
            response = in_flight.result()
        assert response.status == 200 and response.json() == {"predictions": [3.0]}
        assert handle.process.wait(15) == 0
        log = handle.log_tail()
        assert "draining requests in flight" in log and "Stopped" in log
    finally:
        handle.stop()


def test_the_drain_has_a_deadline(spin_base):
    handle = launcher.start_server("slow", spin_base, kind="embedded", extra_args=["--drain_timeout_seconds=1"])
    rest = Rest(handle.host, handle.rest_port)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(rest.post, "/v1/models/slow:predict", {"instances": [60.0]}, timeout=90)
            time.sleep(1.0)
            began = time.monotonic()
            handle.process.send_signal(signal.SIGTERM)
            status = handle.process.wait(30)
            assert time.monotonic() - began < 8  # 1 s of drain, not the 60 s run
            assert status == 0
            with pytest.raises(OSError):  # the request was cut off with the connection
                in_flight.result()
        assert "still executing after the drain" in handle.log_tail()
    finally:
        handle.stop()


def test_a_second_signal_exits_at_once(spin_base):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    handle = launcher.start_server("slow", spin_base, kind="embedded", extra_args=["--drain_timeout_seconds=60"],
                                   env=env)
    rest = Rest(handle.host, handle.rest_port)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(rest.post, "/v1/models/slow:predict", {"instances": [30.0]}, timeout=60)
            time.sleep(1.0)
            handle.process.send_signal(signal.SIGINT)
            time.sleep(0.5)
            assert handle.is_running()  # draining
            handle.process.send_signal(signal.SIGINT)
            assert handle.process.wait(10) == 128 + signal.SIGINT
    finally:
        handle.stop()


def test_negative_caps_are_refused_at_start(tmp_path, saved_half_plus_two):
    shutil.copytree(saved_half_plus_two[2.0], tmp_path / "m" / "1")
    result = subprocess.run([sys.executable, "-m", "serving", f"--model_base_path={tmp_path}/m",
                             "--grpc_max_threads=-1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 255 and "--grpc_max_threads must not be negative" in result.stderr
