"""`tfxsp monitor` on the shared pipeline run (the pushed penguin model and its ML Metadata store): a real server logs
REST and gRPC requests at rate 1.0; the eval split's rows show no skew; the same rows with body_mass_g + 2000 and
island always Torgersen flag exactly those two features; bad input gets exit 2 and a clear message."""
from __future__ import annotations

import json
import os

import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.dataset import examples
from pipeline.metadata.report import collect
from pipeline.metadata.runs import latest_run_id
from pipeline.metadata.store import open_store
from pipeline.monitoring import training_data
from serving import tfrecords
from tests.support.processes import run_tfxsp
from tests.support.serving import start, stop, write_config

LOGGING = ('logging_config {{ sampling_config {{ sampling_rate: 1.0 }} '
           'log_collector_config {{ type: "tfrecord" filename_prefix: "{prefix}" }} }}')
BATCH = 8


def _rest(server, model: str, rows: list[dict]) -> None:
    for i in range(0, len(rows), BATCH):
        response = server.rest.post(f"/v1/models/{model}:predict",
                                    json.dumps({"signature_name": "serving_raw", "instances": rows[i:i + BATCH]}))
        assert response.status == 200, response.body


def _grpc(server, model: str, rows: list[dict], contract) -> None:
    from tensorflow_serving.apis import predict_pb2

    from pipeline.modules import signatures
    for i in range(0, len(rows), BATCH):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = "serving_raw"
        for column in contract.features:
            values = [row[column.name] for row in rows[i:i + BATCH]]
            dtype = signatures.raw_input_dtype(column)
            request.inputs[column.name].CopyFrom(tf.make_tensor_proto(values, dtype=dtype))
        server.predictions.Predict(request, timeout=30)


@pytest.fixture(scope="module")
def logged(pipeline_runs, tmp_path_factory):
    """Logs of the eval rows (REST), of the shifted rows (gRPC), and of another model, from real servers."""
    assert pipeline_runs.results["first"].returncode == 0, pipeline_runs.results["first"].stderr[-3000:]
    config = pipeline_runs.config
    store = open_store(config.metadata_connection_config())
    report = collect(store, latest_run_id(store, config.pipeline_name))
    version = int(report.pushed_version)
    contract = training_data.find(store, version).contract
    rows = [row for row, _ in examples.rows_and_labels(report.examples_uri, contract)]  # the eval split
    shifted = [{**row, "body_mass_g": row["body_mass_g"] + 2000, "island": "Torgersen"} for row in rows]
    root = tmp_path_factory.mktemp("monitor")
    prefixes = {name: str(root / "logs" / name / "requests") for name in ("eval", "shifted", "other")}

    def serve(prefix: str, other_prefix: str | None = None):
        models = [{"name": config.model_name, "base_path": config.serving_model_dir,
                   "extra": LOGGING.format(prefix=prefix)}]
        if other_prefix:
            models.append({"name": "other", "base_path": config.serving_model_dir,
                           "extra": LOGGING.format(prefix=other_prefix)})
        path = write_config(root / f"{os.path.basename(os.path.dirname(prefix))}.config", models)
        return start(config.model_name, config.serving_model_dir, f"--model_config_file={path}")

    server = serve(prefixes["eval"])
    try:
        with open(server.handle.log_path, encoding="utf-8", errors="replace") as f:
            server_log = f.read()
        _rest(server, config.model_name, rows)
    finally:
        stop(server)  # a stop writes what is queued
    server = serve(prefixes["shifted"], prefixes["other"])
    try:
        _grpc(server, config.model_name, shifted, contract)
        _rest(server, "other", rows[:BATCH])
    finally:
        stop(server)
    return pipeline_runs, prefixes, version, len(rows), root, server_log


def _monitor(pipeline_runs, *args):
    return _monitor_free(pipeline_runs, "monitor", *args)


def _monitor_free(pipeline_runs, command, *args):
    return run_tfxsp([command, *args, *pipeline_runs.base_args], cwd=pipeline_runs.root)


