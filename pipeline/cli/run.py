"""`tfxsp run`: the pipeline on this machine (LocalDagRunner), with a line per component while it runs and a summary
at the end read from ML Metadata. Exit codes: pipeline/cli/exit_codes.py.

One run at a time per pipeline root (pipeline/runners/run_lock.py): a second `tfxsp run` exits 2 naming the first.
SIGTERM, SIGHUP and SIGINT stop a run by unwinding (pipeline/runners/signals.py): the training cluster and the model
server it started are stopped, the summary says what happened, and the exit code is 128 + the signal's number.
"""
from __future__ import annotations

import contextlib
import dataclasses
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
    from pipeline.cli import redaction
    redaction.hide_in_logs(config)

    from pipeline.runners import signals
    with signals.stop_on_signals(on_timeout=_say_stopping_now) as stop:
        try:
            code = _run_locked(config, verbose, stop)
        except signals.RunInterrupted as e:  # before the pipeline started
            _print_error(f"Stopped by {e.name}:", "before the pipeline started; nothing was run or pushed.")
            code = e.exit_code
    sys.exit(code)


def _run_locked(config: PipelineConfig, verbose: bool, stop) -> int:
    """Checks the input, takes the pipeline root's run lock, checks the serving ports, runs; returns the exit code."""
    from pipeline.cli import console, preflight
    from pipeline.runners import run_lock
    try:
        preflight.check_writable(config)
    except preflight.PreflightError as e:
        _print_error("Input error:", f"{e} Nothing was run or pushed.")
        return exit_codes.BAD_INPUT
    try:
        preflight.check_metadata_store(config)
    except preflight.PreflightError as e:
        _print_error("Metadata store error:", f"{e} Nothing was run or pushed.")
        return exit_codes.BAD_INPUT
    try:
        lock = run_lock.RunLock(config.pipeline_root).acquire()
    except run_lock.RunLockHeld as e:
        pid = f" (kill {e.holder.pid} stops it cleanly)" if e.holder and e.holder.alive() else ""
        _print_error("Another run holds this pipeline root:",
                     f"{e} One tfxsp run at a time per pipeline root: wait for it to end, or stop it{pid}. "
                     "Nothing was run or pushed.")
        return exit_codes.BAD_INPUT
    with lock:
        _say_lock_taken_over(lock)
        try:
            preflight.check_serving_ports(config)
        except preflight.PreflightError as e:
            _print_error("Input error:", f"{e} Nothing was run or pushed.")
            return exit_codes.BAD_INPUT
        found = _analyze(config, verbose)
        if found is None:
            return exit_codes.BAD_INPUT
        console.console.print(f"Running pipeline [bold]{config.pipeline_name}[/] "
                              f"(data: {config.data_dir}, outputs: {config.pipeline_root})")
        log_path = None if verbose else os.path.join(config.pipeline_root, "logs",
                                                     time.strftime("run-%Y%m%d-%H%M%S.log"))
        outcome = _run(config, found, log_path, lock)
        stop.armed = False  # the run is over: a signal now must not cut its summary short
        if outcome.report:
            _print_summary(outcome, config, log_path, found)
        return _exit_code(outcome, log_path)


@dataclasses.dataclass
class _Outcome:
    report: object = None  # the RunReport of this process's run, or None
    error: BaseException | None = None  # the error that ended the run
    example: object = None  # an eval example (examples.EvalExample) for the summary's query commands
    answer: str | None = None  # the live model's answer to the summary's curl command
    started_server: bool = False  # a model server was started here (and stopped at the end)
    interrupted: object = None  # the signals.RunInterrupted that stopped the run


def _analyze(config: PipelineConfig, verbose: bool):
    """The dataset contract decided from the data (TFDV statistics, kept between runs), or None (said why)."""
    from pipeline.cli import console
    from pipeline.dataset import analysis, csv_files
    console.console.print(f"Reading the columns of {config.data_dir} …")
    log = None if verbose else os.path.join(config.pipeline_root, "logs", "dataset.log")
    try:
        with console.output_to_file(log) if log else contextlib.nullcontext():
            return analysis.analyze(config)
    except csv_files.DataError as e:
        _print_error("Input error:", f"{e} Nothing was run or pushed.")
        return None


def _run(config: PipelineConfig, found, log_path: str | None, lock) -> _Outcome:
    """Runs the pipeline with its logs in `log_path`; returns what happened."""
    from pipeline.cli import console, progress
    from pipeline.runners import local, signals
    outcome = _Outcome()
    started_ms = progress.now_ms()
    with console.output_to_file(log_path) if log_path else contextlib.nullcontext():
        try:
            _say_what_was_left(config, lock)  # inside: ML Metadata's C++ logs go to the log file
            with local.probe_server(config, announce=console.console.print) as started_server:
                outcome.started_server = started_server
                with progress.ComponentProgress(config, started_ms, console.console.print):
                    try:
                        local.run(config, found.contract)
                    except Exception as e:  # a component's error ends the run; it is reported below
                        outcome.error = e
                _collect(config, started_ms, outcome)
                if outcome.report and outcome.report.examples_uri:
                    from pipeline.dataset import examples
                    outcome.example = next(iter(examples.eval_examples(outcome.report.examples_uri,
                                                                      found.contract)), None)
                if outcome.example and (outcome.report.serving_validation or {}).get("outcome") == "passed":
                    outcome.answer = _ask_live_model(config, outcome.example, outcome.report)
        except signals.RunInterrupted as e:
            # Unwound through every `finally` above: the training cluster and the model server are stopped.
            # Another signal now is only counted (signals.py), so what follows runs to the end.
            outcome.interrupted = e
            _collect(config, started_ms, outcome)
    return outcome


