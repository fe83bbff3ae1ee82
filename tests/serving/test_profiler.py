"""The profiler service on the gRPC port (``--enable_profiler``): TensorFlow's client traces the server.

``tf.profiler.experimental.client.trace`` (TensorFlow's C++ client) must get a TensorBoard profile of
the server's own TensorFlow work, SavedModel ops and TF Lite runs, while requests are served; the rest of
``ProfilerServiceImpl``'s behaviour is checked with raw calls.
"""
from __future__ import annotations

import concurrent.futures
import glob
import os
import shutil
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from serving import profiler
from tests.support.serving import predict_request, start, stop, wait_until, write_config

pytestmark = pytest.mark.timeout(300)

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tfserving", "testdata")


@pytest.fixture(scope="module")
def server(tmp_path_factory, saved_half_plus_two):
    root = tmp_path_factory.mktemp("profiler")
    shutil.copytree(saved_half_plus_two[2.0], root / "default" / "1")
    shutil.copytree(os.path.join(TESTDATA, "saved_model_half_plus_two_tflite_with_sigdef"), root / "lite")
    config = write_config(root / "models.config", [{"name": "default", "base_path": root / "default"},
                                                   {"name": "lite", "base_path": root / "lite"}])
    server = start("default", str(root / "default"), f"--model_config_file={config}", "--prefer_tflite_model",
                   "--num_tflite_pools=1")
    assert "Profiler service is enabled" in server.handle.log_tail()  # the default, as in TF Serving
    yield server
    stop(server)


def call(server, method: str, request_type=None, response_type=None):
    return server.channel.unary_unary(
        f"/{profiler.SERVICE}/{method}",
        request_serializer=request_type.SerializeToString if request_type else None,
        response_deserializer=response_type.FromString if response_type else None)


def profile(server, tmp_path, session_id: str, duration_ms: int, timeout: float = 60):
    request = profiler.ProfileRequest(duration_ms=duration_ms, repository_root=str(tmp_path / "repo"),
                                      session_id=session_id, host_name="test-host:1")
    request.opts.version = 1
    request.opts.host_tracer_level = 2
    request.opts.duration_ms = duration_ms
    return call(server, "Profile", profiler.ProfileRequest, profiler.ProfileResponse)(request, timeout=timeout)


def event_names(path: str) -> set[str]:
    with open(path, "rb") as f:
        space = xplane_pb2.XSpace.FromString(f.read())
    names = set()
    for plane in space.planes:
        metadata = {key: value.name for key, value in plane.event_metadata.items()}
        for line in plane.lines:
            names.update(metadata[event.metadata_id] for event in line.events)
    return names


def test_a_trace_captures_the_servers_tensorflow_work_while_it_serves(server, tmp_path):
    done = threading.Event()

    def traffic():
        while not done.is_set():
            assert server.predictions.Predict(predict_request(), timeout=20).outputs["y"].float_val == [3.0]
            assert server.rest.post("/v1/models/lite:predict", {"instances": [[2.0]]}).json() == {
                "predictions": [[3.0]]}

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        clients = [pool.submit(traffic) for _ in range(2)]
        try:
            tf.profiler.experimental.client.trace(f"grpc://{server.handle.grpc_target}", str(tmp_path / "logs"),
                                                  2000)
        finally:
            done.set()
        for client in clients:
            client.result()
    # Where TensorBoard's profile plugin looks: <logdir>/plugins/profile/<session>/<host>_<port>.xplane.pb
    host_file = server.handle.grpc_target.replace(":", "_") + ".xplane.pb"
    (path,) = glob.glob(str(tmp_path / "logs" / "plugins" / "profile" / "*" / host_file))
    names = event_names(path)
    assert "SessionRun" in names  # the SavedModel's session runs ...
    assert any(name.endswith(":Mul") for name in names) and any(name.endswith(":AddV2") for name in names)
    assert "TfLiteSession::Run" in names  # ... and the TF Lite interpreter's


def test_an_idle_server_gives_an_empty_trace(server, tmp_path):
    with pytest.raises(tf.errors.UnavailableError, match="No trace event was collected"):
        tf.profiler.experimental.client.trace(f"grpc://{server.handle.grpc_target}", str(tmp_path / "logs"), 300,
                                              num_tracing_attempts=1)
    (path,) = glob.glob(str(tmp_path / "logs" / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert event_names(path) == set()  # saved all the same, as the reference saves it


def test_terminate_ends_a_profile_early(server, tmp_path):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(profile, server, tmp_path, "early", 120_000)
        wait_until(lambda: "Profiling session early started" in server.handle.log_tail(), what="the profile to start")
        server.predictions.Predict(predict_request(), timeout=20)
        call(server, "Terminate", profiler.TerminateRequest, profiler.TerminateResponse)(
            profiler.TerminateRequest(session_id="early"), timeout=20)
        response = running.result(timeout=60)  # long before the 120 s it asked for
    assert not response.empty_trace
    assert "SessionRun" in event_names(str(tmp_path / "repo" / "early" / "test-host_1.xplane.pb"))


def test_one_profile_at_a_time_and_a_cancelled_one_releases_the_profiler(server, tmp_path):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(profile, server, tmp_path, "first", 120_000, 3)
        wait_until(lambda: "Profiling session first started" in server.handle.log_tail(), what="the profile to start")
        with pytest.raises(grpc.RpcError) as error:
            profile(server, tmp_path, "second", 10)
        assert error.value.code() == grpc.StatusCode.INTERNAL
        assert error.value.details() == "Another profiling session active."
        with pytest.raises(grpc.RpcError) as error:  # the client gives up on the first one
            first.result()
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: "Profile of session first cancelled" in server.handle.log_tail(), what="the cancellation")
    profile(server, tmp_path, "third", 10)  # the profiler is free again
    assert os.path.exists(tmp_path / "repo" / "third" / "test-host_1.xplane.pb")
    assert not os.path.exists(tmp_path / "repo" / "first")


def test_monitor_is_unimplemented(server):
    with pytest.raises(grpc.RpcError) as error:
        call(server, "Monitor")(b"", timeout=20)
    assert (error.value.code(), error.value.details()) == (grpc.StatusCode.UNIMPLEMENTED, "unimplemented.")


def test_enable_profiler_false_leaves_the_service_out(tmp_path, saved_half_plus_two):
    shutil.copytree(saved_half_plus_two[2.0], tmp_path / "m" / "1")
    server = start("default", str(tmp_path / "m"), "--enable_profiler=false")
    try:
        with pytest.raises(grpc.RpcError) as error:
            profile(server, tmp_path, "s", 10)
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "Profiler service is enabled" not in server.handle.log_tail()
        assert np.isclose(server.predictions.Predict(predict_request(), timeout=20).outputs["y"].float_val[0], 3.0)
    finally:
        stop(server)
