"""Lineage from ML Metadata alone: what each run did, which artifacts exist, and which data, code
and parameters produced a model (or what a dataset went on to produce).

    store = open_store(config.metadata_connection_config())      # read-only; never creates one
    list_runs(store, "penguin_serving")                          # per-node state and duration
    list_artifacts(store, "Model")                               # key properties, producer
    artifact, label = resolve_target(store, "served", config)    # or an id, "latest-model", ...
    graph = trace(store, artifact.id, "upstream")                # typed nodes and edges
    to_svg(graph), to_html(graph), to_dot(graph), graph.to_dict()
    list_models(store, config)                                   # pushed versions, blessing, ...

Every query is batched: a listing costs a handful of MLMD calls however many runs the store holds
(never one call per execution or artifact; one per 100 executions where MLMD caps a call), and a
trace is one `get_lineage_subgraph` call per direction (plus one batched look-up of the producers
of the artifacts at its edge).

Two rules shape a trace, both switchable:
* A cached execution (state CACHED) re-publishes the outputs of the execution it reused. It is
  folded into that execution, which then lists the runs that reused it (`show_cached=True` keeps
  it as a node of its own).
* The Evaluator's `baseline_model` input is the previously blessed model it was compared with.
  It gated the blessing but did not produce the model, so the trace shows it as a boundary node
  and does not follow it further (`follow_baseline=True` follows it).
"""
from __future__ import annotations

import dataclasses
import datetime
import html
import importlib
import importlib.util
import json
import os
import struct
import sys
from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import escape as _xml_escape

from ml_metadata import errors as mlmd_errors
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline import run_report
from pipeline.config import MetadataConnection, PipelineConfig

Event = mlmd.Event
_INPUT_EVENTS = (Event.INPUT, Event.DECLARED_INPUT)
_OUTPUT_EVENTS = (Event.OUTPUT, Event.DECLARED_OUTPUT, Event.PENDING_OUTPUT)
# Input keys through which an execution only compares with an earlier artifact (it did not derive
# its outputs from it): the Evaluator's baseline model, chosen by the latest-blessed Resolver.
BASELINE_KEYS = frozenset({"baseline_model"})
MAX_HOPS = 64  # a pipeline of N components is at most 2N hops deep; this is a generous bound
SQLITE_MAGIC = b"SQLite format 3\x00"


# ====================================================================================== errors
class LineageError(Exception):
    """A question the store cannot answer; the message says why and what to do."""


class StoreNotFoundError(LineageError):
    """The SQLite file does not exist (and will not be created by a read)."""


class CorruptStoreError(LineageError):
    """The file exists but is not a readable ML Metadata store."""


class EmptyStoreError(LineageError):
    """A valid store that records nothing yet."""


class NotFoundError(LineageError):
    """An unknown artifact id, run, type or shortcut."""


# ================================================================================ opening a store
def describe_connection(connection: MetadataConnection) -> str:
    """Where a connection points, for messages (never includes a password)."""
    if isinstance(connection, mlmd.MetadataStoreClientConfig):
        return f"grpc://{connection.host}:{connection.port}"
    if connection.HasField("mysql"):
        m = connection.mysql
        return f"mysql://{m.host}:{m.port or 3306}/{m.database}"
    return connection.sqlite.filename_uri


def open_store(connection: MetadataConnection) -> metadata_store.MetadataStore:
    """Opens an existing store to read it.

    SQLite: the file must exist and is opened READONLY, so a read never creates an empty store or
    changes one. MySQL: the database is not created (`skip_db_creation`). The MLMD gRPC service
    (a MetadataStoreClientConfig) is used as it is. Raises a LineageError subclass with a message
    for a person when the store is missing, corrupt or unreachable.
    """
    where = describe_connection(connection)
    if isinstance(connection, mlmd.MetadataStoreClientConfig):
        config: MetadataConnection = mlmd.MetadataStoreClientConfig()
        config.CopyFrom(connection)
    else:
        config = mlmd.ConnectionConfig()
        config.CopyFrom(connection)
        if config.HasField("mysql"):
            config.mysql.skip_db_creation = True
        elif config.HasField("sqlite") or not config.HasField("fake_database"):
            _check_sqlite_file(config.sqlite.filename_uri)
            config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READONLY
    try:
        store = metadata_store.MetadataStore(config)
        store.get_context_types()  # a store that cannot answer this cannot answer anything
    except Exception as e:
        reason = str(e).replace("Error when executing query: ", "", 1)
        reason = reason.split(" query:", 1)[0].strip().rstrip(".")
        if isinstance(config, mlmd.ConnectionConfig) and config.HasField("sqlite"):
            if "readonly database" in reason:
                reason = "it is a SQLite database without ML Metadata's tables"
            elif "not a database" in reason:
                reason = "it is not a SQLite database"
            raise CorruptStoreError(f"{where} is not a readable ML Metadata store: {reason}.") \
                from None
        raise LineageError(f"Cannot read the metadata store at {where}: {reason}") from None
    return store


def _check_sqlite_file(path: str) -> None:
    if not path:
        raise StoreNotFoundError("No SQLite metadata store is configured (empty filename).")
    if not os.path.exists(path):
        raise StoreNotFoundError(
            f"No metadata store at {path}: the file does not exist. Run the pipeline first "
            "(tfxsp run), or point at an existing store with --metadata-url or "
            "--set tfx_root=... (nothing was created).")
    if os.path.isdir(path):
        raise CorruptStoreError(f"{path} is a directory, not an ML Metadata store.")
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise CorruptStoreError(f"{path} cannot be read: {e.strerror}.") from None
    if header != SQLITE_MAGIC:
        what = "an empty file" if not header else "not a SQLite database"
        raise CorruptStoreError(f"{path} is not an ML Metadata store: it is {what}.")


def require_not_empty(store: metadata_store.MetadataStore, where: str = "") -> None:
    one = metadata_store.ListOptions(limit=1)
    if not (store.get_contexts(list_options=one) or store.get_artifacts(list_options=one)
            or store.get_executions(list_options=one)):
        raise EmptyStoreError(
            f"The metadata store{' at ' + where if where else ''} is empty: no pipeline has run "
            "against it yet. Run the pipeline first (tfxsp run).")


