"""Config changes at run time (spec §3.3 HandleReloadConfigRequest, §5.6 file polling, §5.7 labels)."""
import shutil

import grpc
import pytest
from tensorflow_serving.apis import model_management_pb2

from serving.config import parse_model_server_config
from tests.support.serving import predict_y, start, statuses, stop, wait_until, write_config

pytestmark = pytest.mark.timeout(180)


def config_text(*models):
    entries = "".join(
        f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" {extra} }} '
        for name, path, extra in models)
    return f"model_config_list {{ {entries} }}"


@pytest.fixture(scope="module")
def reload_server(tmp_path_factory, saved_half_plus_two):
    root = tmp_path_factory.mktemp("reload")
    for name, b in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        shutil.copytree(saved_half_plus_two[b], root / name / "1")
    shutil.copytree(saved_half_plus_two[4.0], root / "a" / "2")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "saved_model.pb").write_bytes(b"garbage")
    config = write_config(root / "models.config", [
        {"name": "a", "base_path": root / "a", "extra": "model_version_policy { all {} }"}])
    server = start("a", str(root / "a"), f"--model_config_file={config}", "--max_num_load_retries=0")
    server.root = root
    yield server
    stop(server)


def reload(server, text):
    request = model_management_pb2.ReloadConfigRequest(config=parse_model_server_config(text))
    return server.models.HandleReloadConfigRequest(request, timeout=60)


def test_reload_adds_models_and_labels_then_removes_them(reload_server):
    root = reload_server.root
    # Labels may only point at versions that are AVAILABLE (as in TF Serving, whose reload does
    # not wait for the versions a changed policy adds), so serve every version of `a` first.
    reload(reload_server, config_text(("a", root / "a", "model_version_policy { all {} }")))
    wait_until(lambda: statuses(reload_server, "a").get(1, ("",))[0] == "AVAILABLE",
               what="version 1 of model a available")
    a = ("a", root / "a", 'model_version_policy { all {} } version_labels { key: "stable" value: 1 } '
                          'version_labels { key: "canary" value: 2 }')
    response = reload(reload_server, config_text(a, ("b", root / "b", "")))
    assert response.status.error_code == 0
    # The call returns once the added model is AVAILABLE.
    assert predict_y(reload_server, "b") == 3.0
    assert reload_server.rest.post("/v1/models/a/labels/stable:predict", {"instances": [2.0]}).json() == {
        "predictions": [2.0]}
    assert reload_server.rest.post("/v1/models/a/labels/canary:predict", {"instances": [2.0]}).json() == {
        "predictions": [5.0]}

    reload(reload_server, config_text(a))
    response = reload_server.rest.post("/v1/models/b:predict", {"instances": [2.0]})
    assert (response.status, response.json()["error"]) == (404, "Servable not found for request: Latest(b)")
    wait_until(lambda: statuses(reload_server, "b")[1][0] == "END", what="model b unloaded")
    # QUIRK kept from the reference: a removed model still has a status (END).
    assert statuses(reload_server, "b") == {1: ("END", "OK", "")}


def test_label_on_an_unavailable_version_is_refused(reload_server):
    root = reload_server.root
    with pytest.raises(grpc.RpcError) as info:
        reload(reload_server, config_text(("a", root / "a", 'version_labels { key: "next" value: 9 }'),
                                          ("c", root / "c", "")))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == \
        "Request to assign label to version 9 of model a, which is not currently available for inference"
    assert predict_y(reload_server, "c") == 404  # nothing of the refused config was applied
    assert predict_y(reload_server, "a") == 5.0


def test_a_new_model_that_cannot_load_fails_the_reload(reload_server):
    root = reload_server.root
    with pytest.raises(grpc.RpcError) as info:
        reload(reload_server, config_text(("a", root / "a", "model_version_policy { all {} }"),
                                          ("broken", root / "broken", "")))
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert info.value.details().startswith("1 servable(s) did not become available: {{name: broken version: 1} "
                                           "due to error: ")
    assert predict_y(reload_server, "a") == 5.0


def test_config_file_polling(tmp_path, saved_half_plus_two):  # testModelConfigReload
    for name, b in (("half_plus_two", 2.0), ("half_plus_three", 3.0)):
        shutil.copytree(saved_half_plus_two[b], tmp_path / name / "1")
    config = tmp_path / "models.config"
    write_config(config, [{"name": "half_plus_two", "base_path": tmp_path / "half_plus_two"}])
    server = start("half_plus_two", str(tmp_path / "half_plus_two"), f"--model_config_file={config}",
                   "--model_config_file_poll_wait_seconds=0.3")
    try:
        assert predict_y(server, "half_plus_two") == 3.0
        config.write_text("model_config_list { this is not valid }")
        wait_until(lambda: "Failed to read ModelServerConfig file" in server.handle.log_tail(),
                   what="the bad file to be reported")
        assert predict_y(server, "half_plus_two") == 3.0  # the old config stays in force
        write_config(config, [{"name": "half_plus_three", "base_path": tmp_path / "half_plus_three"}])
        wait_until(lambda: predict_y(server, "half_plus_three") == 4.0, what="the new config")
        wait_until(lambda: predict_y(server, "half_plus_two") == 404, what="the old model removed")
    finally:
        stop(server)
