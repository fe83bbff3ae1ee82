"""Pipeline runs from ML Metadata: list them, find one, show what one did.

    list_runs(store, "penguin_serving")     newest first: per-node state and duration, blessing, pushed version
    find_run(store, name, "latest")         a run context by id, unique prefix, `latest` or -1, -2, ...
    show_run(store, name, run)              every node's state, parameters, inputs and outputs, and the metrics

A listing costs a handful of MLMD calls however many runs the store holds (see executions.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.metadata.executions import NodeResult, node_results, outputs_of_types
from pipeline.metadata.metrics import eval_metrics
from pipeline.metadata.properties import (
    INPUT_EVENTS,
    OUTPUT_EVENTS,
    custom_string,
    event_keys,
    iso,
    key_properties,
    properties_of,
)
from pipeline.metadata.store import EmptyStoreError, NotFoundError, require_not_empty


def latest_run_id(store: metadata_store.MetadataStore, pipeline_name: str) -> str | None:
    """The newest run of `pipeline_name` in this store, or None when it never ran."""
    runs = pipeline_runs(store, pipeline_name)
    return runs[-1].name if runs else None


def run_started_since(store: metadata_store.MetadataStore, pipeline_name: str, since_ms: int) -> mlmd.Context | None:
    """The newest run of `pipeline_name` that started at or after `since_ms` (milliseconds since the epoch): the run
    a process started at that time, when one pipeline root runs one run at a time."""
    found = store.get_contexts(list_options=metadata_store.ListOptions(
        filter_query=f"type = 'pipeline_run' AND create_time_since_epoch >= {int(since_ms)}"))
    found = [run for run in found if _belongs_to(store, run, pipeline_name)]
    return max(found, key=lambda run: (run.create_time_since_epoch, run.id)) if found else None


def pipeline_runs(store: metadata_store.MetadataStore,
                  pipeline_name: str) -> list[mlmd.Context]:
    """Every run context of `pipeline_name`, oldest first: one query where runs are linked to
    their pipeline (TFX >= 1.x), one per run in older stores."""
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    runs = [c for c in (store.get_children_contexts_by_context(pipeline.id) if pipeline else [])
            if c.type == "pipeline_run"]
    if not runs:
        runs = [c for c in store.get_contexts_by_type("pipeline_run")
                if _belongs_to(store, c, pipeline_name)]
    return sorted(runs, key=lambda c: (c.create_time_since_epoch, c.id))


def _belongs_to(store: metadata_store.MetadataStore, run: mlmd.Context,
                pipeline_name: str) -> bool:
    parents = store.get_parent_contexts_by_context(run.id)
    if parents:
        return any(p.name == pipeline_name for p in parents)
    # Older stores have no parent links; the run's executions name the pipeline's nodes.
    return any(c.name.startswith(pipeline_name + ".")
               for e in store.get_executions_by_context(run.id)[:1]
               for c in store.get_contexts_by_execution(e.id) if c.type == "node")


@dataclasses.dataclass
class RunSummary:
    run_id: str
    context_id: int
    pipeline: str
    started_ms: int
    seconds: float
    state: str  # complete | failed | running | abandoned (see mark_abandoned)
    nodes: list[NodeResult]
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
    runs = pipeline_runs(store, pipeline_name)
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
    results = node_results(store, runs)
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


OUTCOME_TYPES = ("ModelBlessing", "PushedModel", "tfxsp.ServingValidation")


def _fill_outcomes(store: metadata_store.MetadataStore, summaries: list[RunSummary]) -> None:
    """Blessing, pushed version and serving validation of each run, batched over all runs."""
    run_of = {n.execution_id: s for s in summaries for n in s.nodes}
    for execution_id, artifact in outputs_of_types(store, list(run_of), OUTCOME_TYPES):
        summary = run_of[execution_id]
        props = artifact.custom_properties
        if artifact.type == "ModelBlessing" and "blessed" in props:
            summary.blessed = bool(props["blessed"].int_value)
        elif artifact.type == "PushedModel" and props.get("pushed") and props["pushed"].int_value:
            summary.pushed_version = props["pushed_version"].string_value
        elif artifact.type == "tfxsp.ServingValidation":
            summary.serving_validation = custom_string(artifact, "outcome")


def mark_abandoned(summaries: list[RunSummary], live_since_ms: int | None) -> list[RunSummary]:
    """Marks `abandoned` the runs that ML Metadata shows running but that no process runs any more, and their running
    nodes: TFX leaves an execution RUNNING when its process dies (SIGKILL) or is stopped by a signal, and nothing
    ever ends it. `live_since_ms`: when the process that now holds the pipeline root's run lock took it (its run
    starts after that), or None when no process holds it. Returns the runs it marked."""
    marked = []
    for summary in summaries:
        if summary.state != "running" or (live_since_ms is not None and summary.started_ms >= live_since_ms):
            continue
        summary.state = "abandoned"
        for node in summary.nodes:
            if node.state in ("running", "new"):
                node.state = "abandoned"
        marked.append(summary)
    return marked


def list_runs(store: metadata_store.MetadataStore, pipeline_name: str,
              limit: int | None = None, offset: int = 0) -> list[RunSummary]:
    """The pipeline's runs, newest first (the newest `limit` of them after skipping the newest `offset`: a page),
    with per-node state and duration, blessing and pushed version."""
    runs = list(reversed(_pipeline_run_contexts(store, pipeline_name)))[offset:]
    runs = runs[:limit] if limit else runs
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
        side = (detail.inputs if event.type in INPUT_EVENTS else
                detail.outputs if event.type in OUTPUT_EVENTS else None)
        if side is None:
            continue
        side.setdefault(event.execution_id, []).append(ArtifactRef(
            id=artifact.id, type=artifact.type, uri=artifact.uri, keys=event_keys(event),
            properties=properties_of(artifact)))
        if event.type in OUTPUT_EVENTS and artifact.type == "ModelEvaluation":
            detail.metrics = eval_metrics(artifact.uri)
        if event.type in OUTPUT_EVENTS and artifact.type == "tfxsp.ServingValidation":
            detail.serving_validation = properties_of(artifact)
    return detail


