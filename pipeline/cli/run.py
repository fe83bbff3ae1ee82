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
from pipeline.cli.options import config_option, load, set_option
from pipeline.config import PipelineConfig


@click.command()
@config_option
@set_option
@click.option("-v", "--verbose", is_flag=True, help="Show TFX, Beam and TensorFlow logs.")
def run(config_file: str | None, set_items: tuple[str, ...], verbose: bool) -> None:
    """Run the pipeline locally with LocalDagRunner and summarise the run."""
    from pipeline.cli import console
    console.quiet_logs(verbose)  # before anything imports TensorFlow
    config = load(set_items, config_file=config_file)

    from pipeline.cli import preflight
    try:
        preflight.check_writable(config)
        preflight.check_serving_ports(config)
    except preflight.PreflightError as e:
        console.print_error("Input error:", f"{e} Nothing was run or pushed.")
        sys.exit(exit_codes.BAD_INPUT)
    found = _analyze(config, verbose)

    console.console.print(f"Running pipeline [bold]{config.pipeline_name}[/] "
                          f"(data: {config.data_dir}, outputs: {config.pipeline_root})")
    log_path = None if verbose else os.path.join(config.pipeline_root, "logs",
                                                 time.strftime("run-%Y%m%d-%H%M%S.log"))
    report, error, row, answer, started_server = _run(config, found, log_path)
    if report:
        from pipeline.cli import summary
        summary.print_summary(report, config, log_path, found, row, answer, server_stays=not started_server)
    sys.exit(_exit_code(report, error, log_path))


def _analyze(config: PipelineConfig, verbose: bool):
    """The dataset contract decided from the data (TFDV statistics, kept between runs), or exit 2."""
    from pipeline.cli import console
    from pipeline.dataset import analysis, csv_files
    console.console.print(f"Reading the columns of {config.data_dir} …")
    log = None if verbose else os.path.join(config.pipeline_root, "logs", "dataset.log")
    try:
        with console.output_to_file(log) if log else contextlib.nullcontext():
            return analysis.analyze(config)
    except csv_files.DataError as e:
        console.print_error("Input error:", f"{e} Nothing was run or pushed.")
        sys.exit(exit_codes.BAD_INPUT)


def _run(config: PipelineConfig, found, log_path: str | None):
    """Runs the pipeline with its logs in `log_path`; returns (report of this run or None, the error that ended it
    or None, an eval row for the summary's query commands and the live model's answer to it, whether a model
    server was started here)."""
    from pipeline.cli import console, progress
    error, answer, report, row = None, None, None, None
    started_ms = progress.now_ms()
    with console.output_to_file(log_path) if log_path else contextlib.nullcontext():
        from pipeline.metadata import report as run_report
        from pipeline.metadata import runs, store
        from pipeline.runners import local
        with local.probe_server(config, announce=console.console.print) as started_server:
            with progress.ComponentProgress(config, started_ms, console.console.print):
                try:
                    local.run(config, found.contract)
                except Exception as e:  # a component's error ends the run; it is reported below
                    error = e
            try:
                metadata = store.open_store(config.metadata_connection_config())
                ours = runs.run_started_since(metadata, config.pipeline_name, started_ms)
                report = run_report.collect(metadata, ours.name) if ours is not None else None
            except store.MetadataError as e:
                error = error or e
            if report and report.examples_uri:
                from pipeline.dataset import examples
                row = next(iter(examples.eval_rows(report.examples_uri, found.contract)), None)
            if row and (report.serving_validation or {}).get("outcome") == "passed":
                answer = _ask_live_model(config, row)
    return report, error, row, answer, started_server


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


def _ask_live_model(config: PipelineConfig, row: dict) -> str | None:
    """The live model's answer to the summary's curl command, so the run shows it answering."""
    from serving.client import RestClient, RestError
    try:
        answer = RestClient(config.rest_url).predict(config.model_name, instances=[row], signature_name="serving_raw")
        return json.dumps(answer, separators=(",", ":"))
    except (RestError, OSError) as e:
        return f"no answer: {e}"
