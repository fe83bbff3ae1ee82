"""Lineage queries and commands (`tfxsp runs | artifacts | lineage | models`) on ML Metadata stores
written here the way TFX 1.16's LocalDagRunner writes them (same contexts, execution types, exec
properties, event paths, cached executions and Resolver events), and every error case. The store of
`history` is SQLite and a database on a real MariaDB server (the session fixture `mariadb`): every test
that reads it runs on both. The real pipeline's stores are in test_lineage_e2e.py (SQLite) and
test_shared_store.py (MariaDB).
"""
import hashlib
import html.parser
import json
import os
import sqlite3
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd
from tensorboard.summary.writer.record_writer import RecordWriter

from pipeline.cli import console
from pipeline.cli.main import cli
from pipeline.config import ConfigError, load_config, metadata_connection_config
from pipeline.metadata import artifacts as artifacts_api
from pipeline.metadata import lineage, metrics, render
from pipeline.metadata import models as models_api
from pipeline.metadata import runs as runs_api
from pipeline.metadata import store as store_api
from tests.support.mariadb import new_database
from tests.support.processes import run_tfxsp

PIPELINE = "penguin_serving"
STRING, INT, DOUBLE = mlmd.STRING, mlmd.INT, mlmd.DOUBLE
ARTIFACT_TYPES = {
    "Examples": {"span": INT, "version": INT, "split_names": STRING},
    "ExampleStatistics": {"span": INT, "split_names": STRING},
    "Schema": {}, "TransformGraph": {}, "Model": {}, "ModelBlessing": {}, "ModelEvaluation": {},
    "PushedModel": {},
    "tfxsp.ServingValidation": {},
}
TFX = "tfx.components."
# node id, execution type, inputs {key: (producer node, output key)}, outputs {key: type}
NODES = [
    ("CsvExampleGen", TFX + "example_gen.csv_example_gen.component.CsvExampleGen", {},
     {"examples": "Examples"}),
    ("latest_blessed_model_resolver", "tfx.dsl.components.common.resolver.Resolver", {}, {}),
    ("StatisticsGen", TFX + "statistics_gen.component.StatisticsGen",
     {"examples": ("CsvExampleGen", "examples")}, {"statistics": "ExampleStatistics"}),
    ("SchemaGen", TFX + "schema_gen.component.SchemaGen",
     {"statistics": ("StatisticsGen", "statistics")}, {"schema": "Schema"}),
    ("Transform", TFX + "transform.component.Transform",
     {"examples": ("CsvExampleGen", "examples"), "schema": ("SchemaGen", "schema")},
     {"transform_graph": "TransformGraph", "transformed_examples": "Examples"}),
    ("Trainer", TFX + "trainer.component.Trainer",
     {"examples": ("Transform", "transformed_examples"),
      "transform_graph": ("Transform", "transform_graph"), "schema": ("SchemaGen", "schema")},
     {"model": "Model"}),
    ("Evaluator", TFX + "evaluator.component.Evaluator",
     {"examples": ("CsvExampleGen", "examples"), "model": ("Trainer", "model")},
     {"blessing": "ModelBlessing", "evaluation": "ModelEvaluation"}),
    ("Pusher", TFX + "pusher.component.Pusher",
     {"model": ("Trainer", "model"), "model_blessing": ("Evaluator", "blessing")},
     {"pushed_model": "PushedModel"}),
    ("ServingValidator", "components.serving_validation.component.ServingValidator",
     {"pushed_model": ("Pusher", "pushed_model"), "model": ("Trainer", "model"),
      "examples": ("CsvExampleGen", "examples")}, {"validation": "tfxsp.ServingValidation"}),
]
UPSTREAM = ("CsvExampleGen", "StatisticsGen", "SchemaGen", "Transform", "Trainer")


def _value(v):
    if isinstance(v, bool) or isinstance(v, int):
        return mlmd.Value(int_value=int(v))
    if isinstance(v, float):
        return mlmd.Value(double_value=v)
    return mlmd.Value(string_value=v if isinstance(v, str) else json.dumps(v))


def write_metrics(directory, accuracy, count=59):
    """A TFMA metrics file (TFRecord of MetricsForSlice) as the Evaluator writes it."""
    pb2 = metrics._metrics_for_slice_pb2()
    os.makedirs(directory, exist_ok=True)
    records = []
    for column, value, acc in ((None, None, accuracy), ("species", b"Adelie", 1.0)):
        message = pb2.MetricsForSlice()
        if column:
            key = message.slice_key.single_slice_keys.add()
            key.column, key.bytes_value = column, value
        for name, number in (("sparse_categorical_accuracy", acc), ("example_count", count)):
            item = message.metric_keys_and_values.add()
            item.key.name, item.key.model_name = name, "candidate"
            item.value.double_value.value = number
        diff = message.metric_keys_and_values.add()
        diff.key.name, diff.key.model_name, diff.key.is_diff = "sparse_categorical_accuracy", \
            "candidate", True
        diff.value.double_value.value = -0.5
        records.append(message.SerializeToString())
    with open(os.path.join(directory, "metrics-00000-of-00001.tfrecord"), "wb") as f:
        writer = RecordWriter(f)  # TensorBoard's TFRecord writer (lengths and masked CRC32Cs)
        for record in records:
            writer.write(record)


