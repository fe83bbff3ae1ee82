"""A lineage as an SVG picture, laid out here (render/layout.py; no Graphviz needed): data flows from top to bottom,
artifacts are rounded and coloured by type, executions are framed in the colour of their state, the target has a
thick outline, baseline inputs are dashed."""
from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape as _xml_escape

from pipeline.metadata.lineage import Edge, Lineage, Node
from pipeline.metadata.properties import key_properties
from pipeline.metadata.render.layout import layout

PALETTE = {
    "Examples": "#dbeafe", "ExampleStatistics": "#e0f2fe", "Schema": "#ede9fe",
    "ExampleAnomalies": "#fce7f3", "TransformGraph": "#dcfce7", "TransformCache": "#f0fdf4",
    "Model": "#fef3c7", "ModelRun": "#fefce8", "ModelBlessing": "#ffedd5",
    "ModelEvaluation": "#fff7ed", "PushedModel": "#fee2e2", "tfxsp.ServingValidation": "#fae8ff",
    "ExternalData": "#f1f5f9",
}
STATE_COLOURS = {"complete": "#16a34a", "cached": "#2563eb", "failed": "#dc2626", "running": "#d97706",
                 "abandoned": "#9ca3af"}
NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN, WAYPOINT_W = 220, 62, 30, 58, 24, 14


def fill(node: Node) -> str:
    if node.kind == "execution":
        return "#ffffff"
    return PALETTE.get(node.type, "#f5f5f4")


def clip(text: str, width: int = 34) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def node_lines(node: Node) -> tuple[str, str, str]:
    """The three lines a node's box shows."""
    if node.kind == "source":
        return ("CSV / external input", clip(node.uri), clip(node.subtitle))
    if node.kind == "execution":
        extra = f"cached in {len(node.cached_in)} later run(s)" if node.cached_in else \
            clip(node.run_ids[0] if node.run_ids else "", 34)
        return (f"{node.label}", node.subtitle, extra)
    return (node.label, clip(str(node.subtitle)), clip(node.run_ids[0] if node.run_ids else ""))


def as_text(value: Any) -> str:
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
        text = as_text(value)
        lines.append(f"{key}: {text if len(text) < 300 else text[:300] + '…'}")
    return "\n".join(lines)


def to_svg(lineage: Lineage, *, standalone: bool = True, link: str = "#node-{key}", title: str | None = None) -> str:
    """The picture. standalone: a file of its own (an XML declaration, no links); else for embedding in a page,
    each node linking to `link` (formatted with the node's key, kind and id). title: the heading drawn (default:
    what was traced, from where)."""
    rows, drawn, waypoints = layout(lineage)
    title = title or f"Lineage ({lineage.direction}) of {lineage.description}"
    picture = _Placement(rows, title)
    out = []
    attrs = (f'xmlns="http://www.w3.org/2000/svg" width="{picture.width:.0f}" height="{picture.height:.0f}" '
             f'viewBox="0 0 {picture.width:.0f} {picture.height:.0f}" font-family="Helvetica, Arial, sans-serif"')
    if standalone:
        out.append('<?xml version="1.0" encoding="UTF-8"?>')
    out.append(f'<svg {attrs} role="img">')
    out.append(f"<title>{_xml_escape(title)}</title>")
    out.append('<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
               'markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
               'fill="#64748b"/></marker></defs>')
    out.append(f'<text x="{MARGIN}" y="{MARGIN + 12}" font-size="15" font-weight="bold">'
               f"{_xml_escape(title)}</text>")
    out.extend(_edges(picture, drawn, waypoints))
    out.append('<g class="nodes">')
    for key, (x, y) in picture.place.items():
        if not key.startswith("~"):
            out.extend(_node(lineage, lineage.nodes[key], x, y, None if standalone else link))
    out.append("</g></svg>")
    return "\n".join(out) + "\n"