# =============================================================================== property values
def value_of(value: mlmd.Value) -> Any:
    """An MLMD property value as plain Python; JSON objects and lists held in strings (TFX's exec
    properties: custom_config, train_args, ...) are decoded."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        if text[:1] in ("{", "[") or text == "null":
            try:
                return json.loads(text)
            except ValueError:
                pass
        return text
    if kind in ("int_value", "double_value", "bool_value"):
        return getattr(value, kind)
    if kind in ("struct_value", "proto_value"):
        from google.protobuf import json_format
        return json_format.MessageToDict(getattr(value, kind))
    return None


def properties_of(node: Any) -> dict[str, Any]:
    """Properties and custom properties of an artifact, execution or context, merged."""
    merged = {k: value_of(v) for k, v in node.custom_properties.items()}
    merged.update({k: value_of(v) for k, v in node.properties.items()})
    return dict(sorted(merged.items()))


# What a person needs to tell artifacts of a type apart; other properties are in the JSON.
KEY_PROPERTIES = {
    "Examples": ("span", "version", "split_names"),
    "ExampleStatistics": ("span", "split_names"),
    "ExampleAnomalies": ("span", "split_names"),
    "PushedModel": ("pushed", "pushed_version", "pushed_destination"),
    "ModelBlessing": ("blessed", "current_model_id", "baseline_model_id"),
    "InfraBlessing": ("blessed",),
    "tfxsp.ServingValidation": ("blessed", "outcome", "probed_version", "reason", "rolled_back"),
}
_NOISE = frozenset({"tfx_version", "is_external", "state", "name", "producer_component",
                    "stats_dashboard_link", "sample_rate_by_split"})


def key_properties(type_name: str, properties: dict[str, Any]) -> dict[str, Any]:
    wanted = KEY_PROPERTIES.get(type_name)
    if wanted is None:
        return {k: v for k, v in properties.items() if k not in _NOISE}
    return {k: properties[k] for k in wanted if k in properties}


def _state(execution: mlmd.Execution) -> str:
    return run_report._STATE_NAMES.get(execution.last_known_state, "unknown")


def _artifact_state(artifact: mlmd.Artifact) -> str:
    return mlmd.Artifact.State.Name(artifact.state).lower()


def iso(ms: int) -> str | None:
    """Milliseconds since the epoch as local ISO time (seconds precision)."""
    if not ms:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000).isoformat(timespec="seconds")


def _short_type(execution_type: str) -> str:
    return execution_type.rsplit(".", 1)[-1]


@dataclasses.dataclass
class _ExecutionInfo:
    node_id: str
    run_ids: list[str]
    pipeline: str = ""


def _execution_infos(store: metadata_store.MetadataStore, execution_ids: Iterable[int]
                     ) -> dict[int, _ExecutionInfo]:
    """Node id and run names of executions: batched through run_report.execution_contexts."""
    contexts = run_report.execution_contexts(store, list(execution_ids))
    run_context_ids = sorted({r for _, runs in contexts.values() for r in runs})
    names = {c.id: c.name for c in store.get_contexts_by_id(run_context_ids)} \
        if run_context_ids else {}
    return {e: _ExecutionInfo(node_id=node, run_ids=[names.get(r, str(r)) for r in runs])
            for e, (node, runs) in contexts.items()}


# ========================================================================================= runs
@dataclasses.dataclass
class RunSummary:
    run_id: str
    context_id: int
    pipeline: str
    started_ms: int
    seconds: float
    state: str  # complete | failed | running
    nodes: list[run_report.NodeResult]
    blessed: bool | None = None
    pushed_version: str | None = None
    serving_validation: str | None = None  # passed | failed | skipped

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.state] = counts.get(node.state, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "pipeline": self.pipeline, "started": iso(self.started_ms),
            "seconds": round(self.seconds, 3), "state": self.state, "counts": self.counts(),
            "blessed": self.blessed, "pushed_version": self.pushed_version,
            "serving_validation": self.serving_validation,
            "nodes": [{"node_id": n.node_id, "state": n.state, "seconds": round(n.seconds, 3),
                       "execution_id": n.execution_id, "started": iso(n.started_ms)}
                      for n in self.nodes],
        }


def _pipeline_run_contexts(store: metadata_store.MetadataStore, pipeline_name: str
                           ) -> list[mlmd.Context]:
    runs = run_report.pipeline_runs(store, pipeline_name)
    if runs:
        return runs
    require_not_empty(store)
    pipelines = sorted(c.name for c in store.get_contexts_by_type("pipeline"))
    if not pipelines:
        raise EmptyStoreError("The metadata store records no pipeline runs yet. Run the pipeline "
                              "first (tfxsp run).")
    raise NotFoundError(f"No runs of pipeline {pipeline_name!r} in this metadata store; it records "
                        f"{', '.join(map(repr, pipelines))} (choose one with "
                        "--set pipeline_name=NAME).")


def _summaries(store: metadata_store.MetadataStore, pipeline_name: str,
               runs: list[mlmd.Context]) -> list[RunSummary]:
    results = run_report.node_results(store, runs)
    summaries = []
    for run in runs:
        nodes = results.get(run.id, [])
        started = min((n.started_ms for n in nodes), default=run.create_time_since_epoch)
        ended = max((n.started_ms + n.seconds * 1000 for n in nodes), default=started)
        states = {n.state for n in nodes}
        state = ("failed" if "failed" in states else
                 "running" if states & {"running", "new"} else "complete")
        summaries.append(RunSummary(run_id=run.name, context_id=run.id, pipeline=pipeline_name,
                                    started_ms=started, seconds=max(0.0, (ended - started) / 1000),
                                    state=state, nodes=nodes))
    _fill_outcomes(store, summaries)
    return summaries


_OUTCOME_TYPES = ("ModelBlessing", "PushedModel", "tfxsp.ServingValidation")


def _outputs_of_types(store: metadata_store.MetadataStore, execution_ids: list[int],
                      type_names: Iterable[str]) -> list[tuple[int, mlmd.Artifact]]:
    """(execution id, artifact) for the outputs of these executions that have one of the types:
    one call for the events, one per 500 artifacts for the artifacts."""
    if not execution_ids:
        return []
    events = [e for e in store.get_events_by_execution_ids(execution_ids)
              if e.type in _OUTPUT_EVENTS]
    ids = sorted({e.artifact_id for e in events})
    types = ", ".join(f"'{t}'" for t in type_names)
    artifacts: dict[int, mlmd.Artifact] = {}
    for start in range(0, len(ids), 500):
        chunk = ", ".join(map(str, ids[start:start + 500]))
        for artifact in store.get_artifacts(list_options=metadata_store.ListOptions(
                filter_query=f"type IN ({types}) AND id IN ({chunk})")):
            artifacts[artifact.id] = artifact
    return [(e.execution_id, artifacts[e.artifact_id]) for e in events
            if e.artifact_id in artifacts]


def _fill_outcomes(store: metadata_store.MetadataStore, summaries: list[RunSummary]) -> None:
    """Blessing, pushed version and serving validation of each run, batched over all runs."""
    run_of = {n.execution_id: s for s in summaries for n in s.nodes}
    for execution_id, artifact in _outputs_of_types(store, list(run_of), _OUTCOME_TYPES):
        summary = run_of[execution_id]
        props = artifact.custom_properties
        if artifact.type == "ModelBlessing" and "blessed" in props:
            summary.blessed = bool(props["blessed"].int_value)
        elif artifact.type == "PushedModel" and props.get("pushed") and props["pushed"].int_value:
            summary.pushed_version = props["pushed_version"].string_value
        elif artifact.type == "tfxsp.ServingValidation":
            outcome = (artifact.properties.get("outcome")
                       or artifact.custom_properties.get("outcome"))
            summary.serving_validation = outcome.string_value if outcome else None


def list_runs(store: metadata_store.MetadataStore, pipeline_name: str,
              limit: int | None = None) -> list[RunSummary]:
    """The pipeline's runs, newest first (the newest `limit` of them), with per-node state and
    duration, blessing and pushed version."""
    runs = _pipeline_run_contexts(store, pipeline_name)
    runs = list(reversed(runs))[:limit] if limit else list(reversed(runs))
    return _summaries(store, pipeline_name, runs)


def find_run(store: metadata_store.MetadataStore, pipeline_name: str, run: str) -> mlmd.Context:
    """A run by its id (the pipeline_run context name), a unique prefix of it, `latest`, or its
    position from the newest: -1 (newest), -2, ..."""
    runs = _pipeline_run_contexts(store, pipeline_name)
    if run in ("latest", "last"):
        return runs[-1]
    if run.startswith("-") and run[1:].isdigit():
        position = int(run)
        if -len(runs) <= position <= -1:
            return runs[position]
        raise NotFoundError(f"Run {run}: the pipeline has {len(runs)} run(s).")
    exact = [r for r in runs if r.name == run]
    matches = exact or [r for r in runs if r.name.startswith(run)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise NotFoundError(f"Run {run!r} is ambiguous: {len(matches)} runs start with it "
                            f"({', '.join(r.name for r in matches[:5])}...).")
    raise NotFoundError(f"No run {run!r} of pipeline {pipeline_name!r}. The newest runs: "
                        f"{', '.join(r.name for r in runs[-3:][::-1])} (see tfxsp runs list).")


@dataclasses.dataclass
class ArtifactRef:
    id: int
    type: str
    uri: str
    keys: list[str]
    properties: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "uri": self.uri, "keys": self.keys,
                "properties": key_properties(self.type, self.properties)}


@dataclasses.dataclass
class RunDetail:
    summary: RunSummary
    inputs: dict[int, list[ArtifactRef]]  # execution id -> its input artifacts
    outputs: dict[int, list[ArtifactRef]]
    parameters: dict[int, dict[str, Any]]
    metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    serving_validation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        result = self.summary.to_dict()
        for node in result["nodes"]:
            execution_id = node["execution_id"]
            node["inputs"] = [a.to_dict() for a in self.inputs.get(execution_id, [])]
            node["outputs"] = [a.to_dict() for a in self.outputs.get(execution_id, [])]
            node["parameters"] = self.parameters.get(execution_id, {})
        result["metrics"] = self.metrics
        result["serving_validation_result"] = self.serving_validation
        return result


def show_run(store: metadata_store.MetadataStore, pipeline_name: str, run: str) -> RunDetail:
    """One run: every node's state, duration, parameters, inputs and outputs, and its metrics."""
    context = find_run(store, pipeline_name, run)
    [summary] = _summaries(store, pipeline_name, [context])
    execution_ids = [n.execution_id for n in summary.nodes]
    executions = {e.id: e for e in store.get_executions_by_id(execution_ids)}
    events = store.get_events_by_execution_ids(execution_ids)
    artifacts = {a.id: a for a in store.get_artifacts_by_id(sorted({e.artifact_id
                                                                    for e in events}))}
    detail = RunDetail(summary=summary, inputs={}, outputs={},
                       parameters={i: properties_of(e) for i, e in executions.items()})
    for event in sorted(events, key=lambda e: e.artifact_id):
        artifact = artifacts.get(event.artifact_id)
        if artifact is None:
            continue
        side = (detail.inputs if event.type in _INPUT_EVENTS else
                detail.outputs if event.type in _OUTPUT_EVENTS else None)
        if side is None:
            continue
        side.setdefault(event.execution_id, []).append(ArtifactRef(
            id=artifact.id, type=artifact.type, uri=artifact.uri, keys=event_keys(event),
            properties=properties_of(artifact)))
        if event.type in _OUTPUT_EVENTS and artifact.type == "ModelEvaluation":
            detail.metrics = eval_metrics(artifact.uri)
        if event.type in _OUTPUT_EVENTS and artifact.type == "tfxsp.ServingValidation":
            detail.serving_validation = properties_of(artifact)
    return detail