class TfxShapedStore:
    """Writes pipeline runs into an MLMD store with TFX's shapes, one put_execution per node."""

    def __init__(self, root, data_root="/data/penguins", metadata_url="", server=None):
        self.root = str(root)
        self.config = load_config({"tfx_root": self.root, "data_root": data_root, "metadata_url": metadata_url},
                                  environ={})
        self.path = self.config.metadata_path
        self.server = server  # the MariaDB server of a mysql:// store, else None (SQLite)
        self.url = metadata_url or self.path  # what --metadata-url takes
        # What the commands take to read this store.
        self.args = ["--set", f"tfx_root={self.root}"] + (["--set", f"metadata_url={metadata_url}"] if metadata_url
                                                          else [])
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.store = metadata_store.MetadataStore(self.config.metadata_connection_config())
        s = self.store
        self.types = {name: s.put_artifact_type(mlmd.ArtifactType(name=name, properties=props))
                      for name, props in ARTIFACT_TYPES.items()}
        self.exec_types = {node: s.put_execution_type(mlmd.ExecutionType(name=type_name))
                           for node, type_name, _, _ in NODES}
        self.ctx_types = {name: s.put_context_type(mlmd.ContextType(name=name))
                          for name in ("pipeline", "pipeline_run", "node")}
        self.pipeline = self._context("pipeline", PIPELINE)
        self.node_contexts = {node: self._context("node", f"{PIPELINE}.{node}")
                              for node, _, _, _ in NODES}
        self.latest = {}  # (node, output key) -> artifact id of the newest non-cached output
        self.blessed_model = None
        self.runs = []
        self.data_root = data_root
        self.version = 1700000000

    def digest(self):
        """A digest of everything the store holds: the SQLite file's bytes, or MariaDB's CHECKSUM of every table."""
        if self.server is None:
            return _digest(self.path)
        database = self.config.metadata_connection_config().mysql.database
        tables = self.server.sql("SHOW TABLES", database).stdout.split()
        return self.server.sql(f"CHECKSUM TABLE {', '.join(tables)} EXTENDED", database).stdout

    def _context(self, type_name, name):
        context = mlmd.Context(type_id=self.ctx_types[type_name], name=name)
        [context.id] = self.store.put_contexts([context])
        return context

    def add_run(self, *, cached=False, blessed=True, validation="passed", fail=None,
                accuracy=0.97, fingerprint="xor_checksum:1"):
        """One run: upstream cached or executed, then Resolver, Evaluator, Pusher, validator.
        `fail` names a node that fails (nothing after it runs)."""
        index = len(self.runs) + 1
        run = self._context("pipeline_run", f"2026-01-01T00:00:{index:02d}.000000")
        self.store.put_parent_contexts([mlmd.ParentContext(child_id=run.id,
                                                           parent_id=self.pipeline.id)])
        self.runs.append(run.name)
        produced, baseline = {}, None
        for node, _, inputs, outputs in NODES:
            if node == "ServingValidator" and validation is None:
                continue
            execution = mlmd.Execution(type_id=self.exec_types[node])
            state = mlmd.Execution.COMPLETE
            is_cached = cached and node in UPSTREAM
            if is_cached:
                state = mlmd.Execution.CACHED
            if node == fail:
                state = mlmd.Execution.FAILED
            execution.last_known_state = state
            for key, value in self._exec_properties(node, fingerprint).items():
                execution.custom_properties[key].CopyFrom(_value(value))
            pairs = []
            if node == "latest_blessed_model_resolver":
                if self.blessed_model is not None:
                    for key, artifact_id in (("model", self.blessed_model[0]),
                                             ("model_blessing", self.blessed_model[1])):
                        pairs.append(self._ref(artifact_id, Event_(mlmd.Event.INTERNAL_OUTPUT,
                                                                   key)))
                baseline = self.blessed_model[0] if self.blessed_model else None
            input_events = {}
            for key, source in inputs.items():
                input_events.setdefault(produced[source], []).append(key)
            if node == "Evaluator" and baseline is not None:
                input_events.setdefault(baseline, []).append("baseline_model")
            for artifact_id, keys in input_events.items():
                pairs.append(self._ref(artifact_id, Event_(mlmd.Event.INPUT, *keys)))
            new_outputs = []
            if state != mlmd.Execution.FAILED:
                for key, type_name in outputs.items():
                    if is_cached:
                        pairs.append(self._ref(self.latest[(node, key)],
                                               Event_(mlmd.Event.OUTPUT, key)))
                    else:
                        artifact = self._artifact(node, key, type_name, index, blessed, accuracy,
                                                  validation, produced)
                        pairs.append((artifact, Event_(mlmd.Event.OUTPUT, key)))
                        new_outputs.append(key)
            execution_id, artifact_ids, _ = self.store.put_execution(
                execution, pairs, [self.pipeline, run, self.node_contexts[node]],
                reuse_context_if_already_exist=True)
            for (_, event), artifact_id in zip(pairs, artifact_ids):
                if event.type == mlmd.Event.OUTPUT:
                    key = event.path.steps[0].key
                    produced[(node, key)] = artifact_id
                    if key in new_outputs:
                        self.latest[(node, key)] = artifact_id
            if state == mlmd.Execution.FAILED:
                return run.name
        if blessed:
            self.blessed_model = (produced[("Trainer", "model")],
                                  produced[("Evaluator", "blessing")])
        return run.name

    def _ref(self, artifact_id, event):
        [artifact] = self.store.get_artifacts_by_id([artifact_id])
        return artifact, event

    def _exec_properties(self, node, fingerprint):
        if node == "CsvExampleGen":
            return {"input_base": self.data_root, "span": 0,
                    "input_fingerprint": f"split:single_split,num_files:1,{fingerprint}",
                    "input_config": {"splits": [{"name": "single_split", "pattern": "*"}]}}
        if node == "Trainer":
            return {"custom_config": {"epochs": 16, "learning_rate": 0.01, "hidden_units": 16},
                    "train_args": {"num_steps": 800}, "eval_args": {"num_steps": 4},
                    "module_path": "trainer@/runs/_wheels/tfx_user_code_trainer-0.0+abc.whl"}
        if node == "Transform":
            return {"module_path": "transform@/runs/_wheels/tfx_user_code_transform-0.0+abc.whl"}
        if node == "Pusher":
            return {"push_destination": {"filesystem": {
                "base_directory": self.config.serving_model_dir}}}
        return {}

    def _artifact(self, node, key, type_name, index, blessed, accuracy, validation, produced):
        artifact = mlmd.Artifact(type_id=self.types[type_name], state=mlmd.Artifact.LIVE,
                                 uri=os.path.join(self.root, "pipelines", PIPELINE, node, key,
                                                  str(index)))
        custom = artifact.custom_properties
        if type_name == "Examples" and node == "CsvExampleGen":
            artifact.properties["span"].int_value = 0
            artifact.properties["split_names"].string_value = '["train", "eval"]'
        if type_name == "ModelBlessing":
            custom["blessed"].int_value = int(blessed)
        if type_name == "ModelEvaluation":
            write_metrics(artifact.uri, accuracy)
        if type_name == "PushedModel":
            custom["pushed"].int_value = int(blessed)
            if blessed:
                self.version += 1
                destination = os.path.join(self.config.serving_model_dir, str(self.version))
                os.makedirs(destination, exist_ok=True)
                custom["pushed_version"].string_value = str(self.version)
                custom["pushed_destination"].string_value = destination
        if type_name == "tfxsp.ServingValidation":
            custom["blessed"].int_value = int(validation == "passed")
            custom["outcome"].string_value = validation if blessed else "skipped"
            custom["reason"].string_value = (
                "all checks passed" if validation == "passed" else "REST predictions differ")
            if validation == "failed" and blessed:  # the validator rolls the version back
                os.rename(os.path.join(self.config.serving_model_dir, str(self.version)),
                          os.path.join(self.root, f"quarantine-{self.version}"))
        return artifact


