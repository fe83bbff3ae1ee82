"""What one pipeline run did, as `tfxsp run` summarises it: per-node state and duration, the evaluation's metrics
and blessing, the push and the serving validation."""
from __future__ import annotations

import dataclasses
import json
import os

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline import evaluation
from pipeline.metadata.executions import NodeResult, node_results, outputs_of_types
from pipeline.metadata.metrics import eval_metrics, validation_failures
from pipeline.metadata.properties import properties_of
from pipeline.metadata.statistics import read_statistics
from pipeline.metadata.training import TrainingSeen, training_seen

_REPORTED_TYPES = ("Examples", "ExampleStatistics", "ModelRun", "ModelBlessing", "ModelEvaluation", "PushedModel",
                   "tfxsp.ServingValidation")


@dataclasses.dataclass
class RunReport:
    run_id: str
    nodes: list[NodeResult]
    # slice name ("Overall", "species=Adelie", ...) -> metric name -> value
    metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    blessed: bool | None = None
    # Why the Evaluator did not bless, one line per failed threshold.
    validation_failures: list[str] = dataclasses.field(default_factory=list)
    pushed: bool = False
    pushed_version: str | None = None
    pushed_destination: str | None = None
    # Pusher came from the cache: nothing new was pushed, the version is an earlier run's push of this same model.
    push_reused: bool = False
    eval_uri: str | None = None
    examples_uri: str | None = None  # CsvExampleGen's output
    # The ServingValidator's report.json (outcome, reason, checks, latency, rollback), when it ran.
    serving_validation: dict | None = None
    # Steps x batch the Trainer ran (its chief's summary), and the rows per split (StatisticsGen's counts).
    training: TrainingSeen | None = None
    split_rows: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def failed_nodes(self) -> list[str]:
        return [n.node_id for n in self.nodes if n.state == "failed"]

    @property
    def gate_metric(self) -> str | None:
        """The metric the blessing gates on (accuracy or RMSE), as the Evaluator computed it."""
        overall = self.metrics.get("Overall", {})
        return next((m for m in evaluation.GATE_METRIC.values() if m in overall), None)

    def by_slice(self, metric: str | None = None) -> dict[str, float]:
        """slice -> the value of `metric` (default: the gating one)."""
        metric = metric or self.gate_metric
        return {name: values[metric] for name, values in self.metrics.items() if metric in values}


def collect(store: metadata_store.MetadataStore, run_id: str) -> RunReport:
    """The report of the run `run_id` (a pipeline_run context name)."""
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    if run is None:
        raise LookupError(f"no pipeline run {run_id!r} in this metadata store")
    report = RunReport(run_id=run_id, nodes=node_results(store, [run])[run.id])
    order = {node.execution_id: i for i, node in enumerate(report.nodes)}
    outputs = outputs_of_types(store, list(order), _REPORTED_TYPES)
    node_of = {node.execution_id: node.node_id for node in report.nodes}
    for execution_id, artifact in sorted(outputs, key=lambda pair: (order[pair[0]], pair[1].id)):
        if artifact.type == "Examples":
            if node_of.get(execution_id) == "CsvExampleGen":
                report.examples_uri = artifact.uri
            continue
        if artifact.type == "ExampleStatistics":
            if node_of.get(execution_id) == "StatisticsGen":
                report.split_rows = _split_rows(artifact.uri)
            continue
        _read(artifact, report)
    report.push_reused = report.pushed and any(n.node_id == "Pusher" and n.state == "cached" for n in report.nodes)
    return report


def _split_rows(statistics_uri: str) -> dict[str, int]:
    try:
        return {split.split: split.examples for split in read_statistics(statistics_uri)}
    except ValueError:
        return {}  # unreadable statistics: the summary leaves the row counts out


def _read(artifact: mlmd.Artifact, report: RunReport) -> None:
    props = properties_of(artifact)
    if artifact.type == "ModelRun":
        report.training = training_seen(artifact.uri)
    elif artifact.type == "ModelBlessing":
        report.blessed = bool(props.get("blessed"))
    elif artifact.type == "ModelEvaluation":
        report.eval_uri = artifact.uri
        report.metrics = eval_metrics(artifact.uri)
        report.validation_failures = validation_failures(artifact.uri)
    elif artifact.type == "tfxsp.ServingValidation":
        report.serving_validation = serving_validation_report(artifact)
    elif artifact.type == "PushedModel":
        report.pushed = bool(props.get("pushed"))
        if report.pushed:
            report.pushed_version = str(props["pushed_version"])
            report.pushed_destination = props["pushed_destination"]


def serving_validation_report(artifact: mlmd.Artifact) -> dict:
    """The ServingValidator's report.json, or what its custom properties say when the file is gone."""
    path = os.path.join(artifact.uri, "report.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    props = properties_of(artifact)
    return {"outcome": props.get("outcome"), "reason": props.get("reason", "")}