# ==================================================================================== artifacts
@dataclasses.dataclass
class ArtifactInfo:
    id: int
    type: str
    uri: str
    state: str
    created_ms: int
    properties: dict[str, Any]
    producer: dict[str, Any] | None = None  # execution_id, node_id, run_id, state, reused_by

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "uri": self.uri, "state": self.state,
                "created": iso(self.created_ms), "properties": self.properties,
                "key_properties": key_properties(self.type, self.properties),
                "producer": self.producer}


def artifact_type_counts(store: metadata_store.MetadataStore) -> dict[str, int]:
    """Artifacts per type name (types with none are left out)."""
    require_not_empty(store)
    counts: dict[str, int] = {}
    for artifact in store.get_artifacts():
        counts[artifact.type] = counts.get(artifact.type, 0) + 1
    return dict(sorted(counts.items()))


def resolve_type_name(store: metadata_store.MetadataStore, name: str) -> str:
    """The store's artifact type named `name`, case-insensitively; 'pushed-model' and
    'pushed_model' find PushedModel."""
    types = [t.name for t in store.get_artifact_types()]
    wanted = name.replace("-", "").replace("_", "").lower()
    for type_name in types:
        if type_name.lower() == wanted or type_name.replace("_", "").lower() == wanted:
            return type_name
    if not types:
        require_not_empty(store)
    raise NotFoundError(f"No artifact type {name!r} in this metadata store. Known types: "
                        f"{', '.join(sorted(types)) or 'none'}.")


def _producers(store: metadata_store.MetadataStore, artifact_ids: list[int]
               ) -> dict[int, dict[str, Any]]:
    """artifact id -> the execution that produced it (its original, not a cached reuse), with
    node id, run and how many cached executions re-published it. Three batched calls."""
    if not artifact_ids:
        return {}
    events = [e for e in store.get_events_by_artifact_ids(artifact_ids)
              if e.type in _OUTPUT_EVENTS]
    executions = {e.id: e for e in store.get_executions_by_id(sorted({e.execution_id
                                                                      for e in events}))}
    infos = _execution_infos(store, executions)
    by_artifact: dict[int, list[mlmd.Execution]] = {}
    for event in events:
        if event.execution_id in executions:
            by_artifact.setdefault(event.artifact_id, []).append(executions[event.execution_id])
    producers = {}
    for artifact_id, candidates in by_artifact.items():
        candidates.sort(key=lambda e: (e.last_known_state == mlmd.Execution.CACHED,
                                       e.create_time_since_epoch, e.id))
        original = candidates[0]
        info = infos.get(original.id, _ExecutionInfo("", []))
        producers[artifact_id] = {
            "execution_id": original.id, "node_id": info.node_id or _short_type(original.type),
            "component": _short_type(original.type), "run_id": (info.run_ids or [None])[0],
            "state": _state(original),
            "reused_by": sum(1 for e in candidates[1:] if e.last_known_state
                             == mlmd.Execution.CACHED)}
    return producers


def _newest_first(artifacts: Iterable[mlmd.Artifact]) -> list[mlmd.Artifact]:
    return sorted(artifacts, key=lambda a: (a.create_time_since_epoch, a.id), reverse=True)


def list_artifacts(store: metadata_store.MetadataStore, type_name: str,
                   limit: int | None = 50) -> list[ArtifactInfo]:
    """Artifacts of a type, newest first, with their properties and producer."""
    type_name = resolve_type_name(store, type_name)
    artifacts = _newest_first(store.get_artifacts_by_type(type_name))
    artifacts = artifacts[:limit] if limit else artifacts
    producers = _producers(store, [a.id for a in artifacts])
    return [ArtifactInfo(id=a.id, type=a.type, uri=a.uri, state=_artifact_state(a),
                         created_ms=a.create_time_since_epoch, properties=properties_of(a),
                         producer=producers.get(a.id)) for a in artifacts]


# ============================================================================ evaluation metrics
_METRICS_PROTO = None


def _metrics_for_slice_pb2():
    """TFMA's MetricsForSlice message without importing TFMA (which imports TensorFlow, ~5 s):
    its generated module depends on protobuf alone, so it is loaded from its file when TFMA is
    not imported yet."""
    global _METRICS_PROTO
    if _METRICS_PROTO is None:
        name = "tensorflow_model_analysis.proto.metrics_for_slice_pb2"
        if name in sys.modules or "tensorflow_model_analysis" in sys.modules:
            _METRICS_PROTO = importlib.import_module(name)
        else:
            spec = importlib.util.find_spec("tensorflow_model_analysis")
            path = os.path.join(spec.submodule_search_locations[0], "proto",
                                "metrics_for_slice_pb2.py")
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            sys.modules[name] = module
            _METRICS_PROTO = module
    return _METRICS_PROTO


def _tfrecords(path: str) -> Iterable[bytes]:
    """The records of an uncompressed TFRecord file (length, crc, data, crc)."""
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            f.read(4)
            if len(data) < length:
                raise ValueError(f"truncated record in {path}")
            yield data


def _slice_value(single) -> Any:
    kind = single.WhichOneof("kind")
    value = getattr(single, kind) if kind else ""
    return value.decode() if isinstance(value, bytes) else value


def eval_metrics(eval_uri: str) -> dict[str, dict[str, float]]:
    """slice ('Overall', 'species=Adelie', ...) -> metric name -> value of the candidate model,
    read from the Evaluator's output without TensorFlow. {} when there is none."""
    try:
        files = sorted(f for f in os.listdir(eval_uri) if f.startswith("metrics"))
    except OSError:
        return {}
    try:
        pb2 = _metrics_for_slice_pb2()
        metrics: dict[str, dict[str, float]] = {}
        for name in files:
            for record in _tfrecords(os.path.join(eval_uri, name)):
                message = pb2.MetricsForSlice.FromString(record)
                slice_name = ", ".join(f"{s.column}={_slice_value(s)}"
                                       for s in message.slice_key.single_slice_keys) or "Overall"
                for item in message.metric_keys_and_values:
                    key = item.key
                    if key.is_diff or key.model_name not in ("", "candidate") \
                            or key.HasField("sub_key") or not item.value.HasField("double_value"):
                        continue
                    metrics.setdefault(slice_name, {})[key.name] = item.value.double_value.value
        return dict(sorted(metrics.items(), key=lambda kv: (kv[0] != "Overall", kv[0])))
    except Exception:
        try:
            accuracy = run_report._accuracy_by_slice(eval_uri)
        except Exception:
            return {}
        return {slice_name: {"sparse_categorical_accuracy": value}
                for slice_name, value in accuracy.items()}


