"""`tfxsp lineage TARGET`: which data, code and parameters produced an artifact, or what was derived from it."""
from __future__ import annotations

import os

import click
from rich.table import Table

from pipeline.cli import console
from pipeline.cli.options import fail, guarded, metadata_options, open_metadata
from pipeline.cli.tables import e, short, styled


@click.command()
@click.argument("target")
@click.option("--upstream", "direction", flag_value="upstream", default=True,
              help="What the target was derived from (default).")
@click.option("--downstream", "direction", flag_value="downstream",
              help="What was derived from the target.")
@click.option("--both", "direction", flag_value="both", help="Upstream and downstream.")
@metadata_options(("table", "json", "dot", "svg", "html"))
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of stdout (svg and html default to "
                   "lineage-<id>.<format> in the current folder).")
@click.option("--show-cached", is_flag=True,
              help="Keep cached executions as nodes of their own instead of folding them into "
                   "the execution whose outputs they reused.")
@click.option("--follow-baseline", is_flag=True,
              help="Follow the Evaluator's baseline_model input too (the previously blessed "
                   "model it was compared with).")
def lineage(target: str, direction: str, set_items: tuple[str, ...],
            metadata_url: str | None, output_format: str | None, output: str | None,
            show_cached: bool, follow_baseline: bool) -> None:
    """Trace an artifact's lineage through ML Metadata.

    TARGET: `served` (the version TF Serving serves from the model base path), `latest-pushed`,
    `latest-model`, `latest-examples`, `latest-<type>` (e.g. latest-transform-graph),
    `version:N` (a pushed version), or an artifact id.

    Formats: table (people), json (scripts), dot (Graphviz), svg and html (a picture; no Graphviz
    needed; html adds every node's properties and parameters).
    """
    from pipeline.metadata import lineage as api
    from pipeline.metadata import render
    output_format = output_format or "table"
    config, store, where = open_metadata(set_items, metadata_url)
    artifact, description = guarded(lambda: api.resolve_target(store, target, config.serving_model_dir))
    graph = guarded(lambda: api.trace(store, artifact.id, direction, show_cached=show_cached,
                                       follow_baseline=follow_baseline,
                                       description=description))
    if output_format == "table":
        _print_lineage(graph, where)
        return
    if output_format == "json":
        import orjson
        text = orjson.dumps({"store": where, **graph.to_dict()},
                            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
    elif output_format == "dot":
        text = render.to_dot(graph)
    elif output_format == "svg":
        text = render.to_svg(graph)
    else:
        text = render.to_html(graph, store_description=where)
    if output is None and output_format in ("svg", "html"):
        output = f"lineage-{artifact.id}.{output_format}"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as error:
        fail("Cannot write:", f"{output}: {error.strerror}")
    console.console.print(f"Wrote {e(os.path.abspath(output))} ({output_format}, "
                     f"{len(graph.nodes)} nodes, {len(graph.edges)} edges): lineage "
                     f"({direction}) of {e(description)}")


def _print_lineage(graph, where: str) -> None:
    from pipeline.metadata.properties import key_properties
    out = console.console
    table = Table(title=f"Lineage ({graph.direction}) of {e(graph.description)}",
                  title_justify="left", show_lines=True, caption=f"store: {e(where)}",
                  caption_justify="left")
    for column in ("Hops", "Node", "Type", "Run", "State", "Details", "Inputs"):
        table.add_column(column, overflow="fold",
                         justify="right" if column == "Hops" else "left")
    for node in graph.ordered():
        if node.kind == "execution":
            name = f"{node.label} (exec {node.id})"
            details = [f"{k}={short(_without_contract(v), 400)}" for k, v in node.properties.items()
                       if k not in ("input_config", "output_config", "eval_config")]
            if node.cached_in:
                details.append(f"reused (cached) by {len(node.cached_in)} run(s): "
                               + ", ".join(node.cached_in[:3])
                               + ("…" if len(node.cached_in) > 3 else ""))
        elif node.kind == "source":
            name = "external input"
            details = [f"{k}={short(v)}" for k, v in node.properties.items()
                       if k != "input_config"]
        else:
            name = node.label
            details = [f"{k}={short(v)}" for k, v in
                       key_properties(node.type, node.properties).items()]
            details.append(node.uri)
        if node.boundary:
            details.append("(baseline: compared with, not followed)")
        inputs = "\n".join(f"{'/'.join(e.keys)} ← {graph.nodes[e.source].label}"
                           + (f" #{graph.nodes[e.source].id}"
                              if graph.nodes[e.source].kind == "execution" else "")
                           for e in graph.inputs_of(node.key) if e.source in graph.nodes)
        style = "bold" if node.key == graph.target else ""
        table.add_row(str(node.distance), f"[{style}]{e(name)}[/]" if style else e(name),
                      e(node.type.rsplit(".", 1)[-1] if node.kind == "execution" else node.type),
                      e("\n".join(node.run_ids[:1])), styled(node.state) if node.kind ==
                      "execution" else "", e("\n".join(details)), e(inputs))
    out.print(table)
    summary = graph.summary()
    for data in summary["data"]:
        out.print(f"[bold]Data:[/] {e(data['path'])}  [dim]{e(data['fingerprint'] or '')}[/]")
    for node_id, module in summary["code"].items():
        out.print(f"[bold]Code ({e(node_id)}):[/] {e(module)}")
    out.print(f"[dim]{len(graph.nodes)} nodes, {len(graph.edges)} edges. "
                  "--format json|dot|svg|html for the graph itself.[/]")


def _without_contract(value):
    """A custom_config with its dataset contract (every column's role and reason: hundreds of characters)
    named in a few words, so that the settings a person looks for fit the table; json and html have it whole."""
    if not isinstance(value, dict) or not isinstance(value.get("dataset"), dict):
        return value
    contract = value["dataset"]
    label = (contract.get("label") or {}).get("name", "?")
    columns = len(contract.get("columns") or [])
    return {**value, "dataset": f"<{contract.get('task', '?')} of {label!r}, {columns} columns>"}
