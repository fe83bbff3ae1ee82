"""The `tfxsp` command line.

Exit codes of `tfxsp run`: 0 blessed, pushed and proven live; 1 a component failed; 2 bad
configuration or input (nothing ran); 3 the model was not blessed, so nothing was pushed; 4 the
serving validation failed (the pushed version was rolled back).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

import click

from pipeline.config import ConfigError, PipelineConfig, load_config, parse_set_options

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NOT_BLESSED, EXIT_NOT_SERVED = 0, 1, 2, 3, 4


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

    _check_serving_ports(config)
    console.console.print(f"Running pipeline [bold]{config.pipeline_name}[/] "
                          f"(data: {config.data_dir}, outputs: {config.pipeline_root})")
    log_path = None if verbose else os.path.join(
        config.pipeline_root, "logs", time.strftime("run-%Y%m%d-%H%M%S.log"))
    error, answer = None, None
    with console.output_to_file(log_path) if log_path else contextlib.nullcontext():
        from pipeline import local_runner, run_report
        with _model_server(config) as started_here:
            with console.ComponentProgress():
                try:
                    local_runner.run(config)
                except Exception as e:
                    error = e
            store = run_report.open_store(config.metadata_connection_config())
            run_id = run_report.latest_run_id(store, config.pipeline_name)
            report = run_report.collect(store, run_id) if run_id else None
            validation = (report.serving_validation or {}) if report else {}
            if validation.get("state") == "passed":
                answer = _ask_live_model(config)

    if report:
        console.print_summary(report, config, log_path, answer, server_stays=not started_here)
    if error is not None:
        failed = ", ".join(report.failed_nodes) if report and report.failed_nodes else "the run"
        console.print_error(f"{failed} failed:", console.describe_error(error)
                            + (f" (full logs: {log_path})" if log_path else ""))
        sys.exit(EXIT_FAILED)
    if report is None or not report.blessed:
        sys.exit(EXIT_NOT_BLESSED)
    if validation.get("state") == "failed":
        console.print_error("Serving validation failed:", validation["reason"])
        sys.exit(EXIT_NOT_SERVED)


def _check_serving_ports(config: PipelineConfig) -> None:
    """Before anything runs: the model server the probe needs must be able to listen. Found only
    after training, a taken port would fail the probe and roll back a good model."""
    if not config.serving_validation:
        return
    from pipeline import console
    from serving import launcher
    if launcher.rest_is_answering(config.serving_host, config.rest_port):
        return  # a model server already runs there; _model_server uses it
    busy = [port for port in (config.grpc_port, config.rest_port)
            if not launcher.port_is_free(config.serving_host, port)]
    if busy:
        console.print_error(
            "Serving ports in use:",
            f"{', '.join(map(str, busy))} on {config.serving_host} is taken by another program, "
            f"and no model server answers at {config.rest_url}, so none can be started for the "
            "serving validation. Stop that program, pick free ports (--set grpc_port=... --set "
            "rest_port=...), or skip the probe (--set serving_validation=false). Nothing was run "
            "or pushed.")
        sys.exit(EXIT_BAD_INPUT)


@contextlib.contextmanager
def _model_server(config: PipelineConfig) -> Iterator[bool]:
    """A model server over the model base path for the probe: the one already answering on the
    configured REST port, or one started here (and stopped on exit). Yields whether it started one."""
    if not config.serving_validation:
        yield False
        return
    from pipeline import console
    from serving import launcher
    if launcher.rest_is_answering(config.serving_host, config.rest_port):
        console.console.print(f"Using the model server already answering at {config.rest_url}")
        yield False
        return
    handle = launcher.start_server(
        model_name=config.model_name, model_base_path=config.serving_model_dir,
        grpc_port=config.grpc_port, rest_port=config.rest_port, host=config.serving_host,
        wait_for_model=False)
    console.console.print(f"Started a model server ({handle.kind}) for {config.serving_model_dir} "
                          f"on {config.rest_url} (REST) and {config.grpc_target} (gRPC)")
    try:
        yield True
    finally:
        handle.stop()


def _ask_live_model(config: PipelineConfig) -> str | None:
    """The live model's answer to the summary's curl command, so the run shows it answering."""
    import json

    from pipeline import console
    from serving.client import RestClient, RestError
    try:
        answer = RestClient(config.rest_url).predict(
            config.model_name, instances=[console.EXAMPLE_ROW], signature_name="serving_raw")
        return json.dumps(answer, separators=(",", ":"))
    except (RestError, OSError) as e:
        return f"no answer: {e}"


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@set_option
@click.pass_context
def serve(ctx: click.Context, set_items: tuple[str, ...]) -> None:
    """Serve the model base path in the foreground (Ctrl-C stops).

    Runs the embedded TF Serving-compatible server over <serving_model_base>/<model_name> on the
    configured ports. Any tensorflow_model_server flag may follow and overrides those defaults,
    e.g. tfxsp serve --enable_batching --file_system_poll_wait_seconds=5.
    """
    config = _load(set_items)
    from serving import cli as serving_cli
    defaults = [f"--model_name={config.model_name}",
                f"--model_base_path={config.serving_model_dir}",
                f"--port={config.grpc_port}", f"--rest_api_port={config.rest_port}",
                f"--bind_address={config.serving_host}"]
    if not any(arg.startswith(("--model_config_file", "--help", "--version")) for arg in ctx.args):
        os.makedirs(config.serving_model_dir, exist_ok=True)
    else:
        defaults = defaults[2:]  # a model config file names the models itself
    sys.exit(serving_cli.main(defaults + list(ctx.args)))


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
    runs = [f"--run=trainer_{a.id}={a.uri}" for a in model_runs]
    console.console.print(f"TensorBoard over {len(model_runs)} Trainer run(s) at "
                          f"http://{host}:{port}/")
    # pipeline/tensorboard_main.py: the runs as links under one --logdir (the projector needs a
    # logdir) and a pkg_resources stand-in (TensorBoard 2.16 imports it; setuptools >= 81 lacks it).
    os.execv(sys.executable, [sys.executable, "-m", "pipeline.tensorboard_main", "--runs-dir",
                              os.path.join(config.pipeline_root, "tensorboard_runs"), *runs,
                              "--host", host, "--port", str(port)])


from pipeline import lineage_cli  # noqa: E402

lineage_cli.register(cli)
from pipeline import kubeflow_cli  # noqa: E402

cli.add_command(kubeflow_cli.kubeflow)


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
