"""A lineage as Graphviz DOT text (`dot -Tsvg`), for people who have Graphviz."""
from __future__ import annotations

from pipeline.metadata.lineage import Lineage
from pipeline.metadata.render.svg import STATE_COLOURS, fill, node_lines


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(lineage: Lineage) -> str:
    """Graphviz DOT text (`dot -Tsvg`), for people who have Graphviz."""
    lines = ["digraph lineage {", "  rankdir=TB;",
             f"  label={_dot_quote(f'Lineage ({lineage.direction}) of {lineage.description}')};",
             "  labelloc=t;", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9, color="#64748b"];']
    for node in lineage.ordered():
        line1, line2, line3 = node_lines(node)
        label = "\n".join(t for t in (line1, line2, line3) if t)
        if node.kind == "execution":
            attrs = (f'shape=box, color="{STATE_COLOURS.get(node.state, "#475569")}", '
                     f"penwidth={3 if node.key == lineage.target else 1.5}")
        else:
            shape = "folder" if node.kind == "source" else "box"
            attrs = (f'shape={shape}, style="rounded,filled{",dashed" if node.boundary else ""}", '
                     f'fillcolor="{fill(node)}", '
                     f"penwidth={3 if node.key == lineage.target else 1}")
        lines.append(f"  {_dot_quote(node.key)} [label={_dot_quote(label)}, {attrs}];")
    for edge in lineage.edges:
        style = ", style=dashed" if edge.baseline else ""
        lines.append(f"  {_dot_quote(edge.source)} -> {_dot_quote(edge.target)} "
                     f"[label={_dot_quote(', '.join(edge.keys))}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
