"""`tfxsp runs [list]` and `tfxsp runs show RUN`: pipeline runs recorded in ML Metadata."""
from __future__ import annotations

import click

from pipeline.cli import console
from pipeline.cli.options import echo_json, guarded, metadata_options, open_metadata
from pipeline.cli.tables import Column, e, fitted_table, seconds, short, styled, when, yes_no


@click.group(invoke_without_command=True)
@metadata_options()
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


def _mark_abandoned(config, summaries) -> list:
    """Marks `abandoned` the runs shown running that no `tfxsp run` runs any more (metadata.runs.mark_abandoned), from
    the run lock of their pipeline root. Where no run ever took that lock (a store written elsewhere), running
    stays running: this machine cannot tell."""
    from pipeline.metadata import runs as api
    from pipeline.runners import run_lock
    state = run_lock.lock_state(_pipeline_root_of(config))
    if not state.exists:
        return []
    if state.held:
        return api.mark_abandoned(summaries, state.holder.started_ms if state.holder else 0)
    return api.mark_abandoned(summaries, None)


def _pipeline_root_of(config) -> str:
    """The pipeline root whose run lock speaks for the store: the folder of a SQLite store given by --metadata-url
    when a run lock is there, else the configured pipeline root."""
    import os

    from ml_metadata.proto import metadata_store_pb2

    from pipeline.runners import run_lock
    connection = config.metadata_connection_config()
    if isinstance(connection, metadata_store_pb2.ConnectionConfig) and connection.HasField("sqlite"):
        folder = os.path.dirname(os.path.abspath(connection.sqlite.filename_uri))
        if os.path.exists(os.path.join(folder, run_lock.LOCK_FILE)):
            return folder
    return config.pipeline_root


def _inherit(set_items: tuple[str, ...], metadata_url: str | None,
             output_format: str | None) -> tuple[tuple[str, ...], str | None, str]:
    """A runs subcommand's options, completed by those given to `runs` itself."""
    ctx = click.get_current_context()
    group = (ctx.parent.obj if ctx.parent is not None else None) or {}
    return (tuple(group.get("set_items", ())) + tuple(set_items),
            metadata_url or group.get("metadata_url"),
            output_format or group.get("output_format") or "table")


@runs.command("list")
@metadata_options()
@click.option("--limit", default=20, show_default=True, help="The newest N runs; 0 = all.")
def runs_list(set_items: tuple[str, ...] = (), metadata_url: str | None = None,
              output_format: str | None = None, limit: int = 20) -> None:
    """Runs, newest first: state, duration, node states, blessing and pushed version."""
    from pipeline.metadata import runs as api
    set_items, metadata_url, output_format = _inherit(set_items, metadata_url, output_format)
    config, store, where = open_metadata(set_items, metadata_url)
    summaries = guarded(lambda: api.list_runs(store, config.pipeline_name, limit or None))
    _mark_abandoned(config, summaries)
    if output_format == "json":
        echo_json({"pipeline": config.pipeline_name, "store": where,
                    "runs": [s.to_dict() for s in summaries]})
        return
    validated = any(s.serving_validation for s in summaries)
    columns = [Column("Run"), Column("Duration", justify="right", drop=3), Column("State"),
               Column("Nodes", wrap=True, drop=1), Column("Blessed"), Column("Pushed"),
               *([Column("Serving validation", drop=2)] if validated else [])]
    rows = []
    for s in summaries:
        counts = s.counts()
        nodes = ", ".join(f"{counts[state]} {styled(state)}" for state in
                          ("complete", "cached", "failed", "running", "abandoned") if counts.get(state))
        failed = [n.node_id for n in s.nodes if n.state == "failed"]
        if failed:
            nodes += f" ({e(', '.join(failed))})"
        rows.append([e(s.run_id), seconds(s.seconds), styled(s.state), nodes, yes_no(s.blessed),
                     e(s.pushed_version or ""), *([styled(s.serving_validation)] if validated else [])])
    console.console.print(fitted_table(columns, rows, title=f"Runs of {e(config.pipeline_name)} (newest first)",
                                       caption=f"store: {e(where)}"))


@runs.command("show", context_settings={"ignore_unknown_options": True})
@click.argument("run")
@metadata_options()
def runs_show(run: str, set_items: tuple[str, ...], metadata_url: str | None,
              output_format: str | None) -> None:
    """One run: each node's state, duration, inputs and outputs; blessing, metrics, push.

    RUN is a run id (or a unique prefix of it), `latest`, or -1, -2, ... counting from the newest.
    """
    from pipeline.metadata import runs as api
    set_items, metadata_url, output_format = _inherit(set_items, metadata_url, output_format)
    config, store, where = open_metadata(set_items, metadata_url)
    detail = guarded(lambda: api.show_run(store, config.pipeline_name, run))
    _mark_abandoned(config, [detail.summary])
    if output_format == "json":
        echo_json({"store": where, **detail.to_dict()})
        return
    s = detail.summary
    out = console.console
    def refs(items) -> str:
        return e("\n".join(f"{'/'.join(a.keys)}: {a.type} #{a.id}" for a in items))
    columns = [Column("Node"), Column("State"), Column("Time", justify="right"),
               Column("Execution", justify="right", drop=1), Column("Inputs", wrap=True, drop=2),
               Column("Outputs", wrap=True)]
    rows = [[e(node.node_id), styled(node.state), seconds(node.seconds), str(node.execution_id),
             refs(detail.inputs.get(node.execution_id, [])), refs(detail.outputs.get(node.execution_id, []))]
            for node in s.nodes]
    out.print(fitted_table(columns, rows, title=f"Run {e(s.run_id)} of {e(s.pipeline)} · {styled(s.state)} · "
                                                f"{seconds(s.seconds)} · started {when(s.started_ms)}"))
    overall = detail.metrics.get("Overall", {})
    if overall:
        out.print("[bold]Eval (Overall):[/] " + e(", ".join(
            f"{k} {v:.4g}" for k, v in overall.items())))
    if s.blessed is not None:
        out.print(f"[bold]Blessed:[/] {yes_no(s.blessed)}")
    if s.pushed_version:
        out.print(f"[bold]Pushed:[/] version {e(s.pushed_version)}")
    if detail.serving_validation:
        v = detail.serving_validation
        out.print(f"[bold]Serving validation:[/] {styled(v.get('outcome'))} "
                      f"{e(v.get('reason', ''))}")
    trainer = next((n for n in s.nodes if n.node_id == "Trainer"), None)
    if trainer is not None:
        params = detail.parameters.get(trainer.execution_id, {})
        out.print("[bold]Trainer parameters:[/] " + e(", ".join(
            f"{k}={short(v, 200)}" for k, v in params.items() if k != "module_path")))
