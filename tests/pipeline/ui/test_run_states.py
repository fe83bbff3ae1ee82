"""The run page of a run in progress and of a failed run, on a real ML Metadata store written here the way TFX's
local orchestrator writes one (pipeline, pipeline_run and node contexts; a RUNNING execution while a node runs; a
FAILED one with its ExecutionResult in `__execution_result__`), and a run log as `tfxsp run` writes it."""
import datetime
import json
import time

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.config import load_config
from tests.support.dashboard import Dashboard

ERROR = "ValueError: the label column 'species' has no values in the eval split"


def _write_run(store, types, pipeline, name, states):
    run = mlmd.Context(type_id=types["pipeline_run"], name=name)
    [run.id] = store.put_contexts([run])
    store.put_parent_contexts([mlmd.ParentContext(child_id=run.id, parent_id=pipeline.id)])
    for node_id, state in states:
        node = store.get_context_by_type_and_name("node", f"{pipeline.name}.{node_id}")
        if node is None:
            node = mlmd.Context(type_id=types["node"], name=f"{pipeline.name}.{node_id}")
            [node.id] = store.put_contexts([node])
        execution = mlmd.Execution(type_id=types[node_id], last_known_state=state)
        if state == mlmd.Execution.FAILED:
            execution.custom_properties["__execution_result__"].string_value = json.dumps(
                {"resultMessage": ERROR, "code": 2})
        store.put_execution(execution, [], [pipeline, run, node])
        time.sleep(0.01)


@pytest.fixture
def config(tmp_path):
    config = load_config({"tfx_root": str(tmp_path / "runs")}, environ={})
    (tmp_path / "runs" / "pipelines" / config.pipeline_name / "logs").mkdir(parents=True)
    connection = mlmd.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata_path
    connection.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(connection)
    types = {name: store.put_context_type(mlmd.ContextType(name=name)) for name in ("pipeline", "pipeline_run",
                                                                                    "node")}
    for component in ("CsvExampleGen", "Trainer"):
        types[component] = store.put_execution_type(mlmd.ExecutionType(name=f"tfx.components.{component}"))
    pipeline = mlmd.Context(type_id=types["pipeline"], name=config.pipeline_name)
    [pipeline.id] = store.put_contexts([pipeline])
    # The log `tfxsp run` writes, named by the local time the run started (a little before its first execution).
    started = datetime.datetime.now() - datetime.timedelta(seconds=30)
    log = tmp_path / "runs" / "pipelines" / config.pipeline_name / "logs" / started.strftime("run-%Y%m%d-%H%M%S.log")
    log.write_text("\n".join(["INFO:absl:Running CsvExampleGen", *[f"INFO:absl:line {i}" for i in range(40)],
                              "ERROR:absl:Trainer failed", "Traceback (most recent call last):",
                              '  File "trainer.py", line 12, in run_fn', f"    raise {ERROR}", ERROR,
                              "INFO:absl:Cleaning up"]) + "\n")
    _write_run(store, types, pipeline, "run-failed", [("CsvExampleGen", mlmd.Execution.COMPLETE),
                                                      ("Trainer", mlmd.Execution.FAILED)])
    _write_run(store, types, pipeline, "run-live", [("CsvExampleGen", mlmd.Execution.COMPLETE),
                                                    ("Trainer", mlmd.Execution.RUNNING)])
    return config


@pytest.fixture
def dashboard(config):
    served = Dashboard(config)
    yield served
    served.close()


def test_a_failed_node_shows_its_error_and_the_log_lines_around_it(dashboard):
    status, _, text, _ = dashboard.get("/api/runs/run-failed")
    data = json.loads(text)
    assert status == 200 and data["state"] == "failed"
    [failure] = data["failures"]
    assert failure["node_id"] == "Trainer" and failure["message"] == ERROR
    assert failure["log_path"].endswith(".log") and "Traceback (most recent call last):" in failure["log_lines"]
    assert failure["log_lines"][-2:] == [ERROR, "INFO:absl:Cleaning up"] and "INFO:absl:line 39" in \
        failure["log_lines"]
    status, _, page, _ = dashboard.get("/runs/run-failed")
    assert status == 200 and "Trainer failed." in page and "raise ValueError" in page
    assert "#dc2626" in page  # the failed node's frame
    assert "setTimeout" not in page


def test_a_run_in_progress_shows_its_running_node_and_refreshes_itself(dashboard):
    status, _, text, _ = dashboard.get("/api/runs/run-live")
    data = json.loads(text)
    assert status == 200 and data["state"] == "running"
    assert {n["node_id"]: n["state"] for n in data["nodes"]} == {"CsvExampleGen": "complete", "Trainer": "running"}
    status, _, page, _ = dashboard.get("/runs/run-live")
    assert "this page refreshes itself" in page and "window.location.reload" in page
    assert "#d97706" in page  # the running node's frame
    status, _, text, _ = dashboard.get("/api/runs")
    assert [r["run_id"] for r in json.loads(text)["runs"]] == ["run-live", "run-failed"]


def test_a_run_that_no_process_runs_any_more_is_abandoned_and_does_not_refresh(dashboard, config):
    from pipeline.runners import run_lock
    with run_lock.RunLock(config.pipeline_root):  # a later tfxsp run holds the lock: run-live's process is gone
        pass
    status, _, text, _ = dashboard.get("/api/runs/run-live")
    assert json.loads(text)["state"] == "abandoned"
    assert "setTimeout" not in dashboard.get("/runs/run-live")[2]
