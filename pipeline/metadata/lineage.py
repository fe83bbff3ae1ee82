"""Lineage from ML Metadata: which data, code and parameters produced an artifact (upstream), or what was derived
from it (downstream), as a graph of typed nodes and edges.

    artifact, label = resolve_target(store, "served", model_base_path)   # or an id, "latest-model", ...
    graph = trace(store, artifact.id, "upstream")                       # Lineage: nodes, edges, summary()
    render.to_svg(graph), render.to_html(graph), render.to_dot(graph), graph.to_dict()

A trace is one `get_lineage_subgraph` call per direction (plus one batched look-up of the producers of the artifacts
at its edge). Two rules shape it, both switchable:
* A cached execution (state CACHED) re-publishes the outputs of the execution it reused. It is folded into that
  execution, which then lists the runs that reused it (`show_cached=True` keeps it as a node of its own).
* The Evaluator's `baseline_model` input is the previously blessed model it was compared with. It gated the
  blessing but did not produce the model, so the trace shows it as a boundary node and does not follow it further
  (`follow_baseline=True` follows it).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from ml_metadata import errors as mlmd_errors
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.metadata.artifacts import artifact_by_id, newest_artifact, quote, resolve_type_name
from pipeline.metadata.executions import producers
from pipeline.metadata.models import served_version
from pipeline.metadata.properties import (
    INPUT_EVENTS,
    MODEL_ACTION_TYPE,
    OUTPUT_EVENTS,
    artifact_state,
    event_keys,
    execution_seconds,
    execution_state,
    iso,
    key_properties,
    properties_of,
    short_type,
)
from pipeline.metadata.store import NotFoundError, require_not_empty

# Input keys through which an execution only compares with an earlier artifact (it did not derive its outputs from
# it): the Evaluator's baseline model, chosen by the latest-blessed Resolver.
BASELINE_KEYS = frozenset({"baseline_model"})
MAX_HOPS = 64  # a pipeline of N components is at most 2N hops deep; this is a generous bound


# ======================================================================================= targets
SHORTCUTS = {
    "served": "the version TF Serving serves: the highest version folder in the model base path",
    "latest-pushed": "the newest PushedModel that was pushed",
    "latest-model": "the newest Model",
    "latest-examples": "the newest Examples",
    "latest-<type>": "the newest artifact of a type, e.g. latest-transform-graph",
    "version:N": "the PushedModel of pushed version N",
    "ID": "an artifact id, e.g. 37 (tfxsp artifacts --type T lists them)",
}


def _pushed_version(store: metadata_store.MetadataStore, version: str,
                    preferred_destination: str | None = None) -> mlmd.Artifact | None:
    found = store.get_artifacts(list_options=metadata_store.ListOptions(filter_query=(
        "type = 'PushedModel' AND custom_properties.pushed.int_value = 1 AND "
        f"custom_properties.pushed_version.string_value = {quote(version)}")))
    if not found:
        return None
    return sorted(found, key=lambda a: (
        properties_of(a).get("pushed_destination") != preferred_destination,
        -a.create_time_since_epoch, -a.id))[0]


def resolve_target(store: metadata_store.MetadataStore, target: str,
                   model_base_path: str) -> tuple[mlmd.Artifact, str]:
    """The artifact a trace starts from, and a line that says how it was found. See SHORTCUTS."""
    text = target.strip()
    key = text.lower()
    if key.lstrip("#").isdigit():
        artifact = artifact_by_id(store, int(key.lstrip("#")))
        return artifact, f"{artifact.type} #{artifact.id}"
    require_not_empty(store)
    if key == "served":
        version = served_version(model_base_path)
        newest = newest_artifact(
            store, "type = 'PushedModel' AND custom_properties.pushed.int_value = 1")
        hint = (f" The newest pushed model is version "
                f"{properties_of(newest).get('pushed_version')} (tfxsp lineage latest-pushed)."
                if newest is not None else " No model was pushed yet.")
        if version is None:
            raise NotFoundError(f"Nothing is served from {model_base_path}: it holds no "
                                f"version folder.{hint}")
        artifact = _pushed_version(store, version,
                                   os.path.join(model_base_path, version))
        if artifact is None:
            raise NotFoundError(f"Version {version} in {model_base_path} is not recorded "
                                f"in this metadata store (pushed by another store or by hand?)."
                                f"{hint}")
        return artifact, (f"served: version {version} in {model_base_path} "
                          f"(PushedModel #{artifact.id})")
    if key.startswith("version:"):
        version = text.split(":", 1)[1].strip()
        artifact = _pushed_version(store, version)
        if artifact is None:
            raise NotFoundError(f"No pushed version {version} in this metadata store "
                                "(tfxsp models lists them).")
        return artifact, f"pushed version {version} (PushedModel #{artifact.id})"
    if key == "latest-pushed":
        artifact = newest_artifact(
            store, "type = 'PushedModel' AND custom_properties.pushed.int_value = 1")
        if artifact is None:
            raise NotFoundError("No model was pushed yet in this metadata store.")
        return artifact, (f"latest pushed: version {properties_of(artifact).get('pushed_version')}"
                          f" (PushedModel #{artifact.id})")
    if key.startswith("latest-") or key.startswith("latest:"):
        type_name = resolve_type_name(store, text[len("latest-"):])
        artifact = newest_artifact(store, f"type = {quote(type_name)}")
        if artifact is None:
            raise NotFoundError(f"No {type_name} artifact in this metadata store yet.")
        return artifact, f"latest {type_name} (#{artifact.id})"
    raise NotFoundError(f"Unknown target {target!r}. Use "
                        + "; ".join(f"{k} ({v})" for k, v in SHORTCUTS.items()) + ".")



# ========================================================================================= graph
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
                and (component is None or short_type(n.type) == component
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
        artifact_by_id(store, artifact_id)  # raises the message for a person
        raise


def trace(store: metadata_store.MetadataStore, artifact_id: int, direction: str = "upstream", *,
          follow_baseline: bool = False, show_cached: bool = False, max_hops: int = MAX_HOPS,
          description: str = "") -> Lineage:
    """The lineage of an artifact: everything it was derived from (upstream), everything derived from it
    (downstream), or both, as typed nodes and edges. See the module docstring for cached executions and baseline
    inputs."""
    if direction not in ("upstream", "downstream", "both"):
        raise ValueError(f"direction must be upstream, downstream or both, not {direction!r}")
    directions = ["upstream", "downstream"] if direction == "both" else [direction]
    graph = _Subgraphs([_subgraph(store, artifact_id, d, max_hops) for d in directions])
    start = f"a{artifact_id}"
    reached, boundary, kept_edges = _walk(graph.edges(), start, directions, follow_baseline)
    nodes = {key: node for key, distance in reached.items()
             if (node := graph.node(key, distance, key in boundary)) is not None}
    unique_edges = {(e.source, e.target): e for e in kept_edges if e.source in nodes and e.target in nodes}
    lineage = Lineage(target=start, description=description or nodes[start].label,
                      direction=direction, nodes=nodes, edges=list(unique_edges.values()))
    if not show_cached:
        _fold_cached(lineage)
    _artifact_runs(lineage)
    unknown = [n.id for n in nodes.values() if n.kind == "artifact" and not n.run_ids]
    if unknown:  # the target of a downstream trace, a baseline: their producer is not traced
        for unknown_id, producer in producers(store, unknown).items():
            nodes[f"a{unknown_id}"].run_ids = [producer["run_id"]] if producer["run_id"] else []
    if "upstream" in directions:
        _add_sources(lineage)
    lineage.edges.sort(key=lambda e: (nodes[e.target].distance, e.source, e.target)
                       if e.target in nodes else (0, e.source, e.target))
    return lineage


class _Subgraphs:
    """The records of one or two get_lineage_subgraph answers, by id."""

    def __init__(self, graphs: list[mlmd.LineageGraph]):
        self.graphs = graphs
        self.artifacts = {a.id: a for g in graphs for a in g.artifacts}
        self.executions = {e.id: e for g in graphs for e in g.executions}
        self.artifact_types = {t.id: t.name for g in graphs for t in g.artifact_types}
        self.execution_types = {t.id: t.name for g in graphs for t in g.execution_types}
        contexts = {c.id: c for g in graphs for c in g.contexts}
        self.node_of: dict[int, str] = {}  # execution id -> pipeline node id
        self.runs_of: dict[int, list[str]] = {}  # execution id -> run ids
        for association in (a for g in graphs for a in g.associations):
            context = contexts.get(association.context_id)
            if context is None:
                continue
            if context.type == "node":
                self.node_of[association.execution_id] = context.name.split(".", 1)[-1]
            elif context.type == "pipeline_run":
                runs = self.runs_of.setdefault(association.execution_id, [])
                if context.name not in runs:
                    runs.append(context.name)

    def edges(self) -> list[Edge]:
        """Every edge once, in data-flow direction; the Resolver's INTERNAL_* events are no lineage."""
        edges: dict[tuple[str, str], Edge] = {}
        for event in (e for g in self.graphs for e in g.events):
            a, x = f"a{event.artifact_id}", f"e{event.execution_id}"
            keys = event_keys(event)
            if event.type in INPUT_EVENTS:
                edge = Edge(a, x, "input", keys, baseline=bool(keys) and set(keys) <= BASELINE_KEYS)
            elif event.type in OUTPUT_EVENTS:
                edge = Edge(x, a, "output", keys)
            else:
                continue
            known = edges.get((edge.source, edge.target))
            if known is None:
                edges[(edge.source, edge.target)] = edge
            else:
                known.keys = sorted(set(known.keys) | set(keys))
                known.baseline = known.baseline and edge.baseline
        return list(edges.values())

    def node(self, key: str, distance: int, boundary: bool) -> Node | None:
        number = int(key[1:])
        if key[0] == "a" and number in self.artifacts:
            artifact = self.artifacts[number]
            type_name = artifact.type or self.artifact_types.get(artifact.type_id, "Artifact")
            return Node(key=key, kind="artifact", id=number, type=type_name, label=f"{type_name} #{number}",
                        state=artifact_state(artifact), created_ms=artifact.create_time_since_epoch,
                        uri=artifact.uri, properties=properties_of(artifact), distance=distance, boundary=boundary)
        if key[0] == "e" and number in self.executions:
            execution = self.executions[number]
            type_name = execution.type or self.execution_types.get(execution.type_id, "Execution")
            return Node(key=key, kind="execution", id=number, type=type_name,
                        label=self.node_of.get(number) or _execution_label(type_name, execution),
                        run_ids=self.runs_of.get(number, []), state=execution_state(execution),
                        created_ms=execution.create_time_since_epoch, properties=properties_of(execution),
                        distance=distance, seconds=execution_seconds(execution), boundary=boundary)
        return None


