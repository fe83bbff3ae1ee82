"""The command line (spec §1.1, §1.2): flags, fast start-up failures, waiting for a first version."""
import os
import shutil
import socket
import subprocess
import sys

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import cli, launcher
from tests.support.serving import predict_request, start, stop, wait_until, write_config

pytestmark = pytest.mark.timeout(120)


def run_server(*args, timeout=60) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "serving", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


# ------------------------------------------------------------------------------------- flags


def test_flag_forms():
    values, unknown = cli.parse_flags(["--port=9000", "--enable_batching", "--rest_api_enable_cors_support=false",
                                       "--model_name=m", "--bogus=1", "positional", "--port=9001"])
    assert (values["port"], values["enable_batching"], values["rest_api_enable_cors_support"]) == (9001, True, False)
    assert values["model_name"] == "m" and values["rest_api_port"] == 0 and values["file_system_poll_wait_seconds"] == 1
    assert unknown == ["--bogus=1", "positional"]


@pytest.mark.parametrize("args, message", [
    (["--port=abc"], "Illegal value for flag --port"),
    (["--port"], "Flag --port needs a value"),
    (["--enable_batching=maybe"], "Illegal value for flag --enable_batching"),
])
def test_malformed_flag_values(args, message):
    with pytest.raises(cli.UsageError, match=message):
        cli.parse_flags(args)


def test_version_help_and_unknown_arguments():
    version = run_server("--version")
    assert version.returncode == 0 and version.stdout.startswith("TensorFlow ModelServer: ")
    assert "TensorFlow Library: 2.16" in version.stdout
    usage = run_server("--help")
    assert usage.returncode == 255 and "--model_base_path" in usage.stdout and "--bind_address" in usage.stdout
    bad = run_server("--port=abc")
    assert bad.returncode == 255 and "Illegal value for flag --port" in bad.stderr


# ------------------------------------------------------------------------------------- start-up failures


@pytest.fixture
def config_dir(tmp_path, saved_half_plus_two):
    shutil.copytree(saved_half_plus_two[2.0], tmp_path / "m" / "1")
    return tmp_path


def test_missing_base_path_fails_fast(tmp_path):
    result = run_server(f"--model_base_path={tmp_path}/nope", "--port=0", "--grpc_socket_path=/tmp/x", "--bogus")
    assert result.returncode == 255
    assert "unknown argument: --bogus" in result.stderr
    assert f"Failed to start server. Error: NOT_FOUND: Could not find base path {tmp_path}/nope" in result.stderr


def test_bad_model_config(tmp_path):  # testBadModelConfig
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list { config { name: 'x' base_path: '/x' model_platform: 'tensorflow' } bogus }")
    result = run_server(f"--model_config_file={bad}")
    assert result.returncode == 255
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in result.stderr


@pytest.mark.parametrize("make_args, message", [
    (lambda d: [f"--model_base_path={d}/m", f"--batching_parameters_file={d}/b.txt"],
     "server_options.batching_parameters_file is set without setting server_options.enable_batching to true."),
    (lambda d: [], "Both server_options.model_base_path and server_options.model_config_file are empty!"),
    (lambda d: [f"--model_base_path={d}/m", "--port=0"],
     "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."),
    (lambda d: [f"--model_base_path={d}/m", "--enable_batching", f"--batching_parameters_file={d}/b.txt"],
     "Error parsing text-format tensorflow.serving.BatchingParameters"),
    (lambda d: [f"--model_base_path={d}/m", f"--monitoring_config_file={d}/missing"],
     "Cannot read --monitoring_config_file"),
    (lambda d: [f"--model_config_file={write_config(d / 'dup.config', [{'name': 'a', 'base_path': d / 'm'}] * 2)}"],
     "Illegal to list model a multiple times in config list"),
])
def test_invalid_configurations_fail_at_start(config_dir, make_args, message):
    (config_dir / "b.txt").write_text("max_batch_size: 3")
    result = run_server(*make_args(config_dir))
    assert result.returncode == 255 and message in result.stderr, result.stderr


def test_port_in_use_fails_at_start(config_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_server(f"--model_base_path={config_dir}/m", f"--port={port}")
        assert result.returncode == 255
        assert f"Cannot listen on 127.0.0.1:{port}: it is already in use" in result.stderr
        result = run_server(f"--model_base_path={config_dir}/m", f"--port={launcher.free_port()}",
                            f"--rest_api_port={port}")
        assert result.returncode == 255 and "already in use" in result.stderr


def test_only_version_failing_to_load_fails_start_up(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"not a model")
    result = run_server(f"--model_base_path={tmp_path}/m", f"--port={launcher.free_port()}", "--max_num_load_retries=0")
    assert result.returncode == 255
    assert "1 servable(s) did not become available: {{name: default version: 1} due to error:" in result.stderr


def test_unknown_saved_model_tags_fail_start_up(config_dir):
    result = run_server(f"--model_base_path={config_dir}/m", f"--port={launcher.free_port()}",
                        "--saved_model_tags=gpu", "--max_num_load_retries=0")
    assert result.returncode == 255
    assert "Could not find meta graph def matching supplied tags: { gpu }" in result.stderr


def test_labels_need_available_versions_at_start_up(config_dir):  # spec §5.7
    config = write_config(config_dir / "labels.config", [
        {"name": "m", "base_path": config_dir / "m", "extra": 'version_labels { key: "stable" value: 1 }'}])
    result = run_server(f"--model_config_file={config}", f"--port={launcher.free_port()}")
    assert result.returncode == 255
    assert "Request to assign label to version 1 of model m, which is not currently available for inference" \
        in result.stderr


# ------------------------------------------------------------------------------------- waiting for a version


def test_an_empty_base_path_is_waited_for_and_grpc_also_listens_on_a_unix_socket(tmp_path, saved_half_plus_two):
    socket_path = tmp_path / "tf-serving.sock"
    server = start("default", str(tmp_path / "models"), f"--grpc_socket_path={socket_path}", wait_for_model=False)
    try:
        wait_until(lambda: "No versions of servable default found under base path" in server.handle.log_tail(),
                   what="the server to report it is waiting")
        # No port is open before the first version is loaded (spec §1.2).
        assert not launcher.rest_is_answering(server.handle.host, server.handle.rest_port)
        assert server.handle.is_running()
        shutil.copytree(saved_half_plus_two[2.0], tmp_path / "models" / ".incoming")
        os.rename(tmp_path / "models" / ".incoming", tmp_path / "models" / "7")
        server.handle.wait_ready(60)
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:  # testPredictUDS
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict_request(), timeout=20)
        assert response.outputs["y"].float_val == [3.0] and response.model_spec.version.value == 7
    finally:
        stop(server)


def test_a_port_taken_while_loading_fails_the_start(tmp_path, saved_half_plus_two):
    """The real bind happens after the first load (spec §1.2); a port taken meanwhile is an error."""
    handle = launcher.start_server("default", str(tmp_path / "models"), kind="embedded", poll_wait_s=0.2,
                                   wait_for_model=False)
    try:
        wait_until(lambda: "No versions of servable default" in handle.log_tail(), what="the server to wait")
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", handle.grpc_port))
            squatter.listen()
            shutil.copytree(saved_half_plus_two[2.0], tmp_path / "models" / ".incoming")
            os.rename(tmp_path / "models" / ".incoming", tmp_path / "models" / "1")
            assert handle.process.wait(60) == 255
        assert f"Could not open the gRPC port 127.0.0.1:{handle.grpc_port}" in handle.log_tail()
    finally:
        handle.stop()