def Event_(event_type, *keys):
    event = mlmd.Event(type=event_type)
    for key in keys:
        event.path.steps.add().key = key
        event.path.steps.add().index = 0
    return event


# ------------------------------------------------------------------------------------- fixtures
def _history(root, **store):
    """Four runs: fresh; cached (upstream reused); changed data (all new) whose probe fails and
    is rolled back; a run whose Trainer fails."""
    fake = TfxShapedStore(root, **store)
    fake.add_run(accuracy=0.97)
    fake.add_run(cached=True, accuracy=0.98)
    fake.add_run(fingerprint="xor_checksum:2", validation="failed", accuracy=0.99)
    fake.add_run(fingerprint="xor_checksum:3", fail="Trainer")
    return fake


@pytest.fixture(scope="module")
def sqlite_history(tmp_path_factory):
    return _history(tmp_path_factory.mktemp("mlmd"))


@pytest.fixture(scope="module")
def mariadb_history(tmp_path_factory, mariadb):
    return _history(tmp_path_factory.mktemp("mlmd"), metadata_url=new_database(mariadb, "lineage"), server=mariadb)


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def history(request):
    """The four runs in a SQLite store and in a MariaDB one: every query and command is tested on both."""
    return request.getfixturevalue(f"{request.param}_history")


