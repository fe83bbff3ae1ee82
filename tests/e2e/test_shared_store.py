"""One ML Metadata store on a real MariaDB server, shared (issue 16, point 3), with real `tfxsp` processes:

* two pipelines of one user (same tfx_root, their own pipeline_name) run at the same time against one database;
  both complete, each with its own run, cache and lineage;
* a second `tfxsp run` of the first pipeline, started while the first runs, is refused by the run lock;
* the password (from a file named by $TFXSP_METADATA_PASSWORD_FILE for one, in the URL for the other) is in no
  output and no log; the summary names the store without it;
* `tfxsp runs`, `models` and `lineage` read the store over TCP and over the UNIX socket.

The runs are the session fixture `shared_store` (tests/conftest.py); test_pipeline_e2e.py checks the first
pipeline's run as it checks the SQLite one.
"""
import json
import os
from datetime import datetime

import pytest

pytestmark = pytest.mark.timeout(2400)


def _output(result):
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-5000:]}"


def _json(runs, *args):
    result = runs.tfxsp(*args, "--format", "json")
    assert result.returncode == 0, _output(result)
    return json.loads(result.stdout)


def _window(run):
    """(start, end) of a run in seconds since the epoch."""
    start = datetime.fromisoformat(run["started"]).timestamp()
    return start, start + run["seconds"]


def test_two_pipelines_at_once_both_complete_with_their_own_runs(shared_store):
    first, second = shared_store.first, shared_store.second
    for runs in (first, second):
        assert runs.results["first"].returncode == 0, _output(runs.results["first"])
    # The oldest run of each (test_pipeline_e2e.py may have run the first pipeline again since).
    a = _json(first, "runs", "list")["runs"][-1]
    [b] = _json(second, "runs", "list")["runs"]
    assert a["pipeline"] == "penguin_serving" and b["pipeline"] == "penguin_small"
    assert a["run_id"] != b["run_id"]
    # They ran at the same time: their runs overlap.
    (a_start, a_end), (b_start, b_end) = _window(a), _window(b)
    assert a_start < b_end and b_start < a_end, (a, b)
    # Each with its own cache: nothing of one was reused by the other, although both read the same CSV content.
    for run in (a, b):
        assert run["state"] == "complete" and {n["state"] for n in run["nodes"]} == {"complete"}, run
    assert a["pushed_version"] and b["pushed_version"]
    # The second pipeline has no ServingValidator (serving_validation=false): no validation to show.
    assert a["serving_validation"] == "passed" and b["serving_validation"] is None
    # Each pipeline's run went through its own model server path: its own model base path.
    assert os.listdir(first.config.serving_model_dir) != [] and os.listdir(second.config.serving_model_dir) != []


def test_a_second_run_of_the_same_pipeline_is_refused_by_the_run_lock(shared_store):
    refused = shared_store.refused
    assert shared_store.first_still_running, "the first run ended before the second was refused: nothing was tested"
    assert refused.returncode == 2, _output(refused)
    assert "Another run holds this pipeline root:" in refused.stderr
    assert "tfxsp-run.lock is locked by another tfxsp run" in " ".join(refused.stderr.split())
    assert "Running pipeline" not in refused.stdout
    # It recorded nothing: every run of that pipeline in the store completed (no failed or abandoned one).
    assert all(r["state"] == "complete" for r in _json(shared_store.first, "runs", "list")["runs"])


def test_each_pipeline_traces_its_own_served_version_to_its_own_data(shared_store):
    for runs in (shared_store.first, shared_store.second):
        trace = _json(runs, "lineage", "served")
        assert runs.config.serving_model_dir in trace["description"]
        [data] = trace["summary"]["data"]
        assert data["path"] == runs.config.data_dir
        models = _json(runs, "models")["models"]
        assert models[0]["served"] is True
        assert {m["version"] for m in models} == set(os.listdir(runs.config.serving_model_dir))
    first, second = (_json(r, "lineage", "served") for r in (shared_store.first, shared_store.second))
    assert not {n["id"] for n in first["nodes"] if n["kind"] == "artifact"} & \
        {n["id"] for n in second["nodes"] if n["kind"] == "artifact"}


def test_no_password_in_any_output_or_log_and_the_summary_names_the_store(shared_store):
    server = shared_store.server
    logs = ""
    for folder, _, files in os.walk(shared_store.first.config.tfx_root):
        logs += "".join(open(os.path.join(folder, f), errors="replace").read() for f in files if f.endswith(".log"))
    outputs = [r.stdout + r.stderr for runs in (shared_store.first, shared_store.second)
               for r in runs.results.values()] + [shared_store.refused.stdout + shared_store.refused.stderr]
    assert server.password not in logs + "".join(outputs)
    # TFX logs the connection config it uses, password field included: there, redacted.
    assert "Using connection config" in logs and 'password: "<redacted>"' in logs
    shown = f"mysql://{server.user}@127.0.0.1:{server.port}/{shared_store.database}"
    for runs in (shared_store.first, shared_store.second):
        assert f"Metadata:     {shown}" in runs.results["first"].stdout


def test_the_store_reads_over_the_unix_socket_too(shared_store):
    url = shared_store.server.url(shared_store.database, via_socket=True)  # password from ?password_file=
    result = shared_store.first.tfxsp("runs", "--metadata-url", url, "--format", "json")
    assert result.returncode == 0, _output(result)
    listed = json.loads(result.stdout)
    assert len(listed["runs"]) >= 1 and listed["store"].startswith("mysql://tfxsp@localhost/shared?unix_socket=")