# ======================================================================================= models
@dataclasses.dataclass
class ModelVersion:
    version: str | None
    pushed: bool
    destination: str | None
    present: bool  # the version folder exists in the model base path
    served: bool  # the highest version there: the one TF Serving serves
    pushed_model_id: int
    created_ms: int
    run_id: str | None = None
    model_id: int | None = None
    blessing_id: int | None = None
    blessed: bool | None = None
    evaluation_id: int | None = None
    evaluation_uri: str | None = None
    metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    serving_validation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        result = dataclasses.asdict(self)
        result["created"] = iso(result.pop("created_ms"))
        return result


def served_version(config: PipelineConfig) -> str | None:
    """The version TF Serving serves from the model base path: its highest numbered folder."""
    try:
        versions = [d for d in os.listdir(config.serving_model_dir)
                    if d.isdigit() and os.path.isdir(os.path.join(config.serving_model_dir, d))]
    except OSError:
        return None
    return max(versions, key=int) if versions else None


def _version_present(destination: str) -> bool:
    if not destination:
        return False
    if "://" in destination:  # a remote filesystem: trust the record
        return True
    return os.path.isdir(destination)


def list_models(store: metadata_store.MetadataStore, config: PipelineConfig, *,
                include_unpushed: bool = False, with_metrics: bool = True) -> list[ModelVersion]:
    """Pushed model versions, newest first, each with its model, blessing, evaluation metrics and
    serving validation (when the pipeline has a ServingValidator). About eight MLMD calls."""
    require_not_empty(store)
    query = "type = 'PushedModel'"
    if not include_unpushed:
        query += " AND custom_properties.pushed.int_value = 1"
    pushed = _newest_first(store.get_artifacts(
        list_options=metadata_store.ListOptions(filter_query=query)))
    if not pushed:
        return []
    served = served_version(config)
    events = store.get_events_by_artifact_ids([a.id for a in pushed])
    pusher_of = {e.artifact_id: e.execution_id for e in sorted(
        (e for e in events if e.type in _OUTPUT_EVENTS), key=lambda e: -e.execution_id)}
    # A consumer of the pushed model with a ServingValidation output is the serving validator.
    consumers: dict[int, list[int]] = {}
    for e in events:
        if e.type in _INPUT_EVENTS:
            consumers.setdefault(e.artifact_id, []).append(e.execution_id)
    second = store.get_events_by_execution_ids(
        sorted(set(pusher_of.values()) | {x for ids in consumers.values() for x in ids}))
    inputs_of: dict[int, dict[str, int]] = {}
    outputs_of: dict[int, list[int]] = {}
    for e in second:
        if e.type in _INPUT_EVENTS:
            for key in event_keys(e):
                inputs_of.setdefault(e.execution_id, {})[key] = e.artifact_id
        elif e.type in _OUTPUT_EVENTS:
            outputs_of.setdefault(e.execution_id, []).append(e.artifact_id)
    blessing_ids = sorted({inputs_of.get(x, {}).get("model_blessing") for x in pusher_of.values()}
                          - {None})
    evaluator_events = [e for e in store.get_events_by_artifact_ids(blessing_ids)
                        if e.type in _OUTPUT_EVENTS] if blessing_ids else []
    evaluator_of = {e.artifact_id: e.execution_id for e in evaluator_events}
    evaluation_candidates = {}
    if evaluator_of:
        for e in store.get_events_by_execution_ids(sorted(set(evaluator_of.values()))):
            if e.type in _OUTPUT_EVENTS:
                evaluation_candidates.setdefault(e.execution_id, []).append(e.artifact_id)
    wanted = set(blessing_ids) | {i for ids in evaluation_candidates.values() for i in ids}
    wanted |= {i for ids in consumers.values() for x in ids for i in outputs_of.get(x, [])}
    artifacts = {a.id: a for a in store.get_artifacts_by_id(sorted(wanted))} if wanted else {}
    runs = _execution_infos(store, set(pusher_of.values()))

    models = []
    for artifact in pushed:
        props = properties_of(artifact)
        pusher = pusher_of.get(artifact.id)
        pusher_inputs = inputs_of.get(pusher, {})
        destination = props.get("pushed_destination") or None
        version = props.get("pushed_version") or None
        is_pushed = bool(props.get("pushed"))
        model = ModelVersion(
            version=str(version) if version is not None else None, pushed=is_pushed,
            destination=destination,
            present=is_pushed and _version_present(destination or ""),
            served=bool(is_pushed and version is not None and str(version) == served
                        and _version_present(destination or "")),
            pushed_model_id=artifact.id, created_ms=artifact.create_time_since_epoch,
            run_id=(runs[pusher].run_ids or [None])[0] if pusher in runs else None,
            model_id=pusher_inputs.get("model"), blessing_id=pusher_inputs.get("model_blessing"))
        blessing = artifacts.get(model.blessing_id)
        if blessing is not None:
            model.blessed = bool(properties_of(blessing).get("blessed"))
            evaluator = evaluator_of.get(blessing.id)
            for candidate in evaluation_candidates.get(evaluator, []):
                evaluation = artifacts.get(candidate)
                if evaluation is not None and evaluation.type == "ModelEvaluation":
                    model.evaluation_id, model.evaluation_uri = evaluation.id, evaluation.uri
                    if with_metrics:
                        model.metrics = eval_metrics(evaluation.uri)
        validations = [artifacts[i] for x in consumers.get(artifact.id, [])
                       for i in outputs_of.get(x, []) if i in artifacts
                       and artifacts[i].type == "tfxsp.ServingValidation"]
        if validations:
            newest = max(validations, key=lambda a: (a.create_time_since_epoch, a.id))
            model.serving_validation = {"artifact_id": newest.id, **properties_of(newest)}
        models.append(model)
    return models


# ===================================================================================== targets
SHORTCUTS = {
    "served": "the version TF Serving serves: the highest version folder in the model base path",
    "latest-pushed": "the newest PushedModel that was pushed",
    "latest-model": "the newest Model",
    "latest-examples": "the newest Examples",
    "latest-<type>": "the newest artifact of a type, e.g. latest-transform-graph",
    "version:N": "the PushedModel of pushed version N",
    "ID": "an artifact id, e.g. 37 (tfxsp artifacts --type T lists them)",
}


def _newest_artifact(store: metadata_store.MetadataStore, query: str) -> mlmd.Artifact | None:
    found = store.get_artifacts(list_options=metadata_store.ListOptions(
        limit=1, order_by=metadata_store.OrderByField.CREATE_TIME, is_asc=False,
        filter_query=query))
    return found[0] if found else None


def _artifact_by_id(store: metadata_store.MetadataStore, artifact_id: int) -> mlmd.Artifact:
    found = store.get_artifacts_by_id([artifact_id])
    if found:
        return found[0]
    newest = _newest_artifact(store, "id > 0")
    if newest is None:
        require_not_empty(store)
        raise EmptyStoreError("The metadata store holds no artifacts yet. Run the pipeline first "
                              "(tfxsp run).")
    raise NotFoundError(f"No artifact with id {artifact_id} in this metadata store (the newest "
                        f"artifact is {newest.type} #{newest.id}; tfxsp artifacts lists them).")


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _pushed_version(store: metadata_store.MetadataStore, version: str,
                    preferred_destination: str | None = None) -> mlmd.Artifact | None:
    found = store.get_artifacts(list_options=metadata_store.ListOptions(filter_query=(
        "type = 'PushedModel' AND custom_properties.pushed.int_value = 1 AND "
        f"custom_properties.pushed_version.string_value = {_quote(version)}")))
    if not found:
        return None
    return sorted(found, key=lambda a: (
        properties_of(a).get("pushed_destination") != preferred_destination,
        -a.create_time_since_epoch, -a.id))[0]


