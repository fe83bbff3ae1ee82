"""`tfxsp models label|promote|pin|unpin|rollback`: which pushed version serves, and under which label. Each writes
TF Serving's model config file (pipeline/lifecycle/), applies it live when a server answers, and is recorded in ML
Metadata; a refused or bad one changes nothing and exits 2."""
from __future__ import annotations

from collections.abc import Callable

import click

from pipeline.cli import console
from pipeline.cli.options import echo_json, fail, guarded, load, set_option
from pipeline.cli.tables import e
from pipeline.config import PipelineConfig

_format_option = click.option("--format", "output_format", type=click.Choice(("table", "json")), default="table",
                              help="table (the default) for people, json for scripts.")


def current_serving(config: PipelineConfig):
    """What the model config file says for our model (None: no file, or it does not name the model)."""
    from pipeline.lifecycle import model_config as files
    try:
        return files.serving_of(files.entry_of(files.read(config.model_config_file), config.model_name,
                                               config.model_config_file))
    except files.ModelConfigError:
        return None


def mark_served(found: list, serving) -> None:
    """With a pin, the pinned version is the one served (not the highest folder)."""
    if serving is None or serving.pinned is None:
        return
    for m in found:
        m.served = bool(m.present and m.version is not None and int(m.version) == serving.pinned)


def labels_of(serving, version: str | None) -> str:
    if serving is None or version is None:
        return ""
    names = sorted(k for k, v in serving.labels.items() if v == int(version))
    return ", ".join(names + (["pinned"] if serving.pinned == int(version) else []))


def recorded(store) -> list[dict]:
    from pipeline.lifecycle import actions
    return actions.history(store)


def _run(set_items: tuple[str, ...], output_format: str, act: Callable) -> None:
    from pipeline.lifecycle import actions
    from pipeline.lifecycle import model_config as files
    config = load(set_items)
    try:
        outcome = guarded(lambda: act(config))
    except (actions.ActionError, files.ModelConfigError) as error:
        fail("Nothing changed:", str(error))
    if output_format == "json":
        echo_json({"action": outcome.action, "message": outcome.message, "model_config_file": outcome.config_file,
                   "applied_live": outcome.live, "policy": outcome.after.policy(),
                   "pinned": outcome.after.pinned, "labels": outcome.after.labels,
                   "before": {"policy": outcome.before.policy(), "pinned": outcome.before.pinned,
                              "labels": outcome.before.labels},
                   "execution_id": outcome.execution_id})
        return
    out = console.console
    out.print(f"[bold]{e(outcome.action)}:[/] {e(outcome.message)}")
    labels = ", ".join(f"{k} -> {v}" for k, v in sorted(outcome.after.labels.items())) or "none"
    out.print(f"  Version policy: {e(outcome.after.policy())}; labels: {e(labels)}")
    out.print(f"  Wrote {e(outcome.config_file)}; " + (
        f"applied live to the server at {e(config.grpc_target)} (HandleReloadConfigRequest)" if outcome.live else
        f"no server answered at {e(config.grpc_target)}: a server started with --model_config_file reads it"))
    out.print(f"  Recorded in ML Metadata: execution #{outcome.execution_id}")


@click.command()
@click.argument("version", type=int)
@click.argument("label_name", metavar="LABEL")
@set_option
@_format_option
def label(version: int, label_name: str, set_items: tuple[str, ...], output_format: str) -> None:
    """Put LABEL (e.g. stable, canary) on a pushed, blessed VERSION: clients reach it at /labels/LABEL (REST) and
    with version_label (gRPC)."""
    from pipeline.lifecycle import actions
    _run(set_items, output_format, lambda config: actions.label(config, version, label_name))


@click.command()
@click.option("--from", "source", default="canary", show_default=True, help="The label whose version is promoted.")
@click.option("--to", "target", default="stable", show_default=True, help="The label it gets.")
@set_option
@_format_option
def promote(source: str, target: str, set_items: tuple[str, ...], output_format: str) -> None:
    """The canary becomes stable: the version labelled --from gets the label --to, and loses --from."""
    from pipeline.lifecycle import actions
    _run(set_items, output_format, lambda config: actions.promote(config, source, target))


@click.command()
@click.argument("version", type=int)
@set_option
@_format_option
def pin(version: int, set_items: tuple[str, ...], output_format: str) -> None:
    """Serve VERSION only (TF Serving's `specific` version policy): new pushes are not served until unpin."""
    from pipeline.lifecycle import actions
    _run(set_items, output_format, lambda config: actions.pin(config, version))


@click.command()
@set_option
@_format_option
def unpin(set_items: tuple[str, ...], output_format: str) -> None:
    """Serve the newest version again (and every labelled one)."""
    from pipeline.lifecycle import actions
    _run(set_items, output_format, actions.unpin)


@click.command()
@click.option("--to", "to", type=int, default=None, help="The version to serve (default: the previous blessed one).")
@set_option
@_format_option
def rollback(to: int | None, set_items: tuple[str, ...], output_format: str) -> None:
    """Serve the previous blessed version (pinned); newer versions stay on disk, unloaded, until unpin."""
    from pipeline.lifecycle import actions
    _run(set_items, output_format, lambda config: actions.rollback(config, to))
