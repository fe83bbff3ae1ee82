"""What one pipeline run did, read back from ML Metadata: per-node state and duration, the
evaluation's metrics and blessing, and the push."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.pipeline import ACCURACY_METRIC

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


@dataclasses.dataclass
class RunReport:
    run_id: str
    nodes: list[NodeResult]
    # slice name ("Overall", "species=Adelie", ...) -> accuracy
    accuracy: dict[str, float] = dataclasses.field(default_factory=dict)
    blessed: Optional[bool] = None
    # Why the Evaluator did not bless, one line per failed threshold.
    validation_failures: list[str] = dataclasses.field(default_factory=list)
    pushed: bool = False
    pushed_version: Optional[str] = None
    pushed_destination: Optional[str] = None
    eval_uri: Optional[str] = None
    # The ServingValidator's report.json (outcome, reason, checks, latency, rollback), when it ran.
    serving_validation: Optional[dict] = None

    @property
    def failed_nodes(self) -> list[str]:
        return [n.node_id for n in self.nodes if n.state == "failed"]


def latest_run_id(store: metadata_store.MetadataStore, pipeline_name: str) -> Optional[str]:
    """The newest run of `pipeline_name` in this store, or None when it never ran."""
    runs = [c for c in store.get_contexts_by_type("pipeline_run")
            if _belongs_to(store, c, pipeline_name)]
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id)).name if runs else None


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
    report = RunReport(run_id=run_id, nodes=[])
    executions = sorted(store.get_executions_by_context(run.id),
                        key=lambda e: (e.create_time_since_epoch, e.id))
    for execution in executions:
        node_id = _node_id(store, execution)
        report.nodes.append(NodeResult(
            node_id=node_id,
            state=_STATE_NAMES.get(execution.last_known_state, "unknown"),
            seconds=max(0.0, (execution.last_update_time_since_epoch
                              - execution.create_time_since_epoch) / 1000.0)))
        _read_outputs(store, execution, report)
    return report


def _node_id(store: metadata_store.MetadataStore, execution: metadata_store_pb2.Execution) -> str:
    for context in store.get_contexts_by_execution(execution.id):
        if context.type == "node":
            return context.name.split(".", 1)[-1]
    return execution.type


def _read_outputs(store: metadata_store.MetadataStore, execution: metadata_store_pb2.Execution,
                  report: RunReport) -> None:
    """Fills the report from the artifacts this execution wrote (or reused from cache)."""
    output_ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                  if e.type in (metadata_store_pb2.Event.OUTPUT,
                                metadata_store_pb2.Event.DECLARED_OUTPUT)]
    for artifact in store.get_artifacts_by_id(output_ids):
        if artifact.type == "ModelBlessing":
            report.blessed = bool(artifact.custom_properties["blessed"].int_value)
        elif artifact.type == "ModelEvaluation":
            report.eval_uri = artifact.uri
            report.accuracy = _accuracy_by_slice(artifact.uri)
            report.validation_failures = _validation_failures(artifact.uri)
        elif artifact.type == "ServingValidation":
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
    return {"state": artifact.properties["outcome"].string_value,
            "reason": artifact.properties["reason"].string_value}


def _slice_name(slice_key: tuple) -> str:
    return ", ".join(f"{k}={v.decode() if isinstance(v, bytes) else v}" for k, v in slice_key) \
        or "Overall"


def _accuracy_by_slice(eval_uri: str) -> dict[str, float]:
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


def open_store(connection_config: metadata_store_pb2.ConnectionConfig
               ) -> metadata_store.MetadataStore:
    return metadata_store.MetadataStore(connection_config)
