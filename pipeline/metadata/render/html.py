"""A lineage as a self-contained HTML page (no scripts, no external files): the SVG picture, what produced the
target at a glance, and every node's properties and parameters. Rendered with Jinja2 from templates/lineage.html."""
from __future__ import annotations

import datetime
import functools

import jinja2

from pipeline.metadata.lineage import Lineage
from pipeline.metadata.properties import key_properties
from pipeline.metadata.render.svg import as_text, to_svg


@functools.cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.PackageLoader("pipeline.metadata.render", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters["as_text"] = as_text
    return environment


def to_html(lineage: Lineage, *, store_description: str = "") -> str:
    rows = [{"node": node,
             "shown": node.properties if node.kind != "artifact" else key_properties(node.type, node.properties),
             "inputs": [(lineage.nodes[e.source].label, e.keys) for e in lineage.inputs_of(node.key)
                        if e.source in lineage.nodes]}
            for node in lineage.ordered()]
    return _environment().get_template("lineage.html").render(
        title=f"Lineage of {lineage.description}", lineage=lineage, summary=lineage.summary(), rows=rows,
        svg=to_svg(lineage, standalone=False), store_description=store_description,
        generated=datetime.datetime.now().isoformat(timespec="seconds"))
