"""Where each node of a lineage picture goes: a layered (Sugiyama-style) layout, computed here so that no Graphviz
is needed.

Rows follow the data flow: each node sits one row below the lowest of its inputs (nodes without inputs right above
their first consumer); an edge that spans several rows gets a virtual waypoint ("~edge~row") in each row it crosses,
so that it is routed around the nodes; every row is ordered by the barycentre of its neighbours.
"""
from __future__ import annotations

from pipeline.metadata.lineage import Edge, Lineage, Node

BARYCENTRE_SWEEPS = 8


def layout(lineage: Lineage) -> tuple[list[list[str]], list[Edge], dict[int, list[str]]]:
    """The rows (node keys and waypoints, top to bottom), the edges drawn, and each edge's waypoints."""
    nodes = lineage.nodes
    edges = [e for e in lineage.edges if e.source in nodes and e.target in nodes and e.source != e.target]
    preds: dict[str, list[str]] = {k: [] for k in nodes}
    succs: dict[str, list[str]] = {k: [] for k in nodes}
    for edge in edges:
        preds[edge.target].append(edge.source)
        succs[edge.source].append(edge.target)
    layer = _layers(nodes, preds, succs)
    rows: list[list[str]] = [[] for _ in range(max(layer.values(), default=0) + 1)]
    for key, row in layer.items():  # in topological order
        rows[row].append(key)
    for row in rows:
        row.sort(key=lambda k: (nodes[k].kind != "source", nodes[k].type, nodes[k].id or 0))
    up, down, waypoints = _waypoints(nodes, edges, layer, rows)
    _order_by_barycentre(rows, up, down)
    return [row for row in rows if row], edges, waypoints


def _topological_order(nodes: dict[str, Node], preds: dict[str, list[str]],
                       succs: dict[str, list[str]]) -> list[str]:
    """Kahn's algorithm, the nodes farthest from the target first; a cycle (impossible in MLMD) is cut arbitrarily."""
    order: list[str] = []
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
    return order


def _layers(nodes: dict[str, Node], preds: dict[str, list[str]], succs: dict[str, list[str]]) -> dict[str, int]:
    order = _topological_order(nodes, preds, succs)
    position = {k: i for i, k in enumerate(order)}
    layer: dict[str, int] = {}
    for key in order:
        layer[key] = max((layer[p] + 1 for p in preds[key] if position[p] < position[key]), default=0)
    for key in reversed(order):
        if not preds[key] and succs[key]:
            layer[key] = max(0, min(layer[s] for s in succs[key]) - 1)
    return {key: layer[key] for key in order}  # in topological order


def _waypoints(nodes: dict[str, Node], edges: list[Edge], layer: dict[str, int], rows: list[list[str]]):
    """Adds a waypoint to every row an edge crosses; returns each point's neighbours one row up and down, and each
    edge's waypoints."""
    up: dict[str, list[str]] = {k: [] for k in nodes}
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
    return up, down, waypoints


def _order_by_barycentre(rows: list[list[str]], up: dict[str, list[str]], down: dict[str, list[str]]) -> None:
    """Orders every row by the mean position of its neighbours, alternating downwards and upwards sweeps."""
    index = {k: i for row in rows for i, k in enumerate(row)}
    for sweep in range(BARYCENTRE_SWEEPS):
        downwards = sweep % 2 == 0
        for row in (rows if downwards else reversed(rows)):
            neighbours = up if downwards else down
            weights = {k: (sum(index[n] for n in neighbours[k]) / len(neighbours[k]) if neighbours[k] else index[k])
                       for k in row}
            row.sort(key=lambda k: weights[k])
            for i, k in enumerate(row):
                index[k] = i
