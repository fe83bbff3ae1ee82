"""The ServingValidator's executor against real model server processes, in every state it must
recognise: serving the push; not running, or serving another version (could not validate: no
rollback); serving a different model, or one that fails to load (failed: rolled back); a version
superseded by a newer push (never rolled back); a pushed folder that holds another push of the
same version number; and nothing pushed. The trained model and eval examples come from the
session's real pipeline run."""
import contextlib
import json
import os
import shutil
import threading
import time

import pytest
import requests
import tensorflow as tf
from ml_metadata import metadata_store
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import path_utils

from components.serving_validation import ServingValidation
from components.serving_validation.executor import Executor
from serving import launcher
from tests.support.processes import free_port
from tests.support.serving import write_config

pytestmark = pytest.mark.timeout(600)

MODEL_NAME = "penguin"


@pytest.fixture(scope="module")
def trained(pipeline_runs):
    """Model and Examples artifacts of the real pipeline run."""
    store = metadata_store.MetadataStore(pipeline_runs.config.metadata_connection_config())
    model = standard_artifacts.Model()
    model.uri = max(store.get_artifacts_by_type("Model"), key=lambda a: a.id).uri
    examples = standard_artifacts.Examples()
    examples.uri = max((a for a in store.get_artifacts_by_type("Examples")
                        if "/CsvExampleGen/" in a.uri), key=lambda a: a.id).uri
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    return {"model": model, "examples": examples,
            "saved_model": path_utils.serving_model_path(model.uri)}


def _place(saved_model, base_path, version):
    shutil.copytree(saved_model, os.path.join(base_path, str(version)))


def _place_unloadable(saved_model, base_path, version):
    """The trained model with its variables' data damaged: the same graph and variable index (so the same push),
    which no server can load."""
    _place(saved_model, base_path, version)
    [data] = [p for p in (base_path / str(version) / "variables").iterdir() if ".data-" in p.name]
    data.write_bytes(b"\0" * 64)


def _place_altered(saved_model, base_path, version):
    """A model with the same signatures whose probabilities come out in reverse class order."""
    loaded = tf.saved_model.load(saved_model)
    module = tf.Module()
    module.loaded = loaded
    signatures = {}
    for name in ("serving_default", "serving_raw"):
        original = loaded.signatures[name]

        def altered(original=original, **inputs):
            outputs = dict(original(**inputs))
            outputs["probabilities"] = tf.reverse(outputs["probabilities"], axis=[1])
            return outputs
        specs = original.structured_input_signature[1]
        signatures[name] = tf.function(
            lambda inputs, altered=altered: altered(**inputs),
            input_signature=[specs]).get_concrete_function()
    tf.saved_model.save(module, os.path.join(base_path, str(version)), signatures=signatures)


@contextlib.contextmanager
def _server(base_path, *extra_args):
    handle = launcher.start_server(model_name=MODEL_NAME, model_base_path=str(base_path),
                                   grpc_port=free_port(), rest_port=free_port(),
                                   host="127.0.0.1", kind="embedded", poll_wait_s=0.2,
                                   extra_args=extra_args)
    try:
        yield handle
    finally:
        handle.stop()


def _validate(trained, tmp_path, version, rest_port, grpc_port, pushed=1, destination="",
              rollback=0, deadline=20.0, max_p50_ms=1000.0):
    pushed_model = standard_artifacts.PushedModel()
    pushed_model.set_int_custom_property("pushed", pushed)
    if pushed:
        pushed_model.set_string_custom_property("pushed_version", str(version))
        pushed_model.set_string_custom_property("pushed_destination", destination)
    validation = ServingValidation()
    validation.uri = str(tmp_path / f"validation-{time.monotonic_ns()}")
    Executor().Do(
        {"pushed_model": [pushed_model], "model": [trained["model"]],
         "examples": [trained["examples"]]},
        {"validation": [validation]},
        {"model_name": MODEL_NAME, "rest_url": f"http://127.0.0.1:{rest_port}",
         "grpc_target": f"127.0.0.1:{grpc_port}",
         "signature_names": ["serving_default", "serving_raw"], "num_examples": 8,
         "load_deadline_s": deadline, "tolerance": 1e-5, "latency_requests": 10,
         "max_p50_ms": max_p50_ms, "max_p99_ms": 5000.0, "rollback": rollback})
    with open(os.path.join(validation.uri, "report.json")) as f:
        return _Recorded(validation), json.load(f)


class _Recorded:
    """The custom properties the executor recorded on the artifact, as attributes."""

    def __init__(self, artifact):
        self._artifact = artifact

    def __getattr__(self, name):
        return self._artifact.get_custom_property(name)