def test_eval_rows_show_no_skew_and_the_check_is_recorded(logged):
    pipeline_runs, prefixes, version, count, _, _ = logged
    result = _monitor(pipeline_runs, "--logs", prefixes["eval"], "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["version"] == version and answer["requests"] == count
    assert answer["skewed"] == []
    names = {f["name"] for f in answer["features"]}
    assert {"body_mass_g", "island", "bill_length_mm"} <= names
    assert all(f["distance"] is not None and f["distance"] <= f["threshold"] for f in answer["features"])
    assert os.path.isfile(answer["report"])
    # Recorded downstream of the PushedModel.
    store = open_store(pipeline_runs.config.metadata_connection_config())
    [report] = store.get_artifacts_by_id([answer["report_artifact_id"]])
    assert report.custom_properties["skewed"].int_value == 0
    events = store.get_events_by_execution_ids([answer["execution_id"]])
    inputs = {e.artifact_id for e in events if e.type == mlmd.Event.INPUT}
    assert answer["pushed_model_id"] in inputs
    # ... and shown downstream of the served version by tfxsp lineage.
    traced = _monitor_free(pipeline_runs, "lineage", f"version:{version}", "--downstream", "--format", "json")
    assert traced.returncode == 0, traced.stderr
    labels = {n["label"] for n in json.loads(traced.stdout)["nodes"]}
    assert f"ServingSkewReport #{answer['report_artifact_id']}" in labels


def test_shifted_rows_flag_exactly_body_mass_and_island(logged):
    pipeline_runs, prefixes, _, _, _, _ = logged
    result = _monitor(pipeline_runs, "--logs", prefixes["shifted"], "--format", "json")
    assert result.returncode == 7, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert sorted(answer["skewed"]) == ["body_mass_g", "island"]
    by_name = {f["name"]: f for f in answer["features"]}
    assert by_name["body_mass_g"]["measure"] == "Jensen-Shannon divergence"
    assert by_name["island"]["measure"] == "L-infinity distance"
    assert answer["other_models"] == {}  # "other" logged to its own prefix
    with open(answer["report"], encoding="utf-8") as f:
        html = f.read()
    assert "body_mass_g" in html and "SKEWED" in html
    # The table for people says the same.
    table = _monitor(pipeline_runs, "--logs", prefixes["shifted"])
    assert table.returncode == 7 and "Skewed: body_mass_g, island" in table.stdout.replace("\n", " ")
    # A per-feature threshold is honoured.
    relaxed = _monitor(pipeline_runs, "--logs", prefixes["shifted"], "--format", "json", "--set",
                       'monitor_feature_thresholds={"body_mass_g": 1.0, "island": 1.0}')
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr


def test_bad_input_gets_a_clear_error(logged):
    pipeline_runs, prefixes, version, _, root, _ = logged
    missing = _monitor(pipeline_runs, "--logs", str(root / "nowhere" / "requests"))
    assert missing.returncode == 2 and "No request logs at" in missing.stderr
    other = _monitor(pipeline_runs, "--logs", prefixes["other"])
    assert other.returncode == 2 and "only for: other" in other.stderr.replace("\n", " ")
    absent = _monitor(pipeline_runs, "--logs", prefixes["eval"], "--version", str(version + 1))
    assert absent.returncode == 2 and "hold no request" in absent.stderr.replace("\n", " ")
    # Requests of a version ML Metadata has no lineage for (its records rewritten to another version number).
    from tensorflow_serving.apis import prediction_log_pb2
    unknown = root / "logs" / "unknown-00000.tfrecord"
    with open(unknown, "wb") as f:
        for data in tf.data.TFRecordDataset(sorted((root / "logs" / "eval").glob("*.tfrecord"))):
            record = prediction_log_pb2.PredictionLog.FromString(data.numpy())
            record.log_metadata.model_spec.version.value = 424242
            f.write(tfrecords.encode(record.SerializeToString()))
    lineage = _monitor(pipeline_runs, "--logs", str(unknown))
    assert lineage.returncode == 2 and "No pushed version 424242" in lineage.stderr.replace("\n", " ")


def test_the_trainer_wrote_warmup_requests_that_the_server_replayed(logged):
    pipeline_runs, _, version, _, _, server_log = logged
    path = os.path.join(pipeline_runs.config.serving_model_dir, str(version), "assets.extra",
                        "tf_serving_warmup_requests")
    records = list(tfrecords.read(path))
    assert len(records) == 4  # one serving_raw request per sample row (3), one serving_default of them all
    assert f"Number of warmup records read: {len(records)}." in server_log


def test_the_dashboard_shows_the_recorded_checks(logged):
    """After the checks above: /monitor lists them newest first with their verdicts and distances (and its /api
    twin says the same), the Models page shows the version's latest verdict, a version without checks says so."""
    from tests.support.dashboard import Dashboard
    pipeline_runs, _, version, count, _, _ = logged
    dashboard = Dashboard(pipeline_runs.config)
    try:
        status, kind, text, _ = dashboard.get("/api/monitor")
        assert status == 200 and kind == "application/json", text[:2000]
        checks = json.loads(text)["checks"]
        mine = [c for c in checks if c["version"] == str(version)]
        assert len(mine) >= 4  # the eval rows, the shifted ones twice, the relaxed thresholds
        assert [c["checked"] for c in checks] == sorted((c["checked"] for c in checks), reverse=True)
        skewed = [c for c in mine if c["skewed"]]
        assert skewed and all(sorted(c["skewed"]) == ["body_mass_g", "island"] for c in skewed)
        assert any(not c["skewed"] and c["requests"] == count for c in mine)
        assert skewed[0]["distances"]["body_mass_g"] > skewed[0]["thresholds"]["body_mass_g"]
        status, _, page, _ = dashboard.get(f"/monitor?version={version}")
        assert status == 200 and "skewed: body_mass_g, island" in page and "no skew" in page
        assert "island" in page and f"ServingSkewReport #{skewed[0]['report_id']}" in page
        # The Models page: the newest check of the version (the relaxed one: no skew), linked to its checks.
        status, _, text, _ = dashboard.get("/api/models")
        model = next(m for m in json.loads(text)["models"] if m["version"] == str(version))
        assert model["skew_check"]["report_id"] == mine[0]["report_id"] and model["skew_check"]["skewed"] == []
        status, _, page, _ = dashboard.get("/models")
        assert status == 200 and f'href="/monitor?version={version}"' in page and "Skew check" in page
        # A version without checks, and a bad version number.
        status, _, page, _ = dashboard.get("/monitor?version=1")
        assert status == 200 and "No skew check was recorded for version 1" in page
        status, _, text, _ = dashboard.get("/api/monitor?version=abc")
        assert status == 400 and "version must be a whole number" in text
    finally:
        dashboard.close()
