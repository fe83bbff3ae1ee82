"""Executions, batched: which node and run each belongs to, its state and duration, who produced an artifact.

Every query is batched: one call per 100 executions where MLMD caps a call (the starting nodes of
get_lineage_subgraph), never one call per execution or artifact.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from ml_metadata import errors as mlmd_errors
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.metadata.properties import OUTPUT_EVENTS, execution_seconds, execution_state, short_type


@dataclasses.dataclass
class NodeResult:
    node_id: str
    state: str
    seconds: float
    execution_id: int | None = None
    started_ms: int = 0  # the execution's create time, milliseconds since the epoch


def node_results(store: metadata_store.MetadataStore, runs: Iterable[mlmd.Context]
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
                    state=execution_state(execution),
                    seconds=execution_seconds(execution),
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
    options = mlmd.LineageSubgraphQueryOptions
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
            try:
                linked = store.get_contexts_by_execution(execution_id)
            except mlmd_errors.NotFoundError:  # an execution recorded outside any context (not by TFX)
                linked = []
        else:
            linked = [contexts[c] for c in associations[execution_id] if c in contexts]
        found[execution_id] = (
            next((c.name.split(".", 1)[-1] for c in linked if c.type == "node"), ""),
            sorted(c.id for c in linked if c.type == "pipeline_run"))
    return found


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclasses.dataclass
class ExecutionInfo:
    node_id: str
    run_ids: list[str]
    pipeline: str = ""


def execution_infos(store: metadata_store.MetadataStore, execution_ids: Iterable[int]
                     ) -> dict[int, ExecutionInfo]:
    """Node id and run names of executions: batched through execution_contexts."""
    contexts = execution_contexts(store, list(execution_ids))
    run_context_ids = sorted({r for _, runs in contexts.values() for r in runs})
    names = {c.id: c.name for c in store.get_contexts_by_id(run_context_ids)} \
        if run_context_ids else {}
    return {e: ExecutionInfo(node_id=node, run_ids=[names.get(r, str(r)) for r in runs])
            for e, (node, runs) in contexts.items()}


def outputs_of_types(store: metadata_store.MetadataStore, execution_ids: list[int],
                      type_names: Iterable[str]) -> list[tuple[int, mlmd.Artifact]]:
    """(execution id, artifact) for the outputs of these executions that have one of the types:
    one call for the events, one per 500 artifacts for the artifacts."""
    if not execution_ids:
        return []
    events = [e for e in store.get_events_by_execution_ids(execution_ids)
              if e.type in OUTPUT_EVENTS]
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


def producers(store: metadata_store.MetadataStore, artifact_ids: list[int]
               ) -> dict[int, dict[str, Any]]:
    """artifact id -> the execution that produced it (its original, not a cached reuse), with
    node id, run and how many cached executions re-published it. Three batched calls."""
    if not artifact_ids:
        return {}
    events = [e for e in store.get_events_by_artifact_ids(artifact_ids)
              if e.type in OUTPUT_EVENTS]
    executions = {e.id: e for e in store.get_executions_by_id(sorted({e.execution_id
                                                                      for e in events}))}
    infos = execution_infos(store, executions)
    by_artifact: dict[int, list[mlmd.Execution]] = {}
    for event in events:
        if event.execution_id in executions:
            by_artifact.setdefault(event.artifact_id, []).append(executions[event.execution_id])
    found = {}
    for artifact_id, candidates in by_artifact.items():
        candidates.sort(key=lambda e: (e.last_known_state == mlmd.Execution.CACHED,
                                       e.create_time_since_epoch, e.id))
        original = candidates[0]
        info = infos.get(original.id, ExecutionInfo("", []))
        found[artifact_id] = {
            "execution_id": original.id, "node_id": info.node_id or short_type(original.type),
            "component": short_type(original.type), "run_id": (info.run_ids or [None])[0],
            "state": execution_state(original),
            "reused_by": sum(1 for e in candidates[1:] if e.last_known_state
                             == mlmd.Execution.CACHED)}
    return found