def test_passes_when_the_server_serves_the_pushed_model(trained, tmp_path):
    base = tmp_path / "models" / MODEL_NAME
    _place(trained["saved_model"], base, 100)
    with _server(base) as server:
        validation, report = _validate(trained, tmp_path, 100, server.rest_port, server.grpc_port,
                                       destination=str(base / "100"))
        too_slow, _ = _validate(trained, tmp_path, 100, server.rest_port, server.grpc_port,
                                destination=str(base / "100"), max_p50_ms=0.001)
    assert (validation.blessed, validation.outcome) == (1, "passed"), report
    assert validation.probed_version == 100
    checks = [c["check"] for c in report["checks"] if c["ok"]]
    for signature in ("serving_default", "serving_raw"):
        for api in ("REST predict (row)", "REST predict (columnar)", "gRPC Predict"):
            assert f"{api} on '{signature}'" in checks
    assert 0 < validation.rest_p50_ms <= validation.rest_p99_ms
    assert 0 < validation.grpc_p50_ms <= validation.grpc_p99_ms
    # The same server, held to a latency budget no server can meet, fails the latency check.
    assert (too_slow.blessed, too_slow.outcome) == (0, "failed")
    assert "latency (rest) failed for version 100" in too_slow.reason
    assert "p50" in too_slow.reason and "over the budget of 0.001 ms" in too_slow.reason


def test_server_not_running_could_not_validate_within_the_deadline(trained, tmp_path):
    rest_port = free_port()
    start = time.monotonic()
    validation, report = _validate(trained, tmp_path, 100, rest_port, free_port(), deadline=3.0,
                                   rollback=1)
    assert time.monotonic() - start < 30
    assert (validation.blessed, validation.outcome, validation.fault) == (0, "inconclusive", "server")
    assert validation.reason.startswith("could not validate version 100: model status")
    assert "no answer within 3 s" in validation.reason
    assert f"127.0.0.1:{rest_port}" in validation.reason
    assert validation.rolled_back == 0 and "rollback" not in report


def test_a_server_without_the_version_could_not_validate_and_names_both_versions(trained,
                                                                                 tmp_path):
    base = tmp_path / "models" / MODEL_NAME
    _place(trained["saved_model"], base, 100)
    with _server(base) as server:
        validation, _ = _validate(trained, tmp_path, 200, server.rest_port, server.grpc_port,
                                  deadline=3.0, rollback=1)
    assert (validation.blessed, validation.outcome, validation.fault) == (0, "inconclusive", "server")
    assert "version 200 is not AVAILABLE" in validation.reason
    assert "version 100 AVAILABLE" in validation.reason


def test_a_different_model_in_the_pushed_place_fails_the_output_comparison(trained, tmp_path):
    base = tmp_path / "models" / MODEL_NAME
    _place_altered(trained["saved_model"], base, 300)
    with _server(base) as server:
        validation, report = _validate(trained, tmp_path, 300, server.rest_port,
                                       server.grpc_port)
    assert (validation.blessed, validation.outcome) == (0, "failed")
    assert "predict" in validation.reason and "version 300" in validation.reason
    assert "output 'probabilities' differs" in validation.reason
    assert report["checks"][-1]["ok"] is False


def test_a_version_that_fails_to_load_is_rolled_back_to_the_previous_version(trained, tmp_path):
    base = tmp_path / "models" / MODEL_NAME
    _place(trained["saved_model"], base, 100)
    with _server(base, "--max_num_load_retries=0") as server:
        _place_unloadable(trained["saved_model"], base, 300)  # pushed while the server serves 100
        validation, report = _validate(trained, tmp_path, 300, server.rest_port, server.grpc_port,
                                       destination=str(base / "300"), rollback=1)
        status = requests.get(f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL_NAME}",
                              timeout=5).json()
    assert (validation.blessed, validation.outcome, validation.rolled_back) == (0, "failed", 1)
    assert "the server could not load version 300" in validation.reason
    assert validation.quarantine_path == str(base) + ".quarantine/300"
    assert os.path.exists(os.path.join(validation.quarantine_path, "saved_model.pb"))
    assert sorted(os.listdir(base)) == ["100"]
    assert report["rollback"]["server_back_on_previous"] is True
    states = {s["version"]: s["state"] for s in status["model_version_status"]}
    assert states.get("100") == "AVAILABLE" and states.get("300") != "AVAILABLE"


def _keep_changing(path, until):
    while time.monotonic() < until:
        path.write_bytes(b"x" * int(time.monotonic_ns() % 1000 + 1))
        time.sleep(0.05)
    path.unlink()