@pytest.fixture()
def tfxsp(history, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")
    # The one Console of pipeline/cli/console.py read COLUMNS when it was made, in whichever test imported it first.
    monkeypatch.setattr(console.console, "width", 220)
    runner = CliRunner()

    def invoke(*args, store=history):
        return runner.invoke(cli, [*args, *store.args],
                             catch_exceptions=False)
    return invoke


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class CountingStore:
    """Counts the MLMD calls made through it."""

    def __init__(self, store):
        self._store, self.calls = store, []

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if callable(attribute):
            def counted(*args, **kwargs):
                self.calls.append(name)
                return attribute(*args, **kwargs)
            return counted
        return attribute


# ------------------------------------------------------------------------------------------ runs
def test_runs_list_table(tfxsp, history):
    result = tfxsp("runs", "list")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for run in history.runs:
        assert run in out
    assert "4 complete, 5 cached" in out
    assert "failed" in out and "(Trainer)" in out
    assert "1700000001" in out and "1700000002" in out
    # `tfxsp runs` alone lists too, and passes its options on.
    assert tfxsp("runs").stdout.count("2026-01-01T00:00:0") == 4


def test_runs_list_json(tfxsp, history):
    data = _json(tfxsp("runs", "list", "--format", "json"))
    runs = data["runs"]
    assert [r["run_id"] for r in runs] == history.runs[::-1]  # newest first
    first, cached, changed, failed = runs[::-1]
    assert first["state"] == "complete" and first["counts"] == {"complete": 9}
    assert cached["counts"] == {"cached": 5, "complete": 4}
    assert {n["node_id"]: n["state"] for n in cached["nodes"]}["Trainer"] == "cached"
    assert changed["serving_validation"] == "failed" and changed["pushed_version"] == "1700000003"
    assert failed["state"] == "failed" and failed["nodes"][-1] == {
        **failed["nodes"][-1], "node_id": "Trainer", "state": "failed"}
    assert all(isinstance(n["seconds"], float) for r in runs for n in r["nodes"])
    assert _json(tfxsp("runs", "list", "--limit", "2", "--format", "json"))["runs"][0]["run_id"] \
        == history.runs[-1]


def test_runs_show_table_and_json(tfxsp, history):
    result = tfxsp("runs", "show", history.runs[1])
    assert result.exit_code == 0, result.output
    assert "cached" in result.stdout and "Trainer" in result.stdout
    assert "model_blessing: ModelBlessing #" in result.stdout
    assert "Eval (Overall): sparse_categorical_accuracy 0.98" in result.stdout
    assert "Trainer parameters:" in result.stdout and '"num_steps": 800' in result.stdout
    data = _json(tfxsp("runs", "show", "-3", "--format", "json"))
    assert data["run_id"] == history.runs[1]
    trainer = next(n for n in data["nodes"] if n["node_id"] == "Trainer")
    assert trainer["parameters"]["custom_config"]["epochs"] == 16
    assert [o["type"] for o in trainer["outputs"]] == ["Model"]
    evaluator = next(n for n in data["nodes"] if n["node_id"] == "Evaluator")
    # The first run's model is both the candidate and the baseline: one event, two keys.
    assert any(set(i["keys"]) == {"model", "baseline_model"} for i in evaluator["inputs"])
    assert data["metrics"]["Overall"]["sparse_categorical_accuracy"] == pytest.approx(0.98)
    assert data["serving_validation_result"]["outcome"] == "passed"
    # latest, and a unique prefix
    assert _json(tfxsp("runs", "show", "latest", "--format", "json"))["state"] == "failed"
    assert _json(tfxsp("runs", "--format", "json", "show", history.runs[0][:-3]))["run_id"] \
        == history.runs[0]


def test_runs_show_unknown_run(tfxsp):
    result = tfxsp("runs", "show", "1999-nope")
    assert result.exit_code == 2
    assert "No run '1999-nope'" in result.stderr and "tfxsp runs list" in result.stderr
    ambiguous = tfxsp("runs", "show", "2026-01-01")
    assert ambiguous.exit_code == 2 and "ambiguous" in ambiguous.stderr


def test_runs_of_another_pipeline(tfxsp, history):
    result = tfxsp("runs", "list", "--set", "pipeline_name=other", "--metadata-url", history.url)
    assert result.exit_code == 2
    assert "No runs of pipeline 'other'" in result.stderr and "'penguin_serving'" in result.stderr


# ------------------------------------------------------------------------------------- artifacts
def test_artifacts_table_and_json(tfxsp, history):
    counts = _json(tfxsp("artifacts", "--format", "json"))["types"]
    assert counts["Model"] == 2 and counts["PushedModel"] == 3 and counts["Examples"] == 6
    table = tfxsp("artifacts")
    assert table.exit_code == 0 and "tfxsp.ServingValidation" in table.stdout

    result = tfxsp("artifacts", "--type", "model")
    assert result.exit_code == 0, result.output
    assert "Model artifacts" in result.stdout and "Trainer (exec" in result.stdout
    assert "reused by 1 cached run(s)" in result.stdout
    models = _json(tfxsp("artifacts", "--type", "Model", "--format", "json"))["artifacts"]
    assert [m["producer"]["run_id"] for m in models] == [history.runs[2], history.runs[0]]
    assert models[1]["producer"]["reused_by"] == 1 and models[1]["producer"]["state"] == "complete"

    pushed = _json(tfxsp("artifacts", "--type", "pushed-model", "--format", "json"))["artifacts"]
    assert [p["key_properties"]["pushed_version"] for p in pushed] == [
        "1700000003", "1700000002", "1700000001"]
    assert _json(tfxsp("artifacts", "--type", "Examples", "--limit", "1", "--format", "json"))[
        "artifacts"][0]["type"] == "Examples"


def test_artifacts_unknown_type(tfxsp):
    result = tfxsp("artifacts", "--type", "Nope")
    assert result.exit_code == 2
    assert "No artifact type 'Nope'" in result.stderr and "PushedModel" in result.stderr


# ---------------------------------------------------------------------------------------- models
def test_models_table_and_json(tfxsp, history):
    data = _json(tfxsp("models", "--format", "json"))
    models = data["models"]
    assert [m["version"] for m in models] == ["1700000003", "1700000002", "1700000001"]
    rolled_back, served, first = models
    # The third version failed its serving validation and was rolled back: version 2 is served.
    assert data["served_version"] == "1700000002"
    assert served["served"] and served["present"] and served["blessed"]
    assert served["serving_validation"]["outcome"] == "passed"
    assert served["serving_validation"]["blessed"] == 1
    assert served["metrics"]["Overall"]["sparse_categorical_accuracy"] == pytest.approx(0.98)
    assert served["metrics"]["species=Adelie"]["example_count"] == 59
    assert not rolled_back["present"] and not rolled_back["served"]
    assert rolled_back["serving_validation"]["outcome"] == "failed"
    assert served["model_id"] == first["model_id"]  # the cached run pushed the same model again
    assert first["run_id"] == history.runs[0]

    table = tfxsp("models")
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if "1700000002" in line)
    assert "served" in row and "passed" in row and "0.980" in row
    gone = next(line for line in table.stdout.splitlines() if "1700000003" in line)
    assert "gone" in gone and "failed" in gone and "REST predictions differ" in gone
    no_metrics = _json(tfxsp("models", "--no-metrics", "--format", "json"))["models"]
    assert all(m["metrics"] == {} for m in no_metrics)


