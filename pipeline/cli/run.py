"""`tfxsp run`: the pipeline on this machine (LocalDagRunner), with a line per component while it runs and a summary
at the end read from ML Metadata. Exit codes: pipeline/cli/exit_codes.py."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import click

from pipeline.cli import exit_codes
from pipeline.cli.options import load, set_option
from pipeline.config import PipelineConfig


@click.command()
@set_option
@click.option("-v", "--verbose", is_flag=True, help="Show TFX, Beam and TensorFlow logs.")
def run(set_items: tuple[str, ...], verbose: bool) -> None:
    """Run the pipeline locally with LocalDagRunner and summarise the run."""
    from pipeline.cli import console
    console.quiet_logs(verbose)  # before anything imports TensorFlow
    config = load(set_items)

    from pipeline.cli import preflight
    try:
        preflight.check_inputs(config)
        preflight.check_serving_ports(config)
    except preflight.PreflightError as e:
        console.print_error("Input error:", f"{e} Nothing was run or pushed.")
        sys.exit(exit_codes.BAD_INPUT)

    console.console.print(f"Running pipeline [bold]{config.pipeline_name}[/] "
                          f"(data: {config.data_dir}, outputs: {config.pipeline_root})")
    log_path = None if verbose else os.path.join(config.pipeline_root, "logs",
                                                 time.strftime("run-%Y%m%d-%H%M%S.log"))
    report, error, answer, started_server = _run(config, log_path)
    if report:
        from pipeline.cli import summary
        summary.print_summary(report, config, log_path, answer, server_stays=not started_server)
    sys.exit(_exit_code(report, error, log_path))


def _run(config: PipelineConfig, log_path: str | None):
    """Runs the pipeline with its logs in `log_path`; returns (report of this run or None, the error that ended it
    or None, the live model's answer to the summary's curl command, whether a model server was started here)."""
    from pipeline.cli import console, progress
    error, answer, report = None, None, None
    started_ms = progress.now_ms()
    with console.output_to_file(log_path) if log_path else contextlib.nullcontext():
        from pipeline.metadata import report as run_report
        from pipeline.metadata import runs, store
        from pipeline.runners import local
        with local.probe_server(config, announce=console.console.print) as started_server:
            with progress.ComponentProgress(config, started_ms, console.console.print):
                try:
                    local.run(config)
                except Exception as e:  # a component's error ends the run; it is reported below
                    error = e
            try:
                metadata = store.open_store(config.metadata_connection_config())
                ours = runs.run_started_since(metadata, config.pipeline_name, started_ms)
                report = run_report.collect(metadata, ours.name) if ours is not None else None
            except store.MetadataError as e:
                error = error or e
            if report and (report.serving_validation or {}).get("outcome") == "passed":
                answer = _ask_live_model(config)
    return report, error, answer, started_server


def _exit_code(report, error: BaseException | None, log_path: str | None) -> int:
    from pipeline.cli import console
    if error is not None:
        failed = ", ".join(report.failed_nodes) if report and report.failed_nodes else "the run"
        console.print_error(f"{failed} failed:", console.describe_error(error)
                            + (f" (full logs: {log_path})" if log_path else ""))
        return exit_codes.FAILED
    if report is None or not report.blessed:
        return exit_codes.NOT_BLESSED
    validation = report.serving_validation or {}
    if validation.get("outcome") == "failed":
        console.print_error("Serving validation failed:", validation["reason"])
        return exit_codes.NOT_SERVED
    return exit_codes.OK


def _ask_live_model(config: PipelineConfig) -> str | None:
    """The live model's answer to the summary's curl command, so the run shows it answering."""
    from pipeline.modules import features
    from serving.client import RestClient, RestError
    try:
        answer = RestClient(config.rest_url).predict(
            config.model_name, instances=[features.EXAMPLE_ROW], signature_name="serving_raw")
        return json.dumps(answer, separators=(",", ":"))
    except (RestError, OSError) as e:
        return f"no answer: {e}"
