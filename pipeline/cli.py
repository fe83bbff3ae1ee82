"""The `tfxsp` command line.

Exit codes of `tfxsp run`: 0 blessed and pushed; 1 a component failed; 2 bad configuration or
input (nothing ran); 3 the model was not blessed, so nothing was pushed.
"""
from __future__ import annotations

import os
import sys

import click

from pipeline.config import ConfigError, PipelineConfig, load_config, parse_set_options

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NOT_BLESSED = 0, 1, 2, 3


def _load(set_items: tuple[str, ...]) -> PipelineConfig:
    from pipeline import console
    try:
        return load_config(parse_set_options(list(set_items)))
    except ConfigError as e:
        console.print_error("Configuration error:", str(e))
        sys.exit(EXIT_BAD_INPUT)


set_option = click.option(
    "--set", "set_items", multiple=True, metavar="KEY=VALUE",
    help="Override a setting of pipeline/config.py (repeatable), e.g. --set epochs=5.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """tfx-serving-pipeline: CSV to a trained, evaluated, pushed and served TFX model."""


@cli.command()
@set_option
@click.option("-v", "--verbose", is_flag=True, help="Show TFX, Beam and TensorFlow logs.")
def run(set_items: tuple[str, ...], verbose: bool) -> None:
    """Run the pipeline locally with LocalDagRunner and summarise the run."""
    from pipeline import console
    console.quiet_logs(verbose)
    config = _load(set_items)

    from pipeline import preflight
    try:
        preflight.check_inputs(config)
    except preflight.PreflightError as e:
        console.print_error("Input error:", f"{e} Nothing was run or pushed.")
        sys.exit(EXIT_BAD_INPUT)

    from pipeline import local_runner, run_report
    console.console.print(f"Running pipeline [bold]{config.pipeline_name}[/] "
                          f"(data: {config.data_dir}, outputs: {config.pipeline_root})")
    error = None
    with console.ComponentProgress(verbose):
        try:
            local_runner.run(config)
        except Exception as e:  # noqa: BLE001 - any component error ends the run with a report
            error = e

    store = run_report.open_store(config.metadata_connection_config())
    run_id = run_report.latest_run_id(store, config.pipeline_name)
    report = run_report.collect(store, run_id) if run_id else None
    if report:
        console.print_summary(report, config)
    if error is not None:
        failed = ", ".join(report.failed_nodes) if report and report.failed_nodes else "the run"
        console.print_error(f"{failed} failed:", f"{type(error).__name__}: {error}"
                            + ("" if verbose else " (run with -v for the full logs)"))
        sys.exit(EXIT_FAILED)
    if report is None or not report.blessed:
        sys.exit(EXIT_NOT_BLESSED)


@cli.command()
@set_option
@click.option("--port", default=6006, show_default=True, help="TensorBoard's port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
def tensorboard(set_items: tuple[str, ...], port: int, host: str) -> None:
    """Open TensorBoard over the Trainer logs of every run recorded in ML Metadata."""
    from pipeline import console
    console.quiet_logs(verbose=False)
    config = _load(set_items)
    if not config.metadata_url and not os.path.exists(config.metadata_path):
        console.print_error("No runs yet:", f"{config.metadata_path} does not exist; run "
                            "'make run-local' first.")
        sys.exit(EXIT_BAD_INPUT)
    from pipeline import run_report
    store = run_report.open_store(config.metadata_connection_config())
    model_runs = store.get_artifacts_by_type("ModelRun")
    if not model_runs:
        console.print_error("No Trainer logs:", "ML Metadata records no ModelRun artifact yet.")
        sys.exit(EXIT_BAD_INPUT)
    logdir_spec = ",".join(f"trainer_{a.id}:{a.uri}" for a in model_runs)
    console.console.print(f"TensorBoard over {len(model_runs)} Trainer run(s) at "
                          f"http://{host}:{port}/")
    os.execv(sys.executable, [sys.executable, "-m", "tensorboard.main", "--logdir_spec",
                              logdir_spec, "--host", host, "--port", str(port)])


def main() -> None:
    try:
        cli.main(standalone_mode=False)
        code = EXIT_OK
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:
        e.show()
        code = e.exit_code
    except click.Abort:
        code = EXIT_FAILED
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else EXIT_FAILED
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: TensorFlow 2.16's function objects print "Exception ignored in
    # AtomicFunction.__del__" tracebacks when they are collected during shutdown.
    os._exit(code)


if __name__ == "__main__":
    main()
