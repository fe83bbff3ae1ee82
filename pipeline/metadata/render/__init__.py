"""Pictures of a lineage: an SVG laid out here, a self-contained HTML page, Graphviz DOT text."""
from pipeline.metadata.render.dot import to_dot
from pipeline.metadata.render.html import to_html
from pipeline.metadata.render.svg import to_svg

__all__ = ["to_dot", "to_html", "to_svg"]
