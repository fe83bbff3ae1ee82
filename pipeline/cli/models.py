"""`tfxsp models`: pushed model versions, their blessing, metrics and serving validation, and which one is served."""
from __future__ import annotations

import click

from pipeline.cli import console, model_actions
from pipeline.cli.options import echo_json, guarded, metadata_options, open_metadata
from pipeline.cli.tables import Column, e, fitted_table, short, styled, yes_no


@click.group(invoke_without_command=True)
@metadata_options()
@click.option("--all", "include_unpushed", is_flag=True,
              help="Also the Pusher outputs that were not pushed (model not blessed).")
@click.option("--no-metrics", is_flag=True, help="Do not read the evaluation metrics.")
@click.pass_context
def models(ctx: click.Context, set_items: tuple[str, ...], metadata_url: str | None,
           output_format: str | None, include_unpushed: bool, no_metrics: bool) -> None:
    """Pushed model versions, newest first: blessing, eval metrics, serving validation, labels, and
    which version TF Serving serves. Subcommands (label, promote, pin, unpin, rollback) change which
    version serves, through TF Serving's model config file."""
    if ctx.invoked_subcommand is not None:
        return
    from pipeline import evaluation
    from pipeline.metadata import models as api
    output_format = output_format or "table"
    config, store, where = open_metadata(set_items, metadata_url)
    found = guarded(lambda: api.list_models(store, config.serving_model_dir, include_unpushed=include_unpushed,
                                                 with_metrics=not no_metrics))
    serving = model_actions.current_serving(config)
    model_actions.mark_served(found, serving)
    if output_format == "json":
        echo_json({"store": where, "model_base_path": config.serving_model_dir,
                    "served_version": next((m.version for m in found if m.served), None),
                    "model_config_file": config.model_config_file,
                    "pinned": serving.pinned if serving else None, "labels": serving.labels if serving else {},
                    "actions": model_actions.recorded(store),
                    "models": [m.to_dict() for m in found]})
        return
    validated = any(m.serving_validation for m in found)
    # The metric the blessing gates on: accuracy (classification) or RMSE (regression).
    gate = next((g for g in evaluation.GATE_METRIC.values() for m in found if g in m.metrics.get("Overall", {})),
                evaluation.ACCURACY_METRIC)
    columns = [Column("Version"), Column("Served"), Column("Pushed", drop=3), Column("Blessed"),
               Column(evaluation.METRIC_LABELS[gate].capitalize() if gate == evaluation.ACCURACY_METRIC
                      else evaluation.METRIC_LABELS[gate]), Column("Examples", drop=2),
               *([Column("Serving validation", wrap=True, drop=5)] if validated else []),
               Column("Labels"), Column("Model", drop=4), Column("Run", drop=1)]
    rows = []
    for m in found:
        overall = m.metrics.get("Overall", {})
        metric = overall.get(gate)
        examples = overall.get(evaluation.EXAMPLE_COUNT_METRIC) or overall.get("example_count")
        served = "[bold green]served[/]" if m.served else (
            "present" if m.present else "[dim]gone[/]" if m.pushed else "")
        row = [e(m.version or ""), served, yes_no(m.pushed), yes_no(m.blessed),
               (f"{metric:.3f}" if gate == evaluation.ACCURACY_METRIC else f"{metric:.4g}") if metric is not None
               else "",
               f"{examples:.0f}" if examples is not None else ""]
        if validated:
            validation = m.serving_validation or {}
            outcome = validation.get("outcome") or (
                None if not validation else ("passed" if validation.get("blessed") else "failed"))
            row.append(styled(outcome) + (f" {e(short(validation.get('reason', ''), 50))}"
                                           if outcome == "failed" else ""))
        labels = model_actions.labels_of(serving, m.version)
        rows.append([*row, e(labels), f"#{m.model_id}" if m.model_id else "", e(m.run_id or "")])
    console.console.print(fitted_table(columns, rows,
                                       title=f"Model versions (newest first) in {e(config.serving_model_dir)}",
                                       caption=f"store: {e(where)}"))
    if serving is not None:
        console.console.print(f"Model config file: {e(config.model_config_file)} (policy: {e(serving.policy())})")
    if not found:
        console.console.print("No model was pushed yet." if not include_unpushed
                         else "No Pusher output yet.")


for _command in (model_actions.label, model_actions.promote, model_actions.pin, model_actions.unpin,
                 model_actions.rollback):
    models.add_command(_command)