def resolve_target(store: metadata_store.MetadataStore, target: str,
                   config: PipelineConfig) -> tuple[mlmd.Artifact, str]:
    """The artifact a trace starts from, and a line that says how it was found. See SHORTCUTS."""
    text = target.strip()
    key = text.lower()
    if key.lstrip("#").isdigit():
        artifact = _artifact_by_id(store, int(key.lstrip("#")))
        return artifact, f"{artifact.type} #{artifact.id}"
    require_not_empty(store)
    if key == "served":
        version = served_version(config)
        newest = _newest_artifact(
            store, "type = 'PushedModel' AND custom_properties.pushed.int_value = 1")
        hint = (f" The newest pushed model is version "
                f"{properties_of(newest).get('pushed_version')} (tfxsp lineage latest-pushed)."
                if newest is not None else " No model was pushed yet.")
        if version is None:
            raise NotFoundError(f"Nothing is served from {config.serving_model_dir}: it holds no "
                                f"version folder.{hint}")
        artifact = _pushed_version(store, version,
                                   os.path.join(config.serving_model_dir, version))
        if artifact is None:
            raise NotFoundError(f"Version {version} in {config.serving_model_dir} is not recorded "
                                f"in this metadata store (pushed by another store or by hand?)."
                                f"{hint}")
        return artifact, (f"served: version {version} in {config.serving_model_dir} "
                          f"(PushedModel #{artifact.id})")
    if key.startswith("version:"):
        version = text.split(":", 1)[1].strip()
        artifact = _pushed_version(store, version)
        if artifact is None:
            raise NotFoundError(f"No pushed version {version} in this metadata store "
                                "(tfxsp models lists them).")
        return artifact, f"pushed version {version} (PushedModel #{artifact.id})"
    if key == "latest-pushed":
        artifact = _newest_artifact(
            store, "type = 'PushedModel' AND custom_properties.pushed.int_value = 1")
        if artifact is None:
            raise NotFoundError("No model was pushed yet in this metadata store.")
        return artifact, (f"latest pushed: version {properties_of(artifact).get('pushed_version')}"
                          f" (PushedModel #{artifact.id})")
    if key.startswith("latest-") or key.startswith("latest:"):
        type_name = resolve_type_name(store, text[len("latest-"):])
        artifact = _newest_artifact(store, f"type = {_quote(type_name)}")
        if artifact is None:
            raise NotFoundError(f"No {type_name} artifact in this metadata store yet.")
        return artifact, f"latest {type_name} (#{artifact.id})"
    raise NotFoundError(f"Unknown target {target!r}. Use "
                        + "; ".join(f"{k} ({v})" for k, v in SHORTCUTS.items()) + ".")


# ===================================================================================== lineage
@dataclasses.dataclass
class Node:
    key: str  # a<artifact id>, e<execution id>, s<execution id> (an ExampleGen's external input)
    kind: str  # artifact | execution | source
    id: int | None
    type: str  # artifact type, component class, or "ExternalData"
    label: str  # what a person calls it: "Model #34", the node id "Trainer", a path
    run_ids: list[str] = dataclasses.field(default_factory=list)
    state: str = ""
    created_ms: int = 0
    uri: str = ""
    properties: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float | None = None
    cached_in: list[str] = dataclasses.field(default_factory=list)  # runs that reused it
    boundary: bool = False  # reached through a baseline input and not followed further
    distance: int = 0  # hops from the target

    @property
    def subtitle(self) -> str:
        """One line under the label: the most telling detail."""
        if self.kind == "execution":
            text = f"exec {self.id} · {self.state}"
            if self.seconds is not None:
                text += f" · {self.seconds:.1f} s"
            return text
        if self.kind == "source":
            fingerprint = str(self.properties.get("input_fingerprint", ""))
            return ", ".join(fingerprint.split(",")[1:3]) or "external input"
        shown = key_properties(self.type, self.properties)
        if self.type == "PushedModel" and "pushed_version" in shown:
            return f"version {shown['pushed_version']}" if shown.get("pushed") else "not pushed"
        if "blessed" in shown:
            return "blessed" if shown["blessed"] else "NOT blessed"
        if "span" in shown:
            return f"span {shown['span']}"
        return f"…/{_tail(self.uri, 2)}" if self.uri else ""

    def to_dict(self) -> dict[str, Any]:
        result = {"key": self.key, "kind": self.kind, "id": self.id, "type": self.type,
                  "label": self.label, "runs": self.run_ids, "state": self.state,
                  "created": iso(self.created_ms), "distance": self.distance}
        if self.kind == "artifact":
            result.update(uri=self.uri, properties=self.properties,
                          key_properties=key_properties(self.type, self.properties),
                          boundary=self.boundary)
        elif self.kind == "execution":
            result.update(node_id=self.label, seconds=self.seconds, parameters=self.properties,
                          cached_in=self.cached_in, boundary=self.boundary)
        else:
            result.update(uri=self.uri, properties=self.properties)
        return result


@dataclasses.dataclass
class Edge:
    source: str
    target: str
    kind: str  # input (artifact -> execution) | output (execution -> artifact) | source
    keys: list[str]
    baseline: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Lineage:
    target: str  # key of the node the trace started from
    description: str
    direction: str  # upstream | downstream | both
    nodes: dict[str, Node]
    edges: list[Edge]

    def of_type(self, type_name: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.type == type_name]

    def executions(self, component: str | None = None) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "execution"
                and (component is None or _short_type(n.type) == component
                     or n.label == component)]

    def inputs_of(self, key: str) -> list[Edge]:
        return [e for e in self.edges if e.target == key]

    def outputs_of(self, key: str) -> list[Edge]:
        return [e for e in self.edges if e.source == key]

    def summary(self) -> dict[str, Any]:
        """What produced the target, at a glance: data read, code, and artifacts by type."""
        artifacts: dict[str, list[int]] = {}
        for node in self.nodes.values():
            if node.kind == "artifact":
                artifacts.setdefault(node.type, []).append(node.id)
        code = {n.label: n.properties[k] for n in self.executions()
                for k in ("module_path", "module_file") if n.properties.get(k)}
        return {
            "data": [{"path": n.uri, "fingerprint": n.properties.get("input_fingerprint"),
                      "read_by_execution": n.id} for n in self.nodes.values()
                     if n.kind == "source"],
            "code": code,
            "artifacts": {t: sorted(ids) for t, ids in sorted(artifacts.items())},
            "runs": sorted({r for n in self.nodes.values() for r in n.run_ids}),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "description": self.description,
                "direction": self.direction, "summary": self.summary(),
                "nodes": [n.to_dict() for n in self.ordered()],
                "edges": [e.to_dict() for e in self.edges]}

    def ordered(self) -> list[Node]:
        """Nodes by distance from the target, then artifacts before executions, then id."""
        return sorted(self.nodes.values(), key=lambda n: (n.distance, n.kind, n.id or 0, n.key))


def event_keys(event: mlmd.Event) -> list[str]:
    """The input/output keys of an event: its path is (key, index) pairs, one pair per key under
    which the execution saw the artifact (['model', 0, 'baseline_model', 0] = both keys)."""
    return [step.key for step in event.path.steps if step.HasField("key")]


_DIRECTIONS = {
    "upstream": mlmd.LineageSubgraphQueryOptions.UPSTREAM,
    "downstream": mlmd.LineageSubgraphQueryOptions.DOWNSTREAM,
}


def _subgraph(store: metadata_store.MetadataStore, artifact_id: int, direction: str,
              max_hops: int) -> mlmd.LineageGraph:
    options = mlmd.LineageSubgraphQueryOptions(
        starting_artifacts=mlmd.LineageSubgraphQueryOptions.StartingNodes(
            filter_query=f"id = {int(artifact_id)}"),
        max_num_hops=max_hops, direction=_DIRECTIONS[direction])
    try:
        return store.get_lineage_subgraph(
            options, ["artifacts", "executions", "contexts", "events", "associations",
                      "artifact_types", "execution_types"])
    except mlmd_errors.NotFoundError:
        _artifact_by_id(store, artifact_id)  # raises the message for a person
        raise


