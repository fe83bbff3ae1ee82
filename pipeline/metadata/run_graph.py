"""A run's pipeline graph: one node per execution of the run, an edge wherever a node read what another wrote.

Built as a Lineage of executions only, so that the lineage picture (render/) draws it, laid out and framed in the
colour of each node's state, from what `runs.show_run` already read: no further ML Metadata call.
"""
from __future__ import annotations

from pipeline.metadata.lineage import Edge, Lineage, Node
from pipeline.metadata.runs import RunDetail


def run_graph(detail: RunDetail) -> Lineage:
    """The run's nodes (key e<execution id>) and the artifacts that flowed between them, as edges."""
    nodes: dict[str, Node] = {}
    writer: dict[int, str] = {}  # artifact id -> key of the node of this run that wrote it
    for result in detail.summary.nodes:
        key = f"e{result.execution_id}"
        nodes[key] = Node(key=key, kind="execution", id=result.execution_id, type=result.node_id,
                          label=result.node_id, run_ids=[detail.summary.run_id], state=result.state,
                          created_ms=result.started_ms, seconds=result.seconds,
                          properties=detail.parameters.get(result.execution_id, {}))
        for artifact in detail.outputs.get(result.execution_id, []):
            writer.setdefault(artifact.id, key)
    edges: dict[tuple[str, str], Edge] = {}
    for result in detail.summary.nodes:
        target = f"e{result.execution_id}"
        for artifact in detail.inputs.get(result.execution_id, []):
            source = writer.get(artifact.id)
            if source is None or source == target:
                continue  # read from an earlier run (the Evaluator's baseline, a resolved model)
            edge = edges.setdefault((source, target), Edge(source=source, target=target, kind="input", keys=[]))
            edge.keys += [k for k in artifact.keys if k not in edge.keys]
            edge.baseline = edge.baseline or "baseline_model" in artifact.keys
    first = next(iter(nodes), "")
    return Lineage(target=first, description=f"run {detail.summary.run_id}", direction="pipeline",
                   nodes=nodes, edges=list(edges.values()))
