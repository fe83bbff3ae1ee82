"""`tfxsp models label/promote/pin/unpin/rollback` against real model server processes: the embedded server
started by `tfxsp serve` from the model config file, and one started with --model_name/--model_base_path only (no
file: the change is applied live, and the file written for the next start). Clients that address /versions/N,
/labels/L (REST) and version_label (gRPC) get what each command promised; each action is in ML Metadata, linked to
its PushedModel; every bad input exits 2 and changes neither the file, the server nor the store.

The push history is real SavedModels (version N answers y = x + N) and a real ML Metadata store recording them as
TFX does (tests/support/model_history.py): versions 1, 2 and 4 blessed, 3 not blessed, 5 quarantined after a failed
serving validation.
"""
from __future__ import annotations

import json
import os

import grpc
import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from pipeline.lifecycle import model_config as files
from serving import launcher
from tests.support import serving as support
from tests.support.lifecycle import Tfxsp, wait_for
from tests.support.model_history import Version, make_history
from tests.support.processes import run_tfxsp

pytestmark = pytest.mark.timeout(600)
MODEL = "penguin"
VERSIONS = [Version(1), Version(2), Version(3, blessed=False), Version(4), Version(5, quarantined=True)]


def _tfxsp(history, *args):
    result = run_tfxsp([*args, *history.set_args], cwd=history.root, timeout=300)
    return result


def _ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


def _rest_y(history, path: str):
    rest = support.Rest(history.config.serving_host, history.config.rest_port)
    response = rest.post(f"/v1/models/{MODEL}{path}:predict", {"instances": [0.0]})
    return response.json()["predictions"][0] if response.status == 200 else (response.status, response.error)


def _answers(history):
    try:
        return _rest_y(history, "")
    except OSError:  # not listening yet
        return None


def _grpc_y(history, label: str | None = None, version: int | None = None):
    with grpc.insecure_channel(history.config.grpc_target) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        if label:
            request.model_spec.version_label = label
        if version:
            request.model_spec.version.value = version
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([0.0], dtype=tf.float32))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
        return response.outputs["y"].float_val[0], response.model_spec.version.value


def _actions(history):
    store = metadata_store.MetadataStore(history.config.metadata_connection_config())
    try:
        executions = store.get_executions_by_type("tfxsp.ModelAction")
    except Exception:
        return []
    result = []
    for execution in sorted(executions, key=lambda x: x.id):
        inputs = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])]
        result.append((execution.properties["action"].string_value, inputs))
    return result


@pytest.fixture(params=["tfxsp serve (model config file)", "plain server (no config file)"])
def served(request, tmp_path):
    history = make_history(tmp_path, VERSIONS)
    config = history.config
    if request.param.startswith("tfxsp serve"):
        server = Tfxsp(["serve", *history.set_args, "--file_system_poll_wait_seconds=0.2"], cwd=tmp_path,
                       name="serve")
        stop = server.popen
    else:
        handle = launcher.start_server(MODEL, config.serving_model_dir, grpc_port=config.grpc_port,
                                               rest_port=config.rest_port, kind="embedded", poll_wait_s=0.2,
                                               wait_for_model=False)
        stop = handle
    try:
        wait_for(lambda: _answers(history) == 4.0, 120, "the newest blessed version served")
        yield history, request.param.startswith("tfxsp serve")
    finally:
        if hasattr(stop, "terminate"):
            stop.terminate()
            stop.wait(30)
        else:
            stop.stop()