# --------------------------------------------------------------------------------------- lineage
def test_lineage_served_upstream_json(tfxsp, history):
    data = _json(tfxsp("lineage", "served", "--format", "json"))
    nodes = {n["key"]: n for n in data["nodes"]}
    target = nodes[data["target"]]
    assert target["type"] == "PushedModel"
    assert target["key_properties"]["pushed_version"] == "1700000002"
    assert "served: version 1700000002" in data["description"]
    types = {n["type"] for n in nodes.values()}
    assert {"PushedModel", "ModelBlessing", "Model", "TransformGraph", "Examples", "Schema",
            "ExternalData"} <= types
    assert "tfxsp.ServingValidation" not in types and "ModelEvaluation" not in types
    # The cached Trainer is folded into the run-1 Trainer that it reused.
    trainers = [n for n in nodes.values() if n.get("node_id") == "Trainer"]
    assert len(trainers) == 1 and trainers[0]["state"] == "complete"
    assert trainers[0]["runs"] == [history.runs[0]] and trainers[0]["cached_in"] == \
        [history.runs[1]]
    assert trainers[0]["parameters"]["train_args"] == {"num_steps": 800}
    assert trainers[0]["parameters"]["custom_config"]["learning_rate"] == 0.01
    assert data["summary"]["data"][0]["path"] == "/data/penguins"
    assert "trainer@" in data["summary"]["code"]["Trainer"]
    # Edges carry the input/output keys.
    edges = {(nodes[e["source"]]["type"], nodes[e["target"]].get("node_id"), tuple(e["keys"]))
             for e in data["edges"] if e["kind"] == "input"}
    assert ("TransformGraph", "Trainer", ("transform_graph",)) in edges
    assert ("ModelBlessing", "Pusher", ("model_blessing",)) in edges
    # No Resolver: its INTERNAL_OUTPUT events are not lineage.
    assert not any(n.get("node_id") == "latest_blessed_model_resolver" for n in nodes.values())