def _execution_label(type_name: str, execution: mlmd.Execution) -> str:
    """What a person calls an execution outside a pipeline's nodes: a model action by its verb."""
    if type_name == MODEL_ACTION_TYPE and "action" in execution.properties:
        return f"models {execution.properties['action'].string_value}"
    return short_type(type_name)


def _walk(edges: list[Edge], start: str, directions: list[str], follow_baseline: bool
          ) -> tuple[dict[str, int], set[str], list[Edge]]:
    """Breadth-first from `start` over derivation edges in each direction: the nodes reached with their distance,
    the boundary nodes (reached only through a baseline edge, not followed), and the edges walked."""
    reached: dict[str, int] = {start: 0}
    boundary: set[str] = set()
    kept_edges: list[Edge] = []
    for d in directions:
        near, far = ("target", "source") if d == "upstream" else ("source", "target")
        by_near: dict[str, list[Edge]] = {}
        for edge in edges:
            by_near.setdefault(getattr(edge, near), []).append(edge)
        queue, seen = [start], {start: 0}
        while queue:
            key = queue.pop(0)
            for edge in by_near.get(key, []):
                other = getattr(edge, far)
                kept_edges.append(edge)
                if edge.baseline and not follow_baseline:
                    if other not in seen:
                        reached.setdefault(other, seen[key] + 1)
                        boundary.add(other)
                    continue
                if other not in seen:
                    seen[other] = seen[key] + 1
                    queue.append(other)
        for key, distance in seen.items():
            reached[key] = min(reached.get(key, distance), distance)
            boundary.discard(key)
    return reached, boundary, kept_edges

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


def _tail(path: str, parts: int) -> str:
    return "/".join(path.rstrip("/").split("/")[-parts:])


