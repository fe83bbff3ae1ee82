"""Request logging (logging_config in the model config) and model warmup, on real servers.

A server logging at rate 1.0 answers REST and gRPC predict, classify and regress requests; the TFRecord files under
the prefix are read back with TF Serving's PredictionLog proto; a second server, given those files as a version's
assets.extra/tf_serving_warmup_requests, replays them before the version becomes AVAILABLE.
"""
from __future__ import annotations

import glob
import os
import re
import shutil

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import tfrecords
from tests.support.serving import (
    classification_request,
    predict_request,
    regression_request,
    start,
    stop,
    wait_until,
    write_config,
)

LOGGING = ('logging_config {{ sampling_config {{ sampling_rate: {rate} }} '
           'log_collector_config {{ type: "tfrecord" filename_prefix: "{prefix}" }} }}')


def _records(prefix: str) -> list[prediction_log_pb2.PredictionLog]:
    files = sorted(glob.glob(prefix + "-*.tfrecord"))
    # Read with TensorFlow's own TFRecord reader: the files are what TF Serving's tools read.
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def _metric(server, name: str) -> float:
    text = server.rest.get("/monitoring/prometheus/metrics").body.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture()
def logging_server(tmp_path, saved_half_plus_two):
    shutil.copytree(saved_half_plus_two[2.0], tmp_path / "models" / "1")
    prefix = str(tmp_path / "logs" / "requests")
    config = write_config(tmp_path / "models.config", [
        {"name": "default", "base_path": tmp_path / "models", "extra": LOGGING.format(rate=1.0, prefix=prefix)}])
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config: { enable: true }\n')
    server = start("default", str(tmp_path / "models"), f"--model_config_file={config}",
                   f"--monitoring_config_file={monitoring}", "--request_log_file_bytes=600")
    yield server, prefix
    stop(server)


def test_rest_and_grpc_requests_are_logged_as_prediction_logs_and_replayed_as_warmup(
        logging_server, tmp_path, saved_half_plus_two):
    server, prefix = logging_server
    assert server.rest.post("/v1/models/default:predict", {"instances": [1.0, 2.0]}).json() == {
        "predictions": [2.5, 3.0]}
    assert server.rest.post("/v1/models/default:classify", {
        "signature_name": "classify_x_to_y", "examples": [{"x": 3.0}]}).status == 200
    assert server.rest.post("/v1/models/default:regress", {
        "signature_name": "regress_x_to_y", "examples": [{"x": 4.0}]}).status == 200
    server.predictions.Predict(predict_request(x=(6.0,)), timeout=10)
    server.predictions.Classify(classification_request(xs=(7.0,)), timeout=10)
    server.predictions.Regress(regression_request(xs=(8.0,)), timeout=10)
    # A failed request is not logged (the reference logs answered requests only).
    assert server.rest.post("/v1/models/default:predict", {"instances": ["text"]}).status == 400

    wait_until(lambda: len(_records(prefix)) == 6, what="six log records")
    records = _records(prefix)
    kinds = [r.WhichOneof("log_type") for r in records]
    assert kinds == ["predict_log", "classify_log", "regress_log"] * 2
    rest_predict, _, rest_regress, grpc_predict, grpc_classify, _ = records
    assert tf.make_ndarray(rest_predict.predict_log.request.inputs["x"]).tolist() == [1.0, 2.0]
    assert tf.make_ndarray(rest_predict.predict_log.response.outputs["y"]).tolist() == [2.5, 3.0]
    assert tf.make_ndarray(grpc_predict.predict_log.request.inputs["x"]).tolist() == [6.0]
    assert rest_regress.regress_log.request.input.example_list.examples[0].features.feature[
        "x"].float_list.value == [4.0]
    assert rest_regress.regress_log.response.result.regressions[0].value == pytest.approx(4.0)
    assert grpc_classify.classify_log.response.result.classifications[0].classes[0].score == pytest.approx(5.5)
    for record in records:
        metadata = record.log_metadata
        assert (metadata.model_spec.name, metadata.model_spec.version.value) == ("default", 1)
        assert metadata.sampling_config.sampling_rate == 1.0
        assert list(metadata.saved_model_tags) == ["serve"]
    assert rest_predict.log_metadata.model_spec.signature_name == "serving_default"
    assert grpc_classify.log_metadata.model_spec.signature_name == "classify_x_to_y"
    # 600 bytes a file: the records are spread over rotated files, each named <prefix>-<start>-<pid>-<n>.tfrecord.
    files = sorted(glob.glob(prefix + "-*.tfrecord"))
    assert len(files) >= 2
    assert all(re.fullmatch(re.escape(prefix) + r"-\d{8}T\d{6}-\d+-\d{5}\.tfrecord", f) for f in files)
    assert _metric(server, ':tensorflow:serving:request_log_count_total{model_name="default",status="OK"}') == 6

    # The same records as another version's warmup requests: replayed before it is AVAILABLE.
    version = tmp_path / "warm" / "1"
    shutil.copytree(saved_half_plus_two[2.0], version)
    (version / "assets.extra").mkdir()
    with open(version / "assets.extra" / "tf_serving_warmup_requests", "wb") as f:
        for record in records:
            f.write(tfrecords.encode(record.SerializeToString()))
    warm = start("default", str(tmp_path / "warm"))
    try:
        with open(warm.handle.log_path) as f:
            log = f.read()
        assert "Number of warmup records read: 6." in log
        assert warm.rest.post("/v1/models/default:predict", {"instances": [2.0]}).json() == {"predictions": [3.0]}
    finally:
        stop(warm)


