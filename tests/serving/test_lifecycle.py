"""Model lifecycle (spec §5): pushing versions under load, partial and broken versions, policies.

One server watches several models (poll every 0.2 s, one load retry 0.3 s after a failure);
each test owns its model, so the tests do not depend on each other.
"""
import os
import shutil
import threading
import time

import grpc
import pytest

from tests.support.serving import predict_request, predict_y, start, statuses, stop, wait_until, write_config

pytestmark = pytest.mark.timeout(180)


def publish_atomically(source, base_path, version):
    staging = os.path.join(base_path, f".staging-{version}")
    shutil.copytree(source, staging)
    os.rename(staging, os.path.join(base_path, str(version)))


def copy_slowly(source, target, pause_s=0.3):
    """A non-atomic push: saved_model.pb first, then every file in two halves with pauses between.

    The pauses are longer than the server's poll interval, so the server sees incomplete directories
    that look settled, tries them, and must never serve them or disturb the serving version.
    """
    files = sorted((os.path.relpath(os.path.join(root, name), source)
                    for root, _, names in os.walk(source) for name in names),
                   key=lambda path: (path != "saved_model.pb", path))
    for relative in files:
        data = open(os.path.join(source, relative), "rb").read()
        destination = os.path.join(target, relative)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with open(destination, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(pause_s)
            f.write(data[len(data) // 2:])
        time.sleep(pause_s)


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory, saved_half_plus_two):
    root = tmp_path_factory.mktemp("lifecycle")
    models = {
        "swap": {1: 1.0},
        "partial": {1: 1.0},
        "broken": {1: 1.0},
        "policy_all": {1: 1.0, 2: 2.0},
        "policy_specific": {1: 1.0, 2: 2.0, 3: 3.0},
        "latest_two": {1: 1.0, 2: 2.0, 3: 3.0},
        "ephemeral": {1: 1.0},
        "rollback": {1: 1.0, 2: 2.0},
    }
    for name, versions in models.items():
        for version, b in versions.items():
            shutil.copytree(saved_half_plus_two[b], root / name / str(version))
    policies = {"policy_all": "model_version_policy { all {} }",
                "policy_specific": "model_version_policy { specific { versions: 1 versions: 3 } }",
                "latest_two": "model_version_policy { latest { num_versions: 2 } }"}
    config = write_config(root / "models.config", [
        {"name": name, "base_path": root / name, "extra": policies.get(name, "")} for name in models])
    server = start("swap", str(root / "swap"), f"--model_config_file={config}", "--max_num_load_retries=1",
                   "--load_retry_interval_micros=300000")
    server.root = root
    yield server
    stop(server)


def test_hot_swap_under_load_fails_no_request(lifecycle, saved_half_plus_two):
    """Version 2 arrives by rename, version 3 by a slow non-atomic copy; clients never see an error."""
    base = lifecycle.root / "swap"
    stop_clients = threading.Event()
    grpc_results = [[] for _ in range(3)]  # per client: (version, y) or an exception
    rest_results = []
    available_seen = set()

    def grpc_client(results):
        stub = lifecycle.predictions
        while not stop_clients.is_set():
            started = time.monotonic()
            try:
                response = stub.Predict(predict_request("swap"), timeout=10)
                results.append((response.model_spec.version.value, response.outputs["y"].float_val[0]))
            except grpc.RpcError as e:
                results.append(e)
            time.sleep(max(0.0, 0.02 - (time.monotonic() - started)))  # a steady 50 requests/s each

    def rest_client():
        while not stop_clients.is_set():
            started = time.monotonic()
            response = lifecycle.rest.post("/v1/models/swap:predict", {"instances": [2.0]})
            rest_results.append(response.json()["predictions"][0] if response.status == 200 else response)
            time.sleep(max(0.0, 0.02 - (time.monotonic() - started)))

    def status_watcher():
        while not stop_clients.is_set():
            available_seen.update(v for v, (state, _, _) in statuses(lifecycle, "swap").items() if state == "AVAILABLE")
            time.sleep(0.02)

    threads = [threading.Thread(target=grpc_client, args=(r,)) for r in grpc_results]
    threads += [threading.Thread(target=rest_client), threading.Thread(target=status_watcher)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: all(len(r) > 10 for r in grpc_results), what="clients to run")
        publish_atomically(saved_half_plus_two[2.0], base, 2)
        wait_until(lambda: statuses(lifecycle, "swap").get(1, ("",))[0] == "END", what="version 1 unloaded")
        os.makedirs(base / "3")
        copy_slowly(saved_half_plus_two[3.0], base / "3")
        wait_until(lambda: statuses(lifecycle, "swap").get(2, ("",))[0] == "END", what="version 2 unloaded")
        count = len(rest_results)
        wait_until(lambda: len(rest_results) > count + 10, what="requests after the last swap")
    finally:
        stop_clients.set()
        for thread in threads:
            thread.join()

    failures = [r for results in grpc_results for r in results if isinstance(r, Exception)]
    failures += [r for r in rest_results if not isinstance(r, float)]
    assert failures == []
    answered = [r for results in grpc_results for r in results]
    assert len(answered) + len(rest_results) > 100
    # Every answer came from a complete version that was AVAILABLE: version v answers 0.5 * 2 + v.
    assert {version for version, _ in answered} == {1, 2, 3}
    assert all(y == 1.0 + version for version, y in answered)
    assert {version for version, _ in answered} <= available_seen | {1}
    assert set(rest_results) <= {2.0, 3.0, 4.0}
    for results in grpc_results:  # once a client saw a newer version, it never went back
        versions = [version for version, _ in results]
        assert versions == sorted(versions)
    final = statuses(lifecycle, "swap")
    assert final == {3: ("AVAILABLE", "OK", ""), 2: ("END", "OK", ""), 1: ("END", "OK", "")}


def test_partial_version_is_never_served_and_status_says_why(lifecycle, saved_half_plus_two):
    base = lifecycle.root / "partial"
    shutil.copytree(os.path.join(saved_half_plus_two[2.0], "variables"), base / "2" / "variables")
    state = wait_until(lambda: statuses(lifecycle, "partial").get(2), what="version 2 to be tracked")
    wait_until(lambda: statuses(lifecycle, "partial")[2][0] == "END", what="version 2 refused")
    state, code, message = statuses(lifecycle, "partial")[2]
    assert code == "NOT_FOUND"
    assert f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {base / '2'}" in message
    assert statuses(lifecycle, "partial")[1] == ("AVAILABLE", "OK", "")
    assert predict_y(lifecycle, "partial") == 2.0
    # Completing the directory (saved_model.pb last) gets it served.
    for name in os.listdir(saved_half_plus_two[2.0]):
        source = os.path.join(saved_half_plus_two[2.0], name)
        if os.path.isdir(source) and name != "variables":
            shutil.copytree(source, base / "2" / name)
    shutil.copy(os.path.join(saved_half_plus_two[2.0], "saved_model.pb"), base / "2" / "saved_model.pb")
    wait_until(lambda: statuses(lifecycle, "partial")[1][0] == "END", what="version 1 replaced")
    assert statuses(lifecycle, "partial")[2] == ("AVAILABLE", "OK", "")
    assert predict_y(lifecycle, "partial") == 3.0


def test_broken_version_is_retried_then_reported_and_never_disturbs(lifecycle):
    base = lifecycle.root / "broken"
    staging = base / ".staging"
    os.makedirs(staging / "variables")
    (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    os.rename(staging, base / "2")
    seen_states = set()

    def failed():
        state = statuses(lifecycle, "broken").get(2)
        if state:
            seen_states.add(state[0])
        return state and state[0] == "END"

    wait_until(failed, what="version 2 to fail")
    state, code, message = statuses(lifecycle, "broken")[2]
    assert code != "OK" and message
    assert "LOADING" in seen_states  # the retry
    assert statuses(lifecycle, "broken")[1] == ("AVAILABLE", "OK", "")
    assert predict_y(lifecycle, "broken") == 2.0
    assert predict_y(lifecycle, "broken", 2) == 404
    shutil.rmtree(base / "2")
    time.sleep(0.5)  # a few scans: nothing may change for version 1
    assert statuses(lifecycle, "broken")[1] == ("AVAILABLE", "OK", "")
    assert statuses(lifecycle, "broken")[2][0] == "END"  # the history is kept


def test_version_policies(lifecycle):
    assert (predict_y(lifecycle, "policy_all"), predict_y(lifecycle, "policy_all", 1)) == (3.0, 2.0)
    assert predict_y(lifecycle, "policy_specific", 1) == 2.0
    assert predict_y(lifecycle, "policy_specific", 3) == 4.0
    response = lifecycle.rest.post("/v1/models/policy_specific/versions/2:predict", {"instances": [2.0]})
    assert response.status == 404 and response.json()["error"] == \
        "Servable not found for request: Specific(policy_specific, 2)"
    assert sorted(statuses(lifecycle, "latest_two")) == [2, 3]
    # latest 2: deleting version 3 makes version 1 aspired (2 keeps serving meanwhile).
    shutil.rmtree(lifecycle.root / "latest_two" / "3")
    wait_until(lambda: statuses(lifecycle, "latest_two").get(1, ("",))[0] == "AVAILABLE", what="version 1 loaded")
    assert {v: s[0] for v, s in statuses(lifecycle, "latest_two").items()} == {
        1: "AVAILABLE", 2: "AVAILABLE", 3: "END"}


def test_deleting_the_only_served_version_rolls_back_without_downtime(lifecycle):
    """latest 1: version 2 keeps serving until version 1 is loaded again (spec §5.3 step 5)."""
    assert predict_y(lifecycle, "rollback") == 3.0
    shutil.rmtree(lifecycle.root / "rollback" / "2")
    answers = []

    def rolled_back():
        answers.append(predict_y(lifecycle, "rollback"))
        return answers[-1] == 2.0

    wait_until(rolled_back, what="version 1 serving")
    assert set(answers) <= {2.0, 3.0}  # never an error status
    wait_until(lambda: statuses(lifecycle, "rollback")[2][0] == "END", what="version 2 unloaded")


def test_deleting_every_version_unloads_the_model(lifecycle):
    shutil.rmtree(lifecycle.root / "ephemeral" / "1")
    wait_until(lambda: statuses(lifecycle, "ephemeral")[1][0] == "END", what="version 1 unloaded")
    response = lifecycle.rest.post("/v1/models/ephemeral:predict", {"instances": [2.0]})
    assert (response.status, response.json()["error"]) == (404, "Servable not found for request: Latest(ephemeral)")