def test_label_promote_rollback_unpin_as_clients_see_them(served):
    history, from_file = served
    config = history.config
    assert os.path.exists(config.model_config_file) == from_file  # tfxsp serve wrote the default file

    _ok(_tfxsp(history, "models", "label", "2", "stable"))
    assert _rest_y(history, "/labels/stable") == 2.0
    assert _grpc_y(history, label="stable") == (2.0, 2)
    assert _rest_y(history, "") == 4.0  # unversioned requests: the newest version
    assert _rest_y(history, "/versions/1") == 1.0  # policy all: every version stays loaded

    _ok(_tfxsp(history, "models", "label", "4", "canary"))
    assert _grpc_y(history, label="canary") == (4.0, 4)
    promoted = _ok(_tfxsp(history, "models", "promote", "--format", "json"))
    assert json.loads(promoted.stdout)["labels"] == {"stable": 4}
    assert _grpc_y(history, label="stable") == (4.0, 4)
    assert _rest_y(history, "/labels/canary")[0] == 400  # gone: TF Serving's "Unrecognized servable version label"

    rolled = _ok(_tfxsp(history, "models", "rollback"))
    assert "served: version 2 (pinned)" in rolled.stdout and "4 stay in the model base path" in rolled.stdout
    assert _rest_y(history, "") == 2.0 and _grpc_y(history) == (2.0, 2)
    assert _rest_y(history, "/labels/stable") == 2.0  # the label moved with the rollback
    assert _rest_y(history, "/versions/4")[0] == 404  # unloaded, still on disk
    assert os.path.isdir(os.path.join(config.serving_model_dir, "4"))
    on_disk = files.serving_of(files.entry_of(files.read(config.model_config_file), MODEL, "file"))
    assert on_disk == files.Serving(pinned=2, labels={"stable": 2})

    _ok(_tfxsp(history, "models", "unpin"))
    assert _rest_y(history, "") == 4.0 and _rest_y(history, "/labels/stable") == 2.0
    _ok(_tfxsp(history, "models", "pin", "4"))
    assert _grpc_y(history) == (4.0, 4) and _rest_y(history, "/versions/1")[0] == 404

    # Every action, in ML Metadata, linked to the PushedModel of its version; and in `tfxsp models`.
    ids = history.pushed_model_ids
    assert _actions(history) == [("label", [ids[2]]), ("label", [ids[4]]), ("promote", [ids[4]]),
                                 ("rollback", [ids[2]]), ("unpin", []), ("pin", [ids[4]])]
    listing = json.loads(_ok(_tfxsp(history, "models", "--format", "json")).stdout)
    assert listing["pinned"] == 4 and listing["labels"] == {"stable": 2} and listing["served_version"] == "4"
    assert [a["action"] for a in listing["actions"]] == ["label", "label", "promote", "rollback", "unpin", "pin"]
    table = _ok(_tfxsp(history, "models")).stdout
    assert "stable" in table and "pinned" in table
    # And in lineage: downstream of version 4's PushedModel, the actions that named it.
    traced = json.loads(_ok(_tfxsp(history, "lineage", "version:4", "--downstream", "--format", "json")).stdout)
    actions = sorted(n["label"] for n in traced["nodes"] if n["type"] == "tfxsp.ModelAction")
    assert actions == ["models label", "models pin", "models promote"]
    picture = _ok(_tfxsp(history, "lineage", "version:4", "--downstream")).stdout
    assert "models promote" in picture


def test_without_a_server_the_file_is_written_and_a_server_started_from_it_keeps_the_promise(tmp_path):
    history = make_history(tmp_path, VERSIONS)
    config = history.config
    files.ensure(config.model_config_file, MODEL, config.serving_model_dir)  # as tfxsp serve leaves it
    result = _ok(_tfxsp(history, "models", "label", "1", "stable"))
    assert "no server answered" in result.stdout
    _ok(_tfxsp(history, "models", "pin", "2"))
    # As tfxsp serve starts it (labelled versions load after the labels are read).
    server = support.start(MODEL, config.serving_model_dir, f"--model_config_file={config.model_config_file}",
                           "--allow_version_labels_for_unavailable_models",
                           grpc_port=config.grpc_port, rest_port=config.rest_port)
    try:
        assert _rest_y(history, "") == 2.0 and _rest_y(history, "/labels/stable") == 1.0
        assert _grpc_y(history, label="stable") == (1.0, 1)
        assert _rest_y(history, "/versions/4")[0] == 404
    finally:
        support.stop(server)


@pytest.fixture(scope="module")
def idle(tmp_path_factory):
    """A history with the default model config file and no server."""
    history = make_history(tmp_path_factory.mktemp("idle"), VERSIONS)
    files.ensure(history.config.model_config_file, MODEL, history.config.serving_model_dir)
    return history


@pytest.mark.parametrize("args, message", [
    (["label", "9", "stable"], "version 9 was never pushed"),
    (["label", "3", "stable"], "version 3 is not blessed"),
    (["label", "5", "stable"], "quarantined"),
    (["label", "2", "not a label"], "a label is a word"),
    (["pin", "9"], "version 9 was never pushed"),
    (["rollback", "--to", "5"], "quarantined"),
    (["promote"], "no version has the label 'canary'"),
    (["unpin"], "no version is pinned"),
])
def test_bad_input_changes_nothing(idle, args, message):
    history, config = idle, idle.config
    before = open(config.model_config_file).read()
    result = _tfxsp(history, "models", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Nothing changed" in result.stderr and message in result.stderr, result.stderr
    assert open(config.model_config_file).read() == before
    assert _actions(history) == []


def test_no_server_and_no_config_file_is_refused(tmp_path):
    history = make_history(tmp_path, VERSIONS)
    result = _tfxsp(history, "models", "label", "2", "stable")
    assert result.returncode == 2 and "no model server answers" in result.stderr, result.stderr
    assert not os.path.exists(history.config.model_config_file) and _actions(history) == []
