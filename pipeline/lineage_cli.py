"""`tfxsp runs | artifacts | lineage | models`: ML Metadata lineage for people (tables, a picture)
and for scripts (`--format json`). Registered on the `tfxsp` group by pipeline/cli.py.

Every command reads the store of the configuration (`--set key=value`, `TFXSP_*`), or the one
that `--metadata-url` names: a path or sqlite:///path (opened read-only), mysql://... or
grpc://host:port. Exit code 2: no store, a corrupt or empty one, an unknown id, run or type.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

EXIT_BAD_INPUT = 2  # as pipeline.cli: bad configuration or input


def _options(formats: tuple[str, ...] = ("table", "json")) -> Callable:
    def decorate(command: Callable) -> Callable:
        command = click.option(
            "--format", "output_format", type=click.Choice(formats), default=None,
            help="table (the default) for people, json for scripts"
                 + (", dot/svg/html for a picture." if "svg" in formats else "."))(command)
        command = click.option(
            "--metadata-url", default=None, metavar="URL",
            help="The store to read instead of the configured one: a path or sqlite:///path, "
                 "mysql://user:password@host:port/db, grpc://host:port.")(command)
        return click.option(
            "--set", "set_items", multiple=True, metavar="KEY=VALUE",
            help="Override a setting of pipeline/config.py (repeatable), "
                 "e.g. --set tfx_root=/data/runs.")(command)
    return decorate


def _config(set_items: tuple[str, ...], metadata_url: str | None):
    from pipeline.cli import _load
    items = list(set_items)
    if metadata_url:
        url = metadata_url if "://" in metadata_url else "sqlite://" + os.path.abspath(metadata_url)
        items.append(f"metadata_url={url}")
    return _load(tuple(items))


def _fail(title: str, message: str) -> None:
    from rich.console import Console
    Console(stderr=True, highlight=False).print(f"[bold red]{title}[/] {_e(message)}",
                                                soft_wrap=True)
    sys.exit(EXIT_BAD_INPUT)


def _open(set_items: tuple[str, ...], metadata_url: str | None):
    """(config, store, where) or exit 2 with the reason."""
    from pipeline import lineage
    config = _config(set_items, metadata_url)
    connection = config.metadata_connection_config()
    try:
        return config, lineage.open_store(connection), lineage.describe_connection(connection)
    except lineage.LineageError as e:
        _fail(_title(e), str(e))


def _title(error: Exception) -> str:
    from pipeline import lineage
    return {lineage.StoreNotFoundError: "No metadata store:",
            lineage.CorruptStoreError: "Corrupt metadata store:",
            lineage.EmptyStoreError: "Empty metadata store:",
            lineage.NotFoundError: "Not found:"}.get(type(error), "Metadata error:")


def _guarded(call: Callable[[], Any]) -> Any:
    from pipeline import lineage
    try:
        return call()
    except lineage.LineageError as e:
        _fail(_title(e), str(e))


def _echo_json(value: Any) -> None:
    import orjson
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
                            | orjson.OPT_SORT_KEYS).decode())


def _e(value: Any) -> str:
    """Data shown in a rich table or line: [brackets] in it are text, not markup."""
    from rich.markup import escape
    return escape(str(value))


def _console():
    from pipeline import console
    return console.console


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(round(value)), 60)
    return f"{minutes} m {seconds:02d} s"


def _when(ms: int) -> str:
    from pipeline.lineage import iso
    return (iso(ms) or "").replace("T", " ")


_STATE_STYLE = {"complete": "green", "cached": "blue", "failed": "bold red", "running": "yellow",
                "passed": "green", "skipped": "dim"}


def _styled(state: str | None) -> str:
    if not state:
        return ""
    return f"[{_STATE_STYLE.get(state, 'yellow')}]{state}[/]"


def _yes_no(value: bool | None, yes: str = "yes", no: str = "no") -> str:
    if value is None:
        return ""
    return f"[green]{yes}[/]" if value else f"[bold red]{no}[/]"


def _short(value: Any, width: int = 60) -> str:
    import json
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[:width - 1] + "…"


# =========================================================================================== runs
@click.group(invoke_without_command=True)
@_options()
@click.pass_context
def runs(ctx: click.Context, set_items: tuple[str, ...], metadata_url: str | None,
         output_format: str | None) -> None:
    """Pipeline runs recorded in ML Metadata: `runs list` (the default), `runs show RUN`.

    Options given here apply to the subcommand too: tfxsp runs --set tfx_root=/data show latest.
    """
    ctx.obj = {"set_items": set_items, "metadata_url": metadata_url,
               "output_format": output_format}
    if ctx.invoked_subcommand is None:
        ctx.invoke(runs_list)


def _inherit(set_items: tuple[str, ...], metadata_url: str | None,
             output_format: str | None) -> tuple[tuple[str, ...], str | None, str]:
    """A runs subcommand's options, completed by those given to `runs` itself."""
    ctx = click.get_current_context()
    group = (ctx.parent.obj if ctx.parent is not None else None) or {}
    return (tuple(group.get("set_items", ())) + tuple(set_items),
            metadata_url or group.get("metadata_url"),
            output_format or group.get("output_format") or "table")