def test_lineage_table(tfxsp):
    result = tfxsp("lineage", "served")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("PushedModel #", "Pusher (exec", "ModelBlessing #", "Trainer (exec",
                 "TransformGraph #", "Examples #", "external input", "input_base=/data/penguins",
                 '"num_steps": 800', "Data: /data/penguins", "Code (Trainer):",
                 "reused (cached) by 1 run(s)"):
        assert text in out, text


def test_lineage_downstream_from_examples(tfxsp, history):
    first_examples = min(a.id for a in history.store.get_artifacts_by_type("Examples"))
    data = _json(tfxsp("lineage", str(first_examples), "--downstream", "--format", "json"))
    nodes = {n["key"]: n for n in data["nodes"]}
    pushed = sorted(n["key_properties"]["pushed_version"] for n in nodes.values()
                    if n["type"] == "PushedModel")
    # Runs 1 and 2 (cached) derive from these examples; run 3 (changed data) does not, although
    # its Evaluator compared with run 1's model: that Evaluator is a boundary node, not followed.
    assert pushed == ["1700000001", "1700000002"]
    boundary = [n for n in nodes.values() if n["boundary"]]
    assert [n["node_id"] for n in boundary] == ["Evaluator"]
    assert boundary[0]["runs"] == [history.runs[2]]
    assert {n["type"] for n in nodes.values()} >= {"tfxsp.ServingValidation", "ModelEvaluation"}
    assert "ExternalData" not in {n["type"] for n in nodes.values()}
    follow = _json(tfxsp("lineage", str(first_examples), "--downstream", "--follow-baseline",
                         "--format", "json"))
    assert "1700000003" in {n.get("key_properties", {}).get("pushed_version")
                            for n in follow["nodes"]}


def test_lineage_show_cached_and_both(tfxsp):
    folded = _json(tfxsp("lineage", "served", "--format", "json"))
    shown = _json(tfxsp("lineage", "served", "--show-cached", "--format", "json"))
    cached = [n for n in shown["nodes"] if n.get("state") == "cached"]
    assert {n["node_id"] for n in cached} == set(UPSTREAM)
    assert len(shown["nodes"]) == len(folded["nodes"]) + len(UPSTREAM)
    both = _json(tfxsp("lineage", "served", "--both", "--format", "json"))
    assert {"tfxsp.ServingValidation", "Examples"} <= {n["type"] for n in both["nodes"]}


def test_lineage_targets(tfxsp, history):
    def target(name):
        data = _json(tfxsp("lineage", name, "--format", "json"))
        return next(n for n in data["nodes"] if n["key"] == data["target"])
    assert target("latest-pushed")["key_properties"]["pushed_version"] == "1700000003"
    assert target("version:1700000001")["key_properties"]["pushed_version"] == "1700000001"
    assert target("latest-model")["runs"] == [history.runs[2]]
    assert target("latest-transform-graph")["type"] == "TransformGraph"
    assert target("latest-examples")["type"] == "Examples"
    model = target("latest-model")
    assert target(str(model["id"]))["key"] == model["key"]
    assert target(f"#{model['id']}")["key"] == model["key"]