def test_a_push_the_server_saw_while_it_was_being_written_is_waited_for(trained, tmp_path):
    """TFX's Pusher copies in place: a scan during the copy reports the version END with UNAVAILABLE ("still being
    written"). That is no verdict on the model: the validation waits for the next scans and passes."""
    base = tmp_path / "models" / MODEL_NAME
    _place(trained["saved_model"], base, 100)
    with _server(base) as server:
        _place(trained["saved_model"], base, 300)
        growing = base / "300" / "assets.extra" / "still_copying"
        growing.parent.mkdir(exist_ok=True)
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL_NAME}/versions/300"
        give_up = time.monotonic() + 20
        while True:  # keep the files changing until the server says so
            growing.write_bytes(b"x" * int(time.monotonic_ns() % 1000 + 1))
            answer = requests.get(url, timeout=5)
            status = answer.json()["model_version_status"][0]["status"] if answer.ok else {}
            if status.get("error_code") == "UNAVAILABLE":
                break
            assert time.monotonic() < give_up, answer.text
            time.sleep(0.05)
        # The copy goes on for a few seconds more, past the validation's first status calls, then ends.
        copying = threading.Thread(target=_keep_changing, args=(growing, time.monotonic() + 4))
        copying.start()
        try:
            validation, report = _validate(trained, tmp_path, 300, server.rest_port, server.grpc_port,
                                           destination=str(base / "300"), rollback=1)
        finally:
            copying.join()
    assert (validation.blessed, validation.outcome, validation.rolled_back) == (1, "passed", 0), report
    assert sorted(os.listdir(base)) == ["100", "300"]


def test_two_rollbacks_of_one_version_number_never_collide(trained, tmp_path):
    base = tmp_path / "models" / MODEL_NAME
    _place(trained["saved_model"], base, 100)
    quarantined = []
    with _server(base, "--max_num_load_retries=0") as server:
        for _ in range(2):  # Pusher names versions by the second: two runs can push the same number
            _place_unloadable(trained["saved_model"], base, 300)
            validation, _ = _validate(trained, tmp_path, 300, server.rest_port, server.grpc_port,
                                      destination=str(base / "300"), rollback=1)
            assert (validation.outcome, validation.rolled_back) == ("failed", 1)
            quarantined.append(validation.quarantine_path)
    assert quarantined == [f"{base}.quarantine/300", f"{base}.quarantine/300.1"]
    for path in quarantined:
        assert sorted(os.listdir(path)) == sorted(os.listdir(trained["saved_model"]))


def test_a_superseded_version_is_never_rolled_back(trained, tmp_path):
    """A model fault (here: over the latency budget) on version 300, found after version 400 was pushed: the run
    fails, and leaves 300 where it is."""
    base = tmp_path / "models" / MODEL_NAME
    _place(trained["saved_model"], base, 300)
    _place(trained["saved_model"], base, 400)
    config = write_config(tmp_path / "models.config", [
        {"name": MODEL_NAME, "base_path": str(base), "extra": "model_version_policy { all {} }"}])
    with _server(base, f"--model_config_file={config}") as server:
        validation, report = _validate(trained, tmp_path, 300, server.rest_port, server.grpc_port,
                                       destination=str(base / "300"), rollback=1, max_p50_ms=0.001)
    assert (validation.outcome, validation.rolled_back) == ("failed", 0)
    assert "over the budget" in validation.reason
    assert report["rollback_skipped"] == ("version 300 was superseded by version 400, which this run "
                                          "leaves to its own validation")
    assert sorted(os.listdir(base)) == ["300", "400"]
    assert not os.path.exists(str(base) + ".quarantine")


def test_a_version_not_loaded_because_a_newer_one_is_served_is_superseded(trained, tmp_path):
    base = tmp_path / "models" / MODEL_NAME
    _place(trained["saved_model"], base, 300)
    _place(trained["saved_model"], base, 400)
    with _server(base) as server:  # serves the latest version only, as TF Serving does by default
        validation, _ = _validate(trained, tmp_path, 300, server.rest_port, server.grpc_port,
                                  destination=str(base / "300"), rollback=1, deadline=3.0)
    assert (validation.outcome, validation.fault, validation.rolled_back) == (
        "inconclusive", "superseded", 0)
    assert validation.reason.startswith(
        "could not validate version 300: version 300 was superseded by version 400; ")
    assert "version 400 AVAILABLE" in validation.reason
    assert sorted(os.listdir(base)) == ["300", "400"]


def test_a_folder_holding_another_push_of_the_version_is_not_rolled_back(trained, tmp_path):
    """Another run pushed version 300 in the same second: Pusher kept its folder and reported this push anyway."""
    base = tmp_path / "models" / MODEL_NAME
    _place_altered(trained["saved_model"], base, 300)
    with _server(base) as server:
        validation, report = _validate(trained, tmp_path, 300, server.rest_port, server.grpc_port,
                                       destination=str(base / "300"), rollback=1)
    assert (validation.outcome, validation.fault, validation.rolled_back) == (
        "inconclusive", "another push", 0)
    assert "the folder holds another model than this run's" in validation.reason
    assert sorted(os.listdir(base)) == ["300"] and "rollback" not in report


def test_nothing_pushed_is_recorded_as_skipped(trained, tmp_path):
    validation, report = _validate(trained, tmp_path, 0, free_port(), free_port(), pushed=0)
    assert (validation.blessed, validation.outcome) == (0, "skipped")
    assert validation.reason == "skipped: not pushed"