@runs.command("list")
@_options()
@click.option("--limit", default=20, show_default=True, help="The newest N runs; 0 = all.")
def runs_list(set_items: tuple[str, ...] = (), metadata_url: str | None = None,
              output_format: str | None = None, limit: int = 20) -> None:
    """Runs, newest first: state, duration, node states, blessing and pushed version."""
    from pipeline import lineage
    set_items, metadata_url, output_format = _inherit(set_items, metadata_url, output_format)
    config, store, where = _open(set_items, metadata_url)
    summaries = _guarded(lambda: lineage.list_runs(store, config.pipeline_name, limit or None))
    if output_format == "json":
        _echo_json({"pipeline": config.pipeline_name, "store": where,
                    "runs": [s.to_dict() for s in summaries]})
        return
    from rich.table import Table
    table = Table(title=f"Runs of {_e(config.pipeline_name)} (newest first)",
                  title_justify="left", caption=f"store: {_e(where)}", caption_justify="left")
    validated = any(s.serving_validation for s in summaries)
    columns = ["Run", "Duration", "State", "Nodes", "Blessed", "Pushed"]
    columns += ["Serving validation"] if validated else []
    for column in columns:
        table.add_column(column, justify="right" if column == "Duration" else "left",
                         no_wrap=column in ("Run", "Duration", "Pushed"))
    for s in summaries:
        counts = s.counts()
        nodes = ", ".join(f"{counts[state]} {_styled(state)}" for state in
                          ("complete", "cached", "failed", "running") if counts.get(state))
        failed = [n.node_id for n in s.nodes if n.state == "failed"]
        if failed:
            nodes += f" ({_e(', '.join(failed))})"
        row = [_e(s.run_id), _seconds(s.seconds), _styled(s.state), nodes, _yes_no(s.blessed),
               _e(s.pushed_version or "")]
        table.add_row(*row, *([_styled(s.serving_validation)] if validated else []))
    _console().print(table)


@runs.command("show", context_settings={"ignore_unknown_options": True})
@click.argument("run")
@_options()
def runs_show(run: str, set_items: tuple[str, ...], metadata_url: str | None,
              output_format: str | None) -> None:
    """One run: each node's state, duration, inputs and outputs; blessing, metrics, push.

    RUN is a run id (or a unique prefix of it), `latest`, or -1, -2, ... counting from the newest.
    """
    from pipeline import lineage
    set_items, metadata_url, output_format = _inherit(set_items, metadata_url, output_format)
    config, store, where = _open(set_items, metadata_url)
    detail = _guarded(lambda: lineage.show_run(store, config.pipeline_name, run))
    if output_format == "json":
        _echo_json({"store": where, **detail.to_dict()})
        return
    from rich.table import Table
    s = detail.summary
    console = _console()
    table = Table(title=f"Run {_e(s.run_id)} of {_e(s.pipeline)} · {_styled(s.state)} · "
                        f"{_seconds(s.seconds)} · started {_when(s.started_ms)}",
                  title_justify="left")
    for column in ("Node", "State", "Time", "Execution", "Inputs", "Outputs"):
        table.add_column(column, justify="right" if column in ("Time", "Execution") else "left")

    def refs(items) -> str:
        return _e("\n".join(f"{'/'.join(a.keys)}: {a.type} #{a.id}" for a in items))
    for node in s.nodes:
        table.add_row(_e(node.node_id), _styled(node.state), _seconds(node.seconds),
                      str(node.execution_id), refs(detail.inputs.get(node.execution_id, [])),
                      refs(detail.outputs.get(node.execution_id, [])))
    console.print(table)
    overall = detail.metrics.get("Overall", {})
    if overall:
        console.print("[bold]Eval (Overall):[/] " + _e(", ".join(
            f"{k} {v:.4g}" for k, v in overall.items())))
    if s.blessed is not None:
        console.print(f"[bold]Blessed:[/] {_yes_no(s.blessed)}")
    if s.pushed_version:
        console.print(f"[bold]Pushed:[/] version {_e(s.pushed_version)}")
    if detail.serving_validation:
        v = detail.serving_validation
        console.print(f"[bold]Serving validation:[/] {_styled(v.get('outcome'))} "
                      f"{_e(v.get('reason', ''))}")
    trainer = next((n for n in s.nodes if n.node_id == "Trainer"), None)
    if trainer is not None:
        params = detail.parameters.get(trainer.execution_id, {})
        console.print("[bold]Trainer parameters:[/] " + _e(", ".join(
            f"{k}={_short(v, 200)}" for k, v in params.items() if k != "module_path")))