def trace(store: metadata_store.MetadataStore, artifact_id: int, direction: str = "upstream", *,
          follow_baseline: bool = False, show_cached: bool = False, max_hops: int = MAX_HOPS,
          description: str = "") -> Lineage:
    """The lineage of an artifact: everything it was derived from (upstream), everything derived
    from it (downstream), or both, as typed nodes and edges. One get_lineage_subgraph call per
    direction; see the module docstring for cached executions and baseline inputs."""
    if direction not in ("upstream", "downstream", "both"):
        raise ValueError(f"direction must be upstream, downstream or both, not {direction!r}")
    directions = ["upstream", "downstream"] if direction == "both" else [direction]
    graphs = [_subgraph(store, artifact_id, d, max_hops) for d in directions]

    artifacts = {a.id: a for g in graphs for a in g.artifacts}
    executions = {e.id: e for g in graphs for e in g.executions}
    artifact_types = {t.id: t.name for g in graphs for t in g.artifact_types}
    execution_types = {t.id: t.name for g in graphs for t in g.execution_types}
    contexts = {c.id: c for g in graphs for c in g.contexts}
    node_of: dict[int, str] = {}
    runs_of: dict[int, list[str]] = {}
    for association in (a for g in graphs for a in g.associations):
        context = contexts.get(association.context_id)
        if context is None:
            continue
        if context.type == "node":
            node_of[association.execution_id] = context.name.split(".", 1)[-1]
        elif context.type == "pipeline_run":
            runs = runs_of.setdefault(association.execution_id, [])
            if context.name not in runs:
                runs.append(context.name)

    # Every edge once, in data-flow direction; the Resolver's INTERNAL_* events are no lineage.
    edges: dict[tuple[str, str], Edge] = {}
    for event in (e for g in graphs for e in g.events):
        a, x = f"a{event.artifact_id}", f"e{event.execution_id}"
        keys = event_keys(event)
        if event.type in _INPUT_EVENTS:
            edge = Edge(a, x, "input", keys, baseline=bool(keys) and set(keys) <= BASELINE_KEYS)
        elif event.type in _OUTPUT_EVENTS:
            edge = Edge(x, a, "output", keys)
        else:
            continue
        known = edges.get((edge.source, edge.target))
        if known is None:
            edges[(edge.source, edge.target)] = edge
        else:
            known.keys = sorted(set(known.keys) | set(keys))
            known.baseline = known.baseline and edge.baseline

    start = f"a{artifact_id}"
    reached: dict[str, int] = {start: 0}
    boundary: set[str] = set()
    kept_edges: list[Edge] = []
    for d in directions:
        near, far = ("target", "source") if d == "upstream" else ("source", "target")
        by_near: dict[str, list[Edge]] = {}
        for edge in edges.values():
            by_near.setdefault(getattr(edge, near), []).append(edge)
        # Breadth-first over derivation edges; a baseline edge adds its far end as a boundary.
        queue, seen = [start], {start: 0}
        while queue:
            key = queue.pop(0)
            for edge in by_near.get(key, []):
                other = getattr(edge, far)
                if edge.baseline and not follow_baseline:
                    kept_edges.append(edge)
                    if other not in seen:
                        reached.setdefault(other, seen[key] + 1)
                        boundary.add(other)
                    continue
                kept_edges.append(edge)
                if other not in seen:
                    seen[other] = seen[key] + 1
                    queue.append(other)
        for key, distance in seen.items():
            reached[key] = min(reached.get(key, distance), distance)
            boundary.discard(key)

    nodes: dict[str, Node] = {}
    for key, distance in reached.items():
        number = int(key[1:])
        if key[0] == "a" and number in artifacts:
            artifact = artifacts[number]
            type_name = artifact.type or artifact_types.get(artifact.type_id, "Artifact")
            nodes[key] = Node(key=key, kind="artifact", id=number, type=type_name,
                              label=f"{type_name} #{number}", state=_artifact_state(artifact),
                              created_ms=artifact.create_time_since_epoch, uri=artifact.uri,
                              properties=properties_of(artifact), distance=distance)
        elif key[0] == "e" and number in executions:
            execution = executions[number]
            type_name = execution.type or execution_types.get(execution.type_id, "Execution")
            nodes[key] = Node(
                key=key, kind="execution", id=number, type=type_name,
                label=node_of.get(number) or _short_type(type_name),
                run_ids=runs_of.get(number, []), state=_state(execution),
                created_ms=execution.create_time_since_epoch,
                properties=properties_of(execution), distance=distance,
                seconds=max(0.0, (execution.last_update_time_since_epoch
                                  - execution.create_time_since_epoch) / 1000.0))
        else:
            continue
        nodes[key].boundary = key in boundary
    unique_edges = {(e.source, e.target): e for e in kept_edges
                    if e.source in nodes and e.target in nodes}
    lineage = Lineage(target=start, description=description or nodes[start].label,
                      direction=direction, nodes=nodes, edges=list(unique_edges.values()))
    if not show_cached:
        _fold_cached(lineage)
    _artifact_runs(lineage)
    unknown = [n.id for n in nodes.values() if n.kind == "artifact" and not n.run_ids]
    if unknown:  # the target of a downstream trace, a baseline: their producer is not traced
        for artifact_id, producer in _producers(store, unknown).items():
            nodes[f"a{artifact_id}"].run_ids = [producer["run_id"]] if producer["run_id"] else []
    if "upstream" in directions:
        _add_sources(lineage)
    lineage.edges.sort(key=lambda e: (nodes[e.target].distance, e.source, e.target)
                       if e.target in nodes else (0, e.source, e.target))
    return lineage


def _artifact_runs(lineage: Lineage) -> None:
    """An artifact's run: the run of the execution that produced it (not a cached reuse)."""
    for node in lineage.nodes.values():
        if node.kind != "artifact":
            continue
        producers = [lineage.nodes[e.source] for e in lineage.inputs_of(node.key)
                     if e.source in lineage.nodes]
        producers.sort(key=lambda p: (p.state == "cached", p.id))
        node.run_ids = list(producers[0].run_ids) if producers else []


def _fold_cached(lineage: Lineage) -> None:
    """Folds each cached execution into the execution whose outputs it re-published."""
    for node in list(lineage.nodes.values()):
        if node.kind != "execution" or node.state != "cached":
            continue
        outputs = {e.target for e in lineage.outputs_of(node.key)}
        if not outputs:
            continue  # its outputs are not in this trace: the reuse itself is the news
        producers = [lineage.nodes[e.source] for out in outputs for e in lineage.inputs_of(out)
                     if e.source != node.key and lineage.nodes[e.source].state != "cached"]
        if not producers:
            continue
        original = min(producers, key=lambda p: p.id)
        original.cached_in.extend(r for r in node.run_ids if r not in original.cached_in)
        original.distance = min(original.distance, node.distance)
        del lineage.nodes[node.key]
        lineage.edges = [e for e in lineage.edges if node.key not in (e.source, e.target)]


def _add_sources(lineage: Lineage) -> None:
    """An ExampleGen's input (its input_base exec property, e.g. the CSV folder) as a node: one
    per path and fingerprint (the same files read by several executions are one node)."""
    sources: dict[tuple[str, str], Node] = {}
    for node in sorted(lineage.nodes.values(), key=lambda n: n.id or 0):
        if node.kind != "execution" or not node.properties.get("input_base") or node.boundary:
            continue
        path = str(node.properties["input_base"])
        identity = (path, str(node.properties.get("input_fingerprint", "")))
        source = sources.get(identity)
        if source is None:
            source = sources[identity] = lineage.nodes[f"s{node.id}"] = Node(
                key=f"s{node.id}", kind="source", id=node.id, type="ExternalData", label=path,
                uri=path, distance=node.distance + 1, run_ids=list(node.run_ids),
                properties={k: node.properties[k] for k in (
                    "input_base", "input_fingerprint", "input_config", "span", "version")
                    if k in node.properties})
        source.distance = min(source.distance, node.distance + 1)
        lineage.edges.append(Edge(source.key, node.key, "source", ["input_base"]))


# ===================================================================================== pictures
def _tail(path: str, parts: int) -> str:
    return "/".join(path.rstrip("/").split("/")[-parts:])