class _Placement:
    """The picture's size and the top-left corner of every node and waypoint."""

    def __init__(self, rows: list[list[str]], title: str):
        def row_width(row: list[str]) -> float:
            return sum(self.size(k) for k in row) + GAP_X * max(0, len(row) - 1)
        self.width = max(MARGIN * 2 + max((row_width(r) for r in rows), default=NODE_W), MARGIN * 2 + 8 * len(title))
        self.height = MARGIN * 2 + 30 + len(rows) * NODE_H + max(0, len(rows) - 1) * GAP_Y
        self.place: dict[str, tuple[float, float]] = {}
        for r, row in enumerate(rows):
            x = (self.width - row_width(row)) / 2
            for key in row:
                self.place[key] = (x, MARGIN + 30 + r * (NODE_H + GAP_Y))
                x += self.size(key) + GAP_X

    @staticmethod
    def size(key: str) -> float:
        return WAYPOINT_W if key.startswith("~") else NODE_W

    def centre(self, key: str) -> float:
        return self.place[key][0] + self.size(key) / 2


def _endpoints(picture: _Placement, drawn: list[Edge], waypoints: dict[int, list[str]]):
    """Where each edge leaves its source (bottom) and reaches its target (top), spread along the side in the order
    of the next point on the edge, so that edges do not share an endpoint."""
    leave: dict[int, float] = {}
    reach: dict[int, float] = {}
    for side, end, toward in ((leave, "source", lambda i: (waypoints[i] or [drawn[i].target])[0]),
                              (reach, "target", lambda i: (waypoints[i] or [drawn[i].source])[-1])):
        slots: dict[str, list[int]] = {}
        for i, edge in enumerate(drawn):
            slots.setdefault(getattr(edge, end), []).append(i)
        for key, indices in slots.items():
            indices.sort(key=lambda i: picture.centre(toward(i)))
            for n, i in enumerate(indices):
                side[i] = picture.place[key][0] + NODE_W * (n + 1) / (len(indices) + 1)
    return leave, reach


def _edges(picture: _Placement, drawn: list[Edge], waypoints: dict[int, list[str]]) -> list[str]:
    leave, reach = _endpoints(picture, drawn, waypoints)
    place = picture.place
    out = ['<g class="edges" fill="none" stroke="#64748b" stroke-width="1.3">']
    labels = []
    for i, edge in enumerate(drawn):
        points = [(leave[i], place[edge.source][1] + NODE_H)]
        for point in waypoints[i]:  # straight down through each row the edge crosses
            points += [(picture.centre(point), place[point][1]), (picture.centre(point), place[point][1] + NODE_H)]
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
                   f"<title>{_xml_escape(f'{edge.source} -> {edge.target}: {label}')}</title></path>")
        if label:  # halfway along the last stretch, into the target
            (x1, y1), (x2, y2) = points[-2], points[-1]
            labels.append(f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 + 3:.1f}" text-anchor="middle" '
                          'stroke="#ffffff" stroke-width="3" paint-order="stroke">'
                          f"{_xml_escape(clip(label, 26))}</text>")
    out.append("</g>")
    return [*out, '<g class="edge-labels" font-size="10" fill="#334155">', *labels, "</g>"]


def _node(lineage: Lineage, node: Node, x: float, y: float, link: str | None) -> list[str]:
    stroke = STATE_COLOURS.get(node.state, "#475569") if node.kind == "execution" else "#475569"
    stroke_width = 3.5 if node.key == lineage.target else 1.2
    radius = 12 if node.kind == "artifact" else 2
    dash = ' stroke-dasharray="6 4"' if node.boundary else ""
    line1, line2, line3 = node_lines(node)
    href = link.format(key=node.key, kind=node.kind, id=node.id) if link else None
    return [
        (f'<a href="{_xml_escape(href)}">' if href else "") + f'<g class="node {node.kind}" id="svg-{node.key}">',
        f"<title>{_xml_escape(_tooltip(node))}</title>",
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="{radius}" fill="{fill(node)}" '
        f'stroke="{stroke}" stroke-width="{stroke_width}"{dash}/>',
        f'<text x="{x + 10:.1f}" y="{y + 19:.1f}" font-size="13" font-weight="bold" fill="#0f172a">'
        f"{_xml_escape(clip(line1, 30))}</text>",
        f'<text x="{x + 10:.1f}" y="{y + 36:.1f}" font-size="11" fill="#334155">{_xml_escape(line2)}</text>',
        f'<text x="{x + 10:.1f}" y="{y + 52:.1f}" font-size="10" fill="#64748b">{_xml_escape(line3)}</text>',
        "</g>" + ("</a>" if href else ""),
    ]