# ====================================================================================== artifacts
@click.command()
@_options()
@click.option("--type", "type_name", default=None, metavar="T",
              help="Artifact type (Model, Examples, PushedModel, ...; case-insensitive). "
                   "Without it: how many artifacts of each type.")
@click.option("--limit", default=50, show_default=True, help="The newest N; 0 = all.")
def artifacts(set_items: tuple[str, ...], metadata_url: str | None,
              output_format: str | None, type_name: str | None, limit: int) -> None:
    """Artifacts of a type, newest first, with key properties and the run that produced them."""
    from pipeline import lineage
    output_format = output_format or "table"
    _, store, where = _open(set_items, metadata_url)
    if type_name is None:
        counts = _guarded(lambda: lineage.artifact_type_counts(store))
        if output_format == "json":
            _echo_json({"store": where, "types": counts})
            return
        from rich.table import Table
        table = Table(title="Artifact types", title_justify="left",
                      caption=f"store: {_e(where)}", caption_justify="left")
        table.add_column("Type")
        table.add_column("Artifacts", justify="right")
        for name, count in counts.items():
            table.add_row(_e(name), str(count))
        _console().print(table)
        _console().print("[dim]tfxsp artifacts --type T lists the artifacts of a type.[/]")
        return
    found = _guarded(lambda: lineage.list_artifacts(store, type_name, limit or None))
    if output_format == "json":
        _echo_json({"store": where, "artifacts": [a.to_dict() for a in found]})
        return
    from rich.table import Table
    name = found[0].type if found else type_name
    table = Table(title=f"{_e(name)} artifacts (newest first)", title_justify="left",
                  caption=f"store: {_e(where)}", caption_justify="left")
    for column in ("Id", "Created", "Key properties", "Produced by", "Run", "URI"):
        table.add_column(column, justify="right" if column == "Id" else "left",
                         overflow="fold")
    for a in found:
        producer = a.producer or {}
        by = f"{producer.get('node_id', '')} (exec {producer.get('execution_id')})" \
            if producer else ""
        if producer.get("reused_by"):
            by += f", reused by {producer['reused_by']} cached run(s)"
        props = "\n".join(f"{k}={_short(v)}" for k, v in
                          lineage.key_properties(a.type, a.properties).items())
        table.add_row(str(a.id), _when(a.created_ms), _e(props), _e(by),
                      _e(producer.get("run_id") or ""), _e(a.uri))
    _console().print(table)
    if not found:
        _console().print(f"No {_e(name)} artifacts.")


# ======================================================================================== lineage
@click.command()
@click.argument("target")
@click.option("--upstream", "direction", flag_value="upstream", default=True,
              help="What the target was derived from (default).")
@click.option("--downstream", "direction", flag_value="downstream",
              help="What was derived from the target.")