def _layout(lineage: Lineage) -> tuple[list[list[str]], list[Edge], dict[int, list[str]]]:
    """Rows in data-flow order (a layered, Sugiyama-style layout): each node sits one row below
    the lowest of its inputs (nodes without inputs right above their first consumer); an edge
    that spans several rows gets a virtual waypoint ("~edge~row") in each row it crosses, so it
    is routed around the nodes; every row is ordered by the barycentre of its neighbours.
    Returns the rows (node keys and waypoints), the edges drawn, and each edge's waypoints."""
    nodes = lineage.nodes
    edges = [e for e in lineage.edges
             if e.source in nodes and e.target in nodes and e.source != e.target]
    preds: dict[str, list[str]] = {k: [] for k in nodes}
    succs: dict[str, list[str]] = {k: [] for k in nodes}
    for edge in edges:
        preds[edge.target].append(edge.source)
        succs[edge.source].append(edge.target)
    order: list[str] = []  # topological (Kahn); a cycle, impossible in MLMD, is cut arbitrarily
    placed: set[str] = set()
    indegree = {k: len(v) for k, v in preds.items()}
    ready = sorted((k for k, d in indegree.items() if d == 0), key=lambda k: -nodes[k].distance)
    while len(order) < len(nodes):
        if not ready:
            ready = [min((k for k in nodes if k not in placed), key=lambda k: indegree[k])]
        key = ready.pop(0)
        if key in placed:
            continue
        order.append(key)
        placed.add(key)
        for nxt in succs[key]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    position = {k: i for i, k in enumerate(order)}
    layer: dict[str, int] = {}
    for key in order:
        layer[key] = max((layer[p] + 1 for p in preds[key] if position[p] < position[key]),
                         default=0)
    for key in reversed(order):
        if not preds[key] and succs[key]:
            layer[key] = max(0, min(layer[s] for s in succs[key]) - 1)
    rows: list[list[str]] = [[] for _ in range(max(layer.values(), default=0) + 1)]
    for key in order:
        rows[layer[key]].append(key)
    for row in rows:
        row.sort(key=lambda k: (nodes[k].kind != "source", nodes[k].type, nodes[k].id or 0))
    up: dict[str, list[str]] = {k: [] for k in nodes}  # neighbours one row up / down
    down: dict[str, list[str]] = {k: [] for k in nodes}
    waypoints: dict[int, list[str]] = {}
    for i, edge in enumerate(edges):
        first, last = layer[edge.source], layer[edge.target]
        chain = [f"~{i}~{r}" for r in range(first + 1, last)]
        for r, point in zip(range(first + 1, last), chain):
            rows[r].append(point)
            up[point], down[point] = [], []
        waypoints[i] = chain
        if last <= first:
            continue
        hops = [edge.source, *chain, edge.target]
        for upper, lower in zip(hops, hops[1:]):
            down[upper].append(lower)
            up[lower].append(upper)
    index = {k: i for row in rows for i, k in enumerate(row)}
    for sweep in range(8):  # barycentre ordering, alternating downwards and upwards
        downwards = sweep % 2 == 0
        for row in (rows if downwards else reversed(rows)):
            neighbours = up if downwards else down
            weights = {k: (sum(index[n] for n in neighbours[k]) / len(neighbours[k])
                           if neighbours[k] else index[k]) for k in row}
            row.sort(key=lambda k: weights[k])
            for i, k in enumerate(row):
                index[k] = i
    return [row for row in rows if row], edges, waypoints


_PALETTE = {
    "Examples": "#dbeafe", "ExampleStatistics": "#e0f2fe", "Schema": "#ede9fe",
    "ExampleAnomalies": "#fce7f3", "TransformGraph": "#dcfce7", "TransformCache": "#f0fdf4",
    "Model": "#fef3c7", "ModelRun": "#fefce8", "ModelBlessing": "#ffedd5",
    "ModelEvaluation": "#fff7ed", "PushedModel": "#fee2e2", "tfxsp.ServingValidation": "#fae8ff",
    "ExternalData": "#f1f5f9",
}
_STATE_COLOURS = {"complete": "#16a34a", "cached": "#2563eb", "failed": "#dc2626"}
NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN, WAYPOINT_W = 220, 62, 30, 58, 24, 14


def _fill(node: Node) -> str:
    if node.kind == "execution":
        return "#ffffff"
    return _PALETTE.get(node.type, "#f5f5f4")


def _clip(text: str, width: int = 34) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _node_lines(node: Node) -> tuple[str, str, str]:
    if node.kind == "source":
        return ("CSV / external input", _clip(node.uri), _clip(node.subtitle))
    if node.kind == "execution":
        extra = f"cached in {len(node.cached_in)} later run(s)" if node.cached_in else \
            _clip(node.run_ids[0] if node.run_ids else "", 34)
        return (f"{node.label}", node.subtitle, extra)
    return (node.label, _clip(str(node.subtitle)), _clip(node.run_ids[0] if node.run_ids else ""))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _tooltip(node: Node) -> str:
    lines = [node.label, f"type: {node.type}"]
    if node.uri:
        lines.append(f"uri: {node.uri}")
    if node.run_ids:
        lines.append("run: " + ", ".join(node.run_ids))
    if node.cached_in:
        lines.append("reused (cached) by runs: " + ", ".join(node.cached_in))
    if node.boundary:
        lines.append("baseline input: compared with, not followed further")
    for key, value in (node.properties if node.kind == "execution"
                       else key_properties(node.type, node.properties)).items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        lines.append(f"{key}: {text if len(text) < 300 else text[:300] + '…'}")
    return "\n".join(lines)