def _collect(config: PipelineConfig, started_ms: int, outcome: _Outcome) -> None:
    """The report of the run this process started: with the run lock held, the one run of this pipeline root that
    started since `started_ms`."""
    from pipeline.metadata import report as run_report
    from pipeline.metadata import runs, store
    try:
        metadata = store.open_store(config.metadata_connection_config())
        ours = runs.run_started_since(metadata, config.pipeline_name, started_ms)
        outcome.report = run_report.collect(metadata, ours.name) if ours is not None else None
    except store.MetadataError as e:
        outcome.error = outcome.error or e


def _say_lock_taken_over(lock) -> None:
    from pipeline.cli import console
    if lock.previous is not None:
        console.console.print(f"[yellow]The previous tfxsp run here ({lock.previous.describe()}) ended without "
                              "finishing: it no longer holds the run lock, which this run took over.[/]")


def _say_what_was_left(config: PipelineConfig, lock) -> None:
    """Says which runs of this pipeline ML Metadata shows running although no process runs them (abandoned)."""
    from pipeline.cli import console
    from pipeline.metadata import runs, store
    try:
        metadata = store.open_store(config.metadata_connection_config())
        left = runs.mark_abandoned(runs.list_runs(metadata, config.pipeline_name, limit=20),
                                   lock.holder.started_ms)
    except store.MetadataError:
        return  # no store yet, or no runs of this pipeline
    for summary in left[:3]:
        nodes = ", ".join(n.node_id for n in summary.nodes if n.state == "abandoned")
        console.console.print(f"[yellow]Run {summary.run_id} was abandoned: its process ended while {nodes} "
                              "ran. ML Metadata keeps those executions RUNNING (tfxsp runs shows them abandoned); "
                              "this run does that work again.[/]")


def _print_summary(outcome: _Outcome, config: PipelineConfig, log_path: str | None, found) -> None:
    from pipeline.cli import console, notices, summary
    report = outcome.report
    if outcome.interrupted:
        for node in report.nodes:
            if node.state in ("running", "new"):
                node.state = "interrupted"
    try:
        summary.print_summary(report, config, log_path, found, outcome.example, outcome.answer,
                              server_stays=not outcome.started_server)
        trainer = next((n for n in report.nodes if n.node_id == notices.TRAINER and n.state != "cached"), None)
        if trainer is not None and trainer.execution_id is not None:
            warning = notices.training_network(
                notices.model_run_dir(config.pipeline_root, trainer.execution_id), running=False)
            if warning:
                console.console.print(f"[bold yellow]{_escape(warning)}[/]")
    except OSError:  # the terminal is gone (SIGHUP): the exit code still says how the run ended
        pass


def _exit_code(outcome: _Outcome, log_path: str | None) -> int:
    report, error = outcome.report, outcome.error
    if outcome.interrupted is not None:
        running = [n.node_id for n in report.nodes if n.state == "interrupted"] if report else []
        parts = [f"{', '.join(running)} {'was' if len(running) == 1 else 'were'} running."] if running else []
        parts.append("Every process this run started is stopped"
                     + (", the model server included." if outcome.started_server else "."))
        parts.append("The next tfxsp run reuses the components that completed.")
        _print_error(f"Stopped by {outcome.interrupted.name}:",
                     " ".join(parts) + (f" (logs: {log_path})" if log_path else ""))
        return outcome.interrupted.exit_code
    if error is not None:
        from pipeline.cli import console
        failed = ", ".join(report.failed_nodes) if report and report.failed_nodes else "the run"
        _print_error(f"{failed} failed:", console.describe_error(error)
                     + (f" (full logs: {log_path})" if log_path else ""))
        return exit_codes.FAILED
    if report is None or not report.blessed:
        return exit_codes.NOT_BLESSED
    validation = report.serving_validation or {}
    if validation.get("outcome") == "failed":
        _print_error("Serving validation failed:", validation["reason"])
        return exit_codes.NOT_SERVED
    if validation.get("outcome") == "inconclusive":
        _print_error("Serving validation could not validate the push:",
                     f"{validation['reason']}. Version {validation.get('probed_version')} stays where it is (not "
                     "rolled back).")
        return exit_codes.NOT_SERVED
    return exit_codes.OK


def _print_error(title: str, message: str) -> None:
    from pipeline.cli import console
    try:
        console.print_error(title, message)
    except OSError:  # no terminal any more (SIGHUP)
        pass


def _say_stopping_now(signum: int) -> None:
    """The watchdog's last word when the clean-up after a signal takes too long."""
    from pipeline.cli import console
    from pipeline.runners import signals
    console.console.print(f"[bold red]Still stopping {signals.GRACE_S:g} s after the signal; exiting now. The "
                          "processes this run started die with it.[/]")


def _escape(text: str) -> str:
    from rich.markup import escape
    return escape(text)


def _ask_live_model(config: PipelineConfig, example, report) -> str | None:
    """The live model's answer to the summary's curl command, so the run shows it answering."""
    from pipeline.cli import summary
    from serving.client import RestClient, RestError
    signature, instances = summary.query_request(example, summary.served_format(report))
    try:
        answer = RestClient(config.rest_url).predict(config.model_name, instances=instances, signature_name=signature)
        return json.dumps(answer, separators=(",", ":"))
    except (RestError, OSError) as e:
        return f"no answer: {e}"