@click.option("--both", "direction", flag_value="both", help="Upstream and downstream.")
@_options(("table", "json", "dot", "svg", "html"))
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
    from pipeline import lineage as api
    output_format = output_format or "table"
    config, store, where = _open(set_items, metadata_url)
    artifact, description = _guarded(lambda: api.resolve_target(store, target, config))
    graph = _guarded(lambda: api.trace(store, artifact.id, direction, show_cached=show_cached,
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
        text = api.to_dot(graph)
    elif output_format == "svg":
        text = api.to_svg(graph)
    else:
        text = api.to_html(graph, store_description=where)
    if output is None and output_format in ("svg", "html"):
        output = f"lineage-{artifact.id}.{output_format}"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        _fail("Cannot write:", f"{output}: {e.strerror}")
    _console().print(f"Wrote {_e(os.path.abspath(output))} ({output_format}, "
                     f"{len(graph.nodes)} nodes, {len(graph.edges)} edges): lineage "
                     f"({direction}) of {_e(description)}")


def _print_lineage(graph, where: str) -> None:
    from rich.table import Table

    from pipeline.lineage import key_properties
    console = _console()
    table = Table(title=f"Lineage ({graph.direction}) of {_e(graph.description)}",
                  title_justify="left", show_lines=True, caption=f"store: {_e(where)}",
                  caption_justify="left")
    for column in ("Hops", "Node", "Type", "Run", "State", "Details", "Inputs"):
        table.add_column(column, overflow="fold",
                         justify="right" if column == "Hops" else "left")
    for node in graph.ordered():
        if node.kind == "execution":
            name = f"{node.label} (exec {node.id})"
            details = [f"{k}={_short(v, 400)}" for k, v in node.properties.items()
                       if k not in ("input_config", "output_config", "eval_config")]
            if node.cached_in:
                details.append(f"reused (cached) by {len(node.cached_in)} run(s): "
                               + ", ".join(node.cached_in[:3])
                               + ("…" if len(node.cached_in) > 3 else ""))
        elif node.kind == "source":
            name = "external input"
            details = [f"{k}={_short(v)}" for k, v in node.properties.items()
                       if k != "input_config"]
        else:
            name = node.label
            details = [f"{k}={_short(v)}" for k, v in
                       key_properties(node.type, node.properties).items()]
            details.append(node.uri)
        if node.boundary:
            details.append("(baseline: compared with, not followed)")
        inputs = "\n".join(f"{'/'.join(e.keys)} ← {graph.nodes[e.source].label}"
                           + (f" #{graph.nodes[e.source].id}"
                              if graph.nodes[e.source].kind == "execution" else "")
                           for e in graph.inputs_of(node.key) if e.source in graph.nodes)
        style = "bold" if node.key == graph.target else ""
        table.add_row(str(node.distance), f"[{style}]{_e(name)}[/]" if style else _e(name),
                      _e(node.type.rsplit(".", 1)[-1] if node.kind == "execution" else node.type),
                      _e("\n".join(node.run_ids[:1])), _styled(node.state) if node.kind ==
                      "execution" else "", _e("\n".join(details)), _e(inputs))
    console.print(table)
    summary = graph.summary()
    for data in summary["data"]:
        console.print(f"[bold]Data:[/] {_e(data['path'])}  [dim]{_e(data['fingerprint'] or '')}[/]")
    for node_id, module in summary["code"].items():
        console.print(f"[bold]Code ({_e(node_id)}):[/] {_e(module)}")
    console.print(f"[dim]{len(graph.nodes)} nodes, {len(graph.edges)} edges. "
                  "--format json|dot|svg|html for the graph itself.[/]")


# ========================================================================================= models
@click.command()
@_options()
@click.option("--all", "include_unpushed", is_flag=True,
              help="Also the Pusher outputs that were not pushed (model not blessed).")
@click.option("--no-metrics", is_flag=True, help="Do not read the evaluation metrics.")
def models(set_items: tuple[str, ...], metadata_url: str | None,
           output_format: str | None, include_unpushed: bool, no_metrics: bool) -> None:
    """Pushed model versions, newest first: blessing, eval metrics, serving validation, and
    which version TF Serving serves from the model base path."""
    from pipeline import lineage
    output_format = output_format or "table"
    config, store, where = _open(set_items, metadata_url)
    found = _guarded(lambda: lineage.list_models(store, config, include_unpushed=include_unpushed,
                                                 with_metrics=not no_metrics))
    if output_format == "json":
        _echo_json({"store": where, "model_base_path": config.serving_model_dir,
                    "served_version": lineage.served_version(config),
                    "models": [m.to_dict() for m in found]})
        return
    from rich.table import Table
    table = Table(title=f"Model versions (newest first) in {_e(config.serving_model_dir)}",
                  title_justify="left", caption=f"store: {_e(where)}", caption_justify="left")
    validated = any(m.serving_validation for m in found)
    columns = ["Version", "Served", "Pushed", "Blessed", "Accuracy", "Examples"]
    columns += ["Serving validation"] if validated else []
    for column in columns + ["Model", "Run"]:
        table.add_column(column, overflow="fold", no_wrap=column != "Serving validation")
    for m in found:
        overall = m.metrics.get("Overall", {})
        accuracy = overall.get("sparse_categorical_accuracy")
        examples = overall.get("example_count")
        served = "[bold green]served[/]" if m.served else (
            "present" if m.present else "[dim]gone[/]" if m.pushed else "")
        row = [_e(m.version or ""), served, _yes_no(m.pushed), _yes_no(m.blessed),
               f"{accuracy:.3f}" if accuracy is not None else "",
               f"{examples:.0f}" if examples is not None else ""]
        if validated:
            validation = m.serving_validation or {}
            outcome = validation.get("outcome") or (
                None if not validation else ("passed" if validation.get("blessed") else "failed"))
            row.append(_styled(outcome) + (f" {_e(_short(validation.get('reason', ''), 50))}"
                                           if outcome == "failed" else ""))
        table.add_row(*row, f"#{m.model_id}" if m.model_id else "", _e(m.run_id or ""))
    _console().print(table)
    if not found:
        _console().print("No model was pushed yet." if not include_unpushed
                         else "No Pusher output yet.")


def register(cli: click.Group) -> None:
    """Adds runs, artifacts, lineage and models to the `tfxsp` group."""
    for command in (runs, artifacts, lineage, models):
        cli.add_command(command)