def to_svg(lineage: Lineage, *, standalone: bool = True) -> str:
    """The lineage as an SVG picture, laid out here (no Graphviz needed): data flows from top to
    bottom, artifacts are rounded and coloured by type, executions are framed in the colour of
    their state, the target has a thick outline, baseline inputs are dashed."""
    rows, drawn, waypoints = _layout(lineage)
    title = f"Lineage ({lineage.direction}) of {lineage.description}"

    def size(key: str) -> float:
        return WAYPOINT_W if key.startswith("~") else NODE_W

    def row_width(row: list[str]) -> float:
        return sum(size(k) for k in row) + GAP_X * max(0, len(row) - 1)
    width = max(MARGIN * 2 + max((row_width(r) for r in rows), default=NODE_W),
                MARGIN * 2 + 8 * len(title))
    height = MARGIN * 2 + 30 + len(rows) * NODE_H + max(0, len(rows) - 1) * GAP_Y
    place: dict[str, tuple[float, float]] = {}  # top-left corner of nodes and waypoints
    for r, row in enumerate(rows):
        x = (width - row_width(row)) / 2
        for key in row:
            place[key] = (x, MARGIN + 30 + r * (NODE_H + GAP_Y))
            x += size(key) + GAP_X

    def centre(key: str) -> float:
        return place[key][0] + size(key) / 2
    # Where each edge leaves its source (bottom) and reaches its target (top), spread along the
    # side in the order of the next point on the edge, so that edges do not share an endpoint.
    leave: dict[int, float] = {}
    reach: dict[int, float] = {}
    for side, end, toward in ((leave, "source", lambda i: (waypoints[i] or [drawn[i].target])[0]),
                              (reach, "target", lambda i: (waypoints[i] or [drawn[i].source])[-1])):
        slots: dict[str, list[int]] = {}
        for i, edge in enumerate(drawn):
            slots.setdefault(getattr(edge, end), []).append(i)
        for key, indices in slots.items():
            indices.sort(key=lambda i: centre(toward(i)))
            for n, i in enumerate(indices):
                side[i] = place[key][0] + NODE_W * (n + 1) / (len(indices) + 1)
    out = []
    attrs = (f'xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif"')
    if standalone:
        out.append('<?xml version="1.0" encoding="UTF-8"?>')
    out.append(f'<svg {attrs} role="img">')
    out.append(f"<title>{_xml_escape(title)}</title>")
    out.append('<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
               'markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
               'fill="#64748b"/></marker></defs>')
    out.append(f'<text x="{MARGIN}" y="{MARGIN + 12}" font-size="15" font-weight="bold">'
               f"{_xml_escape(title)}</text>")
    out.append('<g class="edges" fill="none" stroke="#64748b" stroke-width="1.3">')
    labels = []
    for i, edge in enumerate(drawn):
        points = [(leave[i], place[edge.source][1] + NODE_H)]
        for point in waypoints[i]:  # straight down through each row the edge crosses
            points += [(centre(point), place[point][1]), (centre(point), place[point][1] + NODE_H)]
        points.append((reach[i], place[edge.target][1]))
        path = f"M {points[0][0]:.1f} {points[0][1]:.1f}"
        for n, ((x1, y1), (x2, y2)) in enumerate(zip(points, points[1:])):
            if n % 2:  # inside a row
                path += f" L {x2:.1f} {y2:.1f}"
                continue
            dy = max(20.0, abs(y2 - y1) / 2)
            c1, c2 = (y1 + dy, y2 - dy) if y2 > y1 else (y1 + 60, y2 - 60)
            path += f" C {x1:.1f} {c1:.1f} {x2:.1f} {c2:.1f} {x2:.1f} {y2:.1f}"
        dash = ' stroke-dasharray="5 4"' if edge.baseline else ""
        label = ", ".join(edge.keys)
        out.append(f'<path d="{path}" marker-end="url(#arrow)"{dash}>'
                   f"<title>{_xml_escape(f'{edge.source} -> {edge.target}: {label}')}</title>"
                   "</path>")
        if label:  # halfway along the last stretch, into the target
            (x1, y1), (x2, y2) = points[-2], points[-1]
            labels.append(f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 + 3:.1f}" '
                          'text-anchor="middle" stroke="#ffffff" stroke-width="3" '
                          f'paint-order="stroke">{_xml_escape(_clip(label, 26))}</text>')
    out.append("</g>")
    out.append('<g class="edge-labels" font-size="10" fill="#334155">')
    out.extend(labels)
    out.append("</g>")
    out.append('<g class="nodes">')
    for key, (x, y) in place.items():
        if key.startswith("~"):
            continue
        node = lineage.nodes[key]
        stroke = _STATE_COLOURS.get(node.state, "#475569") if node.kind == "execution" \
            else "#475569"
        stroke_width = 3.5 if key == lineage.target else 1.2
        radius = 12 if node.kind == "artifact" else 2
        dash = ' stroke-dasharray="6 4"' if node.boundary else ""
        line1, line2, line3 = _node_lines(node)
        out.append((f'<a href="#node-{key}">' if not standalone else "")
                   + f'<g class="node {node.kind}" id="svg-{key}">')
        out.append(f"<title>{_xml_escape(_tooltip(node))}</title>")
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" '
                   f'rx="{radius}" fill="{_fill(node)}" stroke="{stroke}" '
                   f'stroke-width="{stroke_width}"{dash}/>')
        out.append(f'<text x="{x + 10:.1f}" y="{y + 19:.1f}" font-size="13" '
                   f'font-weight="bold" fill="#0f172a">{_xml_escape(_clip(line1, 30))}</text>')
        out.append(f'<text x="{x + 10:.1f}" y="{y + 36:.1f}" font-size="11" '
                   f'fill="#334155">{_xml_escape(line2)}</text>')
        out.append(f'<text x="{x + 10:.1f}" y="{y + 52:.1f}" font-size="10" '
                   f'fill="#64748b">{_xml_escape(line3)}</text>')
        out.append("</g>" + ("</a>" if not standalone else ""))
    out.append("</g></svg>")
    return "\n".join(out) + "\n"


def to_html(lineage: Lineage, *, store_description: str = "") -> str:
    """A self-contained page (no scripts, no external files): the SVG picture, what produced the
    target at a glance, and every node's properties and parameters."""
    esc = html.escape
    summary = lineage.summary()
    rows = []
    for node in lineage.ordered():
        shown = node.properties if node.kind != "artifact" \
            else key_properties(node.type, node.properties)
        details = "".join(f"<div><b>{esc(k)}</b>: <code>{esc(_text(v))}</code></div>"
                          for k, v in shown.items())
        if node.uri:
            details = f"<div><b>uri</b>: <code>{esc(node.uri)}</code></div>" + details
        if node.cached_in:
            details += (f"<div><b>reused (cached) by runs</b>: "
                        f"{esc(', '.join(node.cached_in))}</div>")
        if node.boundary:
            details += "<div><i>baseline input: compared with, not followed further</i></div>"
        inputs = ", ".join(f"{esc(lineage.nodes[e.source].label)} ({esc(', '.join(e.keys))})"
                           for e in lineage.inputs_of(node.key) if e.source in lineage.nodes)
        rows.append(
            f'<tr id="node-{esc(node.key)}"><td>{esc(node.label)}</td><td>{esc(node.kind)}</td>'
            f"<td>{esc(node.type)}</td><td>{esc(node.state)}</td>"
            f"<td>{esc(', '.join(node.run_ids))}</td><td>{inputs}</td><td>{details}</td></tr>")
    data = "".join(f"<li><code>{esc(str(d['path']))}</code> "
                   f"<small>{esc(str(d['fingerprint'] or ''))}</small></li>"
                   for d in summary["data"]) or "<li>(not in this trace)</li>"
    code = "".join(f"<li>{esc(k)}: <code>{esc(str(v))}</code></li>"
                   for k, v in summary["code"].items()) or "<li>(not in this trace)</li>"
    title = f"Lineage of {lineage.description}"
    generated = datetime.datetime.now().isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 24px; color: #0f172a; }}
.picture {{ overflow: auto; border: 1px solid #e2e8f0; padding: 8px; }}
table {{ border-collapse: collapse; margin-top: 12px; font-size: 13px; }}
td, th {{ border: 1px solid #e2e8f0; padding: 4px 8px; vertical-align: top; text-align: left; }}
tr:target {{ background: #fef9c3; }}
code {{ font-size: 12px; word-break: break-all; }}
.legend span {{ display: inline-block; margin-right: 14px; font-size: 13px; }}
</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p>Direction: <b>{esc(lineage.direction)}</b> · {len(lineage.nodes)} nodes,
{len(lineage.edges)} edges · store: <code>{esc(store_description)}</code> ·
generated {esc(generated)}</p>
<p class="legend"><span>rounded box: artifact (colour by type)</span>
<span>square box: execution (frame: green complete, blue cached, red failed)</span>
<span>dashed: baseline model the Evaluator compared with</span>
<span>thick outline: the target</span></p>
<div class="picture">
{to_svg(lineage, standalone=False)}</div>
<h2>Data read</h2>
<ul>{data}</ul>
<h2>Code</h2>
<ul>{code}</ul>
<h2>Nodes</h2>
<table>
<thead><tr><th>node</th><th>kind</th><th>type</th><th>state</th><th>run</th>
<th>inputs (keys)</th><th>properties / parameters</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</body>
</html>
"""


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(lineage: Lineage) -> str:
    """Graphviz DOT text (`dot -Tsvg`), for people who have Graphviz."""
    lines = ["digraph lineage {", "  rankdir=TB;",
             f"  label={_dot_quote(f'Lineage ({lineage.direction}) of {lineage.description}')};",
             "  labelloc=t;", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9, color="#64748b"];']
    for node in lineage.ordered():
        line1, line2, line3 = _node_lines(node)
        label = "\n".join(t for t in (line1, line2, line3) if t)
        if node.kind == "execution":
            attrs = (f'shape=box, color="{_STATE_COLOURS.get(node.state, "#475569")}", '
                     f"penwidth={3 if node.key == lineage.target else 1.5}")
        else:
            shape = "folder" if node.kind == "source" else "box"
            attrs = (f'shape={shape}, style="rounded,filled{",dashed" if node.boundary else ""}", '
                     f'fillcolor="{_fill(node)}", '
                     f"penwidth={3 if node.key == lineage.target else 1}")
        lines.append(f"  {_dot_quote(node.key)} [label={_dot_quote(label)}, {attrs}];")
    for edge in lineage.edges:
        style = ", style=dashed" if edge.baseline else ""
        lines.append(f"  {_dot_quote(edge.source)} -> {_dot_quote(edge.target)} "
                     f"[label={_dot_quote(', '.join(edge.keys))}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