def test_an_unwritable_log_folder_fails_no_request(tmp_path, saved_half_plus_two):
    shutil.copytree(saved_half_plus_two[2.0], tmp_path / "models" / "1")
    (tmp_path / "a_file").write_text("not a folder")
    prefix = str(tmp_path / "a_file" / "requests")  # its folder cannot be made: the parent is a file
    config = write_config(tmp_path / "models.config", [
        {"name": "default", "base_path": tmp_path / "models", "extra": LOGGING.format(rate=1.0, prefix=prefix)}])
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config: { enable: true }\n')
    server = start("default", str(tmp_path / "models"), f"--model_config_file={config}",
                   f"--monitoring_config_file={monitoring}")
    try:
        for _ in range(5):
            assert server.rest.post("/v1/models/default:predict", {"instances": [1.0]}).status == 200
            server.predictions.Predict(predict_request(), timeout=10)
        dropped = 'tfxsp_serving_request_log_dropped_total{model_name="default",reason="write_error"}'
        wait_until(lambda: _metric(server, dropped) == 10, what="ten dropped records")
        with open(server.handle.log_path) as f:
            log = f.read()
        assert log.count("cannot write") == 1, log
    finally:
        stop(server)


def test_a_collector_type_the_server_lacks_stops_its_start(tmp_path, saved_half_plus_two):
    shutil.copytree(saved_half_plus_two[2.0], tmp_path / "models" / "1")
    extra = ('logging_config { sampling_config { sampling_rate: 1.0 } '
             'log_collector_config { type: "bigquery" filename_prefix: "/tmp/x" } }')
    config = write_config(tmp_path / "models.config", [
        {"name": "default", "base_path": tmp_path / "models", "extra": extra}])
    with pytest.raises(Exception) as failure:
        start("default", str(tmp_path / "models"), f"--model_config_file={config}", ready_timeout_s=30)
    assert "Cannot find LogCollector::Factory for type: bigquery" in str(failure.value)


def test_a_warmup_file_that_is_not_tfrecords_fails_the_load(tmp_path, saved_half_plus_two):
    version = tmp_path / "models" / "1"
    shutil.copytree(saved_half_plus_two[2.0], version)
    os.makedirs(version / "assets.extra")
    (version / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"not records at all")
    with pytest.raises(Exception) as failure:
        start("default", str(tmp_path / "models"), "--max_num_load_retries=0", ready_timeout_s=30)
    assert "Please verify your warmup data is in TFRecord format" in str(failure.value)
    # Without warmup the same version loads.
    server = start("default", str(tmp_path / "models"), "--enable_model_warmup=false")
    try:
        assert server.rest.post("/v1/models/default:predict", {"instances": [2.0]}).json() == {"predictions": [3.0]}
    finally:
        stop(server)


def _unshare_works() -> bool:
    import subprocess
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True) if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


def test_a_full_disk_fails_no_request(tmp_path, saved_half_plus_two):
    """The server runs in a mount namespace of its own where the log folder is a 32 KiB tmpfs: it fills up."""
    assert _unshare_works(), "unshare -rm (util-linux) must make a mount namespace here: the test needs a small tmpfs"
    import subprocess
    import sys
    import urllib.request

    from tests.support.processes import free_port

    shutil.copytree(saved_half_plus_two[2.0], tmp_path / "models" / "1")
    logs = tmp_path / "logs"
    logs.mkdir()
    config = write_config(tmp_path / "models.config", [
        {"name": "default", "base_path": tmp_path / "models",
         "extra": LOGGING.format(rate=1.0, prefix=logs / "requests")}])
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config: { enable: true }\n')
    grpc_port, rest_port = free_port(), free_port()
    command = (f"mount -t tmpfs -o size=32k tmpfs {logs} && exec {sys.executable} -m serving --port={grpc_port} "
               f"--rest_api_port={rest_port} --model_config_file={config} --monitoring_config_file={monitoring}")
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(["unshare", "-rm", "sh", "-c", command], stdout=log_file, stderr=log_file)
    url = f"http://127.0.0.1:{rest_port}"

    def call(path, body=None):
        request = urllib.request.Request(url + path, data=body)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()

    def ready():
        try:
            return call("/v1/models/default")[0] == 200
        except OSError:
            assert process.poll() is None, log_path.read_text()
            return False

    try:
        wait_until(ready, timeout_s=60, what="the server")
        body = ('{"instances": [' + ",".join(["1.5"] * 2000) + "]}").encode()  # about 8 KB a record
        for _ in range(40):
            assert call("/v1/models/default:predict", body)[0] == 200
        metrics = lambda: call("/monitoring/prometheus/metrics")[1].decode()  # noqa: E731

        def counted(name):
            return sum(float(line.rsplit(" ", 1)[1]) for line in metrics().splitlines() if line.startswith(name))

        dropped = 'tfxsp_serving_request_log_dropped_total{model_name="default",reason="write_error"}'
        logged = ':tensorflow:serving:request_log_count_total{model_name="default",status="OK"}'
        wait_until(lambda: counted(dropped) + counted(logged) == 40, what="every record written or dropped")
        assert counted(dropped) > 0 and counted(logged) > 0
        assert log_path.read_text().count("cannot write") == 1
    finally:
        process.terminate()
        process.wait(30)
