"""What one pipeline run did, read back from ML Metadata: per-node state and duration, the
evaluation's metrics and blessing, and the push."""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

# TensorFlow Model Analysis (and so TensorFlow) is imported only where an evaluation is read, so
# that the node states and durations below are cheap to import (the lineage commands use them).

_STATE_NAMES = {
    metadata_store_pb2.Execution.COMPLETE: "complete",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "failed",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.NEW: "new",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


@dataclasses.dataclass
class NodeResult:
    node_id: str
    state: str
    seconds: float
    execution_id: int | None = None
    started_ms: int = 0  # the execution's create time, milliseconds since the epoch


@dataclasses.dataclass
class RunReport:
    run_id: str
    nodes: list[NodeResult]
    # slice name ("Overall", "species=Adelie", ...) -> accuracy
    accuracy: dict[str, float] = dataclasses.field(default_factory=dict)
    blessed: bool | None = None
    # Why the Evaluator did not bless, one line per failed threshold.
    validation_failures: list[str] = dataclasses.field(default_factory=list)
    pushed: bool = False
    pushed_version: str | None = None
    pushed_destination: str | None = None
    eval_uri: str | None = None
    # The ServingValidator's report.json (outcome, reason, checks, latency, rollback), when it ran.
    serving_validation: dict | None = None

    @property
    def failed_nodes(self) -> list[str]:
        return [n.node_id for n in self.nodes if n.state == "failed"]


def latest_run_id(store: metadata_store.MetadataStore, pipeline_name: str) -> str | None:
    """The newest run of `pipeline_name` in this store, or None when it never ran."""
    runs = pipeline_runs(store, pipeline_name)
    return runs[-1].name if runs else None


def pipeline_runs(store: metadata_store.MetadataStore,
                  pipeline_name: str) -> list[metadata_store_pb2.Context]:
    """Every run context of `pipeline_name`, oldest first: one query where runs are linked to
    their pipeline (TFX >= 1.x), one per run in older stores."""
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    runs = [c for c in (store.get_children_contexts_by_context(pipeline.id) if pipeline else [])
            if c.type == "pipeline_run"]
    if not runs:
        runs = [c for c in store.get_contexts_by_type("pipeline_run")
                if _belongs_to(store, c, pipeline_name)]
    return sorted(runs, key=lambda c: (c.create_time_since_epoch, c.id))


def _belongs_to(store: metadata_store.MetadataStore, run: metadata_store_pb2.Context,
                pipeline_name: str) -> bool:
    parents = store.get_parent_contexts_by_context(run.id)
    if parents:
        return any(p.name == pipeline_name for p in parents)
    # Older stores have no parent links; the run's executions name the pipeline's nodes.
    return any(c.name.startswith(pipeline_name + ".")
               for e in store.get_executions_by_context(run.id)[:1]
               for c in store.get_contexts_by_execution(e.id) if c.type == "node")


def collect(store: metadata_store.MetadataStore, run_id: str) -> RunReport:
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    if run is None:
        raise LookupError(f"no pipeline run {run_id!r} in this metadata store")
    report = RunReport(run_id=run_id, nodes=node_results(store, [run])[run.id])
    _read_outputs(store, [n.execution_id for n in report.nodes], report)
    return report


def node_results(store: metadata_store.MetadataStore, runs: Iterable[metadata_store_pb2.Context]
                 ) -> dict[int, list[NodeResult]]:
    """State and duration of every node of each run (by run context id), in execution order.

    Batched: one query for the executions of up to 500 runs, and one per 100 executions for the
    contexts that say which run and node each belongs to, however many runs there are.
    """
    run_ids = [r.id for r in runs]
    results: dict[int, list[NodeResult]] = {run_id: [] for run_id in run_ids}
    executions = []
    for chunk in _chunks(run_ids, 500):
        executions += store.get_executions(list_options=metadata_store.ListOptions(
            filter_query=f"contexts_a.type = 'pipeline_run' AND contexts_a.id IN "
                         f"({', '.join(map(str, chunk))})"))
    contexts = execution_contexts(store, [e.id for e in executions])
    for execution in sorted(executions, key=lambda e: (e.create_time_since_epoch, e.id)):
        node_id, runs_of_execution = contexts.get(execution.id, ("", []))
        for run_id in runs_of_execution:
            if run_id in results:
                results[run_id].append(NodeResult(
                    node_id=node_id or execution.type,
                    state=_STATE_NAMES.get(execution.last_known_state, "unknown"),
                    seconds=max(0.0, (execution.last_update_time_since_epoch
                                      - execution.create_time_since_epoch) / 1000.0),
                    execution_id=execution.id,
                    started_ms=execution.create_time_since_epoch))
    return results


def execution_contexts(store: metadata_store.MetadataStore, execution_ids: Iterable[int]
                       ) -> dict[int, tuple[str, list[int]]]:
    """execution id -> (node id, ids of its pipeline_run contexts), from the executions'
    associations: one get_lineage_subgraph call per 100 executions (MLMD's limit on the starting
    nodes of one call) and one call for the contexts they name; a per-execution query only for
    any execution that such a call left out."""
    wanted = sorted(set(execution_ids))
    associations: dict[int, list[int]] = {}
    options = metadata_store_pb2.LineageSubgraphQueryOptions
    for chunk in _chunks(wanted, 100):
        graph = store.get_lineage_subgraph(
            options(starting_executions=options.StartingNodes(
                filter_query=f"id IN ({', '.join(map(str, chunk))})"), max_num_hops=0),
            ["associations"])
        for association in graph.associations:
            associations.setdefault(association.execution_id, []).append(association.context_id)
    context_ids = sorted({c for ids in associations.values() for c in ids})
    contexts = {c.id: c for c in store.get_contexts_by_id(context_ids)} if context_ids else {}
    found: dict[int, tuple[str, list[int]]] = {}
    for execution_id in wanted:
        if execution_id not in associations:
            linked = store.get_contexts_by_execution(execution_id)
        else:
            linked = [contexts[c] for c in associations[execution_id] if c in contexts]
        found[execution_id] = (
            next((c.name.split(".", 1)[-1] for c in linked if c.type == "node"), ""),
            sorted(c.id for c in linked if c.type == "pipeline_run"))
    return found


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _read_outputs(store: metadata_store.MetadataStore, execution_ids: list[int],
                  report: RunReport) -> None:
    """Fills the report from the artifacts the run's executions wrote (or reused from cache)."""
    order = {execution_id: i for i, execution_id in enumerate(execution_ids)}
    events = sorted((e for e in store.get_events_by_execution_ids(execution_ids)
                     if e.type in (metadata_store_pb2.Event.OUTPUT,
                                   metadata_store_pb2.Event.DECLARED_OUTPUT)),
                    key=lambda e: (order[e.execution_id], e.artifact_id))
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    for artifact in (artifacts[e.artifact_id] for e in events if e.artifact_id in artifacts):
        if artifact.type == "ModelBlessing":
            report.blessed = bool(artifact.custom_properties["blessed"].int_value)
        elif artifact.type == "ModelEvaluation":
            report.eval_uri = artifact.uri
            report.accuracy = _accuracy_by_slice(artifact.uri)
            report.validation_failures = _validation_failures(artifact.uri)
        elif artifact.type == "tfxsp.ServingValidation":
            report.serving_validation = _serving_validation_report(artifact)
        elif artifact.type == "PushedModel":
            props = artifact.custom_properties
            report.pushed = bool(props["pushed"].int_value) if "pushed" in props else False
            if report.pushed:
                report.pushed_version = props["pushed_version"].string_value
                report.pushed_destination = props["pushed_destination"].string_value


def _serving_validation_report(artifact: metadata_store_pb2.Artifact) -> dict:
    path = os.path.join(artifact.uri, "report.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"state": artifact.custom_properties["outcome"].string_value,
            "reason": artifact.custom_properties["reason"].string_value}


def _slice_name(slice_key: tuple) -> str:
    return ", ".join(f"{k}={v.decode() if isinstance(v, bytes) else v}" for k, v in slice_key) \
        or "Overall"


def _accuracy_by_slice(eval_uri: str) -> dict[str, float]:
    import tensorflow_model_analysis as tfma

    from pipeline.pipeline import ACCURACY_METRIC
    result = tfma.load_eval_result(eval_uri)
    accuracy = {}
    for slice_key, metrics in result.slicing_metrics:
        for output in metrics.values():
            for sub_key in output.values():
                value = sub_key.get(ACCURACY_METRIC)
                if value is not None:
                    accuracy[_slice_name(slice_key)] = float(value["doubleValue"])
    return dict(sorted(accuracy.items(), key=lambda kv: (kv[0] != "Overall", kv[0])))


def _validation_failures(eval_uri: str) -> list[str]:
    import tensorflow_model_analysis as tfma
    try:
        validation = tfma.load_validation_result(eval_uri)
    except (OSError, ValueError):
        return []
    failures = []
    for per_slice in validation.metric_validations_per_slice:
        for failure in per_slice.failures:
            failures.append(_describe_failure(failure))
    return failures


def _describe_failure(failure) -> str:
    """'sparse_categorical_accuracy = 0.412, below the required 0.9', or the change vs. baseline."""
    name = failure.metric_key.name
    value = failure.metric_value.double_value.value
    threshold = failure.metric_threshold
    if threshold.HasField("change_threshold"):
        allowed = threshold.change_threshold.absolute.value
        return (f"{name} changed by {value:+.3f} against the baseline model; the change threshold "
                f"allows at least {allowed:+.3f}")
    bounds = threshold.value_threshold
    if bounds.HasField("lower_bound") and value < bounds.lower_bound.value:
        return f"{name} = {value:.3f}, below the required {bounds.lower_bound.value:g}"
    if bounds.HasField("upper_bound") and value > bounds.upper_bound.value:
        return f"{name} = {value:.3f}, above the allowed {bounds.upper_bound.value:g}"
    return f"{name} = {value:.3f}: {failure.message or 'threshold not met'}"


def open_store(connection_config: metadata_store_pb2.ConnectionConfig | metadata_store_pb2.MetadataStoreClientConfig
               ) -> metadata_store.MetadataStore:
    """Opens (creating it where it is missing) the store of a ConnectionConfig (SQLite, MySQL) or
    a MetadataStoreClientConfig (the MLMD gRPC service). To read only: lineage.open_store."""
    return metadata_store.MetadataStore(connection_config)