@pytest.mark.parametrize("args, message", [
    (["99999"], "No artifact with id 99999"),
    (["version:42"], "No pushed version 42"),
    (["latest-nope"], "No artifact type 'nope'"),
    (["whatever"], "Unknown target 'whatever'"),
])
def test_lineage_unknown_targets(tfxsp, args, message):
    result = tfxsp("lineage", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_lineage_served_when_nothing_is_served(tfxsp, history, tmp_path):
    result = tfxsp("lineage", "served", "--set", f"serving_model_base={tmp_path}")
    assert result.exit_code == 2
    assert "Nothing is served from" in result.stderr and "latest-pushed" in result.stderr
    os.makedirs(tmp_path / "penguin" / "123")
    result = tfxsp("lineage", "served", "--set", f"serving_model_base={tmp_path}")
    assert result.exit_code == 2 and "Version 123 in" in result.stderr


# -------------------------------------------------------------------------------------- pictures
class _Balanced(html.parser.HTMLParser):
    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        self.ids |= {v for k, v in attrs if k == "id"}
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.ids |= {v for k, v in attrs if k == "id"}

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


SVG = "{http://www.w3.org/2000/svg}"


def _check_svg(root, expected_nodes):
    assert root.tag == SVG + "svg"
    groups = [g for g in root.iter(SVG + "g") if "node" in g.get("class", "").split()]
    assert len(groups) == expected_nodes
    assert len(list(root.iter(SVG + "path"))) >= expected_nodes - 1  # edges (and the arrow)
    return " ".join(t.text or "" for t in root.iter(SVG + "text"))


def test_lineage_svg_is_written_and_well_formed(tfxsp, tmp_path):
    out = tmp_path / "served.svg"
    result = tfxsp("lineage", "served", "--format", "svg", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.stdout and str(out) in result.stdout.replace("\n", "")
    data = _json(tfxsp("lineage", "served", "--format", "json"))
    text = _check_svg(ET.parse(out).getroot(), len(data["nodes"]))
    for label in ("PushedModel #", "Trainer", "TransformGraph #", "Examples #", "/data/penguins"):
        assert label in text, label


def test_lineage_html_is_self_contained_and_well_formed(tfxsp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = tfxsp("lineage", "served", "--format", "html")  # default file name
    assert result.exit_code == 0, result.output
    [page] = list(tmp_path.glob("lineage-*.html"))
    source = page.read_text()
    parser = _Balanced()
    parser.feed(source)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert "<script" not in source and "http://" not in source.replace(
        "http://www.w3.org/2000/svg", "")
    data = _json(tfxsp("lineage", "served", "--format", "json"))
    svg = source[source.index("<svg"):source.index("</svg>") + len("</svg>")]
    _check_svg(ET.fromstring(svg), len(data["nodes"]))
    # Every node of the picture links to its row in the table.
    assert {f"node-{n['key']}" for n in data["nodes"]} <= parser.ids
    assert '"num_steps": 800' in html.unescape(source)


def test_lineage_dot(tfxsp):
    result = tfxsp("lineage", "served", "--format", "dot")
    assert result.exit_code == 0, result.output
    dot = result.stdout
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    data = _json(tfxsp("lineage", "served", "--format", "json"))
    assert dot.count(" -> ") == len(data["edges"])
    assert dot.count("[label=") == len(data["nodes"]) + len(data["edges"])


def test_picture_escapes_hostile_text(history):
    graph = lineage.trace(store_api.open_store(history.config.metadata_connection_config()),
                          min(a.id for a in history.store.get_artifacts_by_type("Model")))
    node = next(iter(graph.nodes.values()))
    node.label = 'a <b> & "c" \\ \n d'
    ET.fromstring(render.to_svg(graph).split("\n", 1)[1])
    parser = _Balanced()
    parser.feed(render.to_html(graph))
    assert parser.errors == []
    assert '\\"c\\" \\\\' in render.to_dot(graph)


# ----------------------------------------------------------------------------- errors and stores
def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_reading_never_changes_the_store(tfxsp, history):
    before = history.digest()
    for args in (["runs"], ["runs", "show", "latest"], ["artifacts", "--type", "Model"],
                 ["lineage", "served"], ["lineage", "latest-examples", "--downstream"],
                 ["models"]):
        assert tfxsp(*args).exit_code == 0, args
    assert history.digest() == before


def test_missing_store_is_not_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (["runs"], ["artifacts"], ["lineage", "served"], ["models"]):
        result = runner.invoke(cli, [*args, "--set", "tfx_root=nowhere"])
        assert result.exit_code == 2, result.output
        assert "No metadata store" in result.stderr and "does not exist" in result.stderr
    result = runner.invoke(cli, ["runs", "list", "--metadata-url", str(tmp_path / "x.db")])
    assert result.exit_code == 2 and "x.db" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [
    (b"this is a text file, not a database\n", "not a SQLite database"),
    (b"", "an empty file"),
])
def test_corrupt_store(tmp_path, content, message):
    path = tmp_path / "metadata.db"
    path.write_bytes(content)
    for args in (["runs"], ["artifacts"], ["lineage", "served"], ["models"]):
        result = CliRunner().invoke(cli, [*args, "--metadata-url", str(path)])
        assert result.exit_code == 2, result.output
        assert "Corrupt metadata store" in result.stderr and message in result.stderr
    assert path.read_bytes() == content


def test_sqlite_database_that_is_not_mlmd(tmp_path):
    path = tmp_path / "metadata.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    result = CliRunner().invoke(cli, ["runs", "--metadata-url", f"sqlite://{path}"])
    assert result.exit_code == 2
    assert "without ML Metadata's tables" in result.stderr
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["t"]


def test_empty_store(tmp_path):
    path = tmp_path / "metadata.db"
    metadata_store.MetadataStore(metadata_connection_config(f"sqlite://{path}", ""))
    for args in (["runs"], ["artifacts"], ["artifacts", "--type", "Model"], ["lineage", "served"],
                 ["lineage", "1"], ["models"]):
        result = CliRunner().invoke(cli, [*args, "--metadata-url", str(path)])
        assert result.exit_code == 2, (args, result.output)
        assert "Empty metadata store" in result.stderr and "tfxsp run" in result.stderr, args


def test_unwritable_output(tfxsp, tmp_path):
    result = tfxsp("lineage", "served", "--format", "svg", "--output",
                   str(tmp_path / "no" / "such" / "dir.svg"))
    assert result.exit_code == 2 and "Cannot write" in result.stderr


# ---------------------------------------------------------------- connections: MySQL and gRPC
def test_grpc_url_becomes_an_mlmd_client_config():
    config = load_config({"metadata_url": "grpc://mlmd.internal:8080"}, environ={})
    client = config.metadata_connection_config()
    assert isinstance(client, mlmd.MetadataStoreClientConfig)
    assert (client.host, client.port) == ("mlmd.internal", 8080)
    assert store_api.describe_connection(client) == "grpc://mlmd.internal:8080"
    with pytest.raises(ConfigError, match="needs a host and a port"):
        load_config({"metadata_url": "grpc://mlmd.internal"}, environ={})


def test_open_store_reads_without_creating(monkeypatch):
    opened = []

    class FakeStore:
        def __init__(self, config):
            opened.append(config)

        def get_context_types(self):
            return []
    monkeypatch.setattr(store_api.metadata_store, "MetadataStore", FakeStore)
    store_api.open_store(metadata_connection_config("grpc://h:9", ""))
    assert isinstance(opened[0], mlmd.MetadataStoreClientConfig) and opened[0].port == 9
    # A MySQL store is opened for real, after a probe of its server: tests/pipeline/test_metadata_mysql.py.


def test_unreachable_grpc_service(tmp_path):
    result = CliRunner().invoke(cli, ["runs", "--metadata-url", "grpc://127.0.0.1:1"])
    assert result.exit_code == 2
    assert "Cannot read the metadata store at grpc://127.0.0.1:1" in result.stderr


def test_run_store_opens_read_only(sqlite_history):
    """(A MySQL store is opened as the URL's user: its grants decide what it may write.)"""
    store = store_api.open_store(sqlite_history.config.metadata_connection_config())
    with pytest.raises(Exception, match="readonly"):  # MLMD's error class differs by version
        store.put_context_type(mlmd.ContextType(name="written"))


# -------------------------------------------------------------------------------- many runs, fast
def test_queries_are_batched_however_many_runs(tmp_path_factory):
    """The number of MLMD calls of each query does not grow with the number of runs."""
    calls = {}
    for count in (4, 10):
        fake = TfxShapedStore(tmp_path_factory.mktemp(f"runs{count}"))
        for i in range(count):
            fake.add_run(cached=i % 3 != 0, fingerprint=f"xor_checksum:{i // 3}")
        store = CountingStore(store_api.open_store(fake.config.metadata_connection_config()))
        runs = runs_api.list_runs(store, PIPELINE)
        assert len(runs) == count
        artifact, _ = lineage.resolve_target(store, "served", fake.config.serving_model_dir)
        lineage.trace(store, artifact.id)
        models_api.list_models(store, fake.config.serving_model_dir, with_metrics=False)
        artifacts_api.list_artifacts(store, "Model", limit=None)
        runs_api.show_run(store, PIPELINE, "latest")
        calls[count] = len(store.calls)
    assert calls[10] == calls[4] < 45, calls


def test_text_with_brackets_is_shown_as_it_is(tmp_path, monkeypatch):
    """Paths and properties are data, not rich markup: '[v2]' stays in the table."""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(console.console, "width", 250)
    fake = TfxShapedStore(tmp_path, data_root="/data/[v2]/penguins")
    fake.add_run()
    result = CliRunner().invoke(cli, ["lineage", "served", "--set", f"tfx_root={fake.root}"])
    assert result.exit_code == 0, result.output
    assert "input_base=/data/[v2]/penguins" in result.stdout
    assert "Data: /data/[v2]/penguins" in result.stdout


@pytest.mark.parametrize("command", [["runs"], ["models"], ["artifacts", "--type", "Model"], ["runs", "show", "-1"]])
def test_tables_stay_readable_in_80_columns_and_in_a_pipe(history, command, tmp_path):
    """Piped (as here) or in an 80-column terminal: no header or cell is cut; what does not fit is left out, and
    the table says so."""
    result = run_tfxsp([*command, *history.args], cwd=tmp_path, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(line for line in lines if len(line) > 80)
    assert "…" not in result.stdout.split("Trainer parameters:")[0]
    header = next(line for line in lines if line.startswith(("  Run ", "  Version ", "  Id ", "  Node ")))
    hidden = next((line for line in lines if line.startswith("Not shown at this width:")), "")
    expected = {"runs": ("Run", "State", "Blessed", "Pushed"), "models": ("Version", "Served", "Blessed"),
                "artifacts": ("Id", "Created", "Produced by"), "show": ("Node", "State", "Time")}
    for column in expected["show" if "show" in command else command[0]]:
        assert f" {column} " in f" {header} ", (column, header)
    if command == ["runs"]:
        assert "Nodes" in hidden  # the widest column gives way first


def test_wide_terminals_show_every_column(history, tmp_path):
    result = run_tfxsp(["runs", *history.args], cwd=tmp_path, env={"COLUMNS": "200"})
    assert "Nodes" in result.stdout and "Serving validation" in result.stdout
    assert "Not shown at this width" not in result.stdout
