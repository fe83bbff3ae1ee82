"""The summary `tfxsp run` prints at the end of a run: every component's state and time, the evaluation, the
blessing, the push, the serving validation, and commands that query the live model."""
from __future__ import annotations

import json

from rich.table import Table

from pipeline.cli.console import console
from pipeline.config import PipelineConfig
from pipeline.metadata.report import RunReport
from pipeline.metadata.store import describe_connection
from pipeline.modules import features

_STATE_STYLE = {"complete": "green", "cached": "blue", "failed": "bold red"}


def print_summary(report: RunReport, config: PipelineConfig, log_path: str | None,
                  live_answer: str | None = None, server_stays: bool = True) -> None:
    console.print(f"\n[bold]Pipeline run[/] {report.run_id} ({config.pipeline_name})")
    table = Table()
    table.add_column("Component")
    table.add_column("State")
    table.add_column("Time", justify="right")
    for node in report.nodes:
        style = _STATE_STYLE.get(node.state, "yellow")
        table.add_row(node.node_id, f"[{style}]{node.state}[/]", f"{node.seconds:.1f} s")
    console.print(table)

    if report.accuracy:
        slices = ", ".join(f"{name} {value:.3f}" for name, value in report.accuracy.items())
        console.print(f"[bold]Eval accuracy:[/] {slices}")
    if report.blessed is True:
        console.print(f"[bold]Blessing:[/] [green]blessed[/] (accuracy >= {config.min_accuracy}, "
                      f"at most {config.max_accuracy_drop} below the baseline)")
    elif report.blessed is False:
        console.print("[bold]Blessing:[/] [bold red]not blessed, not pushed[/]")
        for failure in report.validation_failures:
            console.print(f"  - {failure}")
    if report.pushed:
        console.print(f"[bold]Pushed:[/] version {report.pushed_version} -> "
                      f"{report.pushed_destination}")
    if report.serving_validation:
        _print_serving_validation(report.serving_validation)
        if report.serving_validation["outcome"] == "passed":
            _print_query_commands(config, live_answer, server_stays)
    console.print("[bold]Next:[/]")
    console.print("  TensorBoard:  make tensorboard   (or: tfxsp tensorboard)")
    console.print("  Lineage:      tfxsp lineage served   (also: tfxsp runs, tfxsp models)")
    # describe_connection never shows a password.
    console.print(f"  Metadata:     {describe_connection(config.metadata_connection_config())}")


def _print_serving_validation(validation: dict) -> None:
    outcome = validation["outcome"]
    if outcome == "passed":
        latency = validation.get("latency", {})
        figures = "; ".join(f"{api.upper() if api == 'rest' else 'gRPC'} p50 {f['p50_ms']:.1f} ms, "
                            f"p99 {f['p99_ms']:.1f} ms" for api, f in latency.items())
        console.print(f"[bold]Serving validation:[/] [green]passed[/] - version "
                      f"{validation['probed_version']} answers over REST and gRPC as the trained "
                      f"model does ({figures})")
    elif outcome == "skipped":
        console.print(f"[bold]Serving validation:[/] {validation['reason']}")
    elif outcome == "inconclusive":
        console.print(f"[bold]Serving validation:[/] [yellow]could not validate[/] - {validation['reason']}")
        console.print(f"  Version {validation.get('probed_version')} stays where it is (not rolled back).")
    else:
        console.print(f"[bold]Serving validation:[/] [bold red]FAILED[/] - {validation['reason']}")
        rollback = validation.get("rollback")
        if rollback:
            back = ("the server is back on version "
                    f"{rollback['previous_version']}" if rollback.get("previous_version")
                    else "no other version is left to serve")
            if not rollback.get("server_back_on_previous"):
                back += " (NOT confirmed by the server's status in time)"
            console.print(f"  Rolled back: moved to {rollback['quarantine_path']}; {back}.")
        elif validation.get("rollback_skipped"):
            console.print(f"  Not rolled back: {validation['rollback_skipped']}.")


def query_commands(config: PipelineConfig) -> tuple[str, str]:
    """Copy-paste commands that query the live model: curl over REST, and Python over gRPC."""
    body = json.dumps({"signature_name": "serving_raw", "instances": [features.EXAMPLE_ROW]})
    curl = f"curl -d '{body}' {config.rest_url}/v1/models/{config.model_name}:predict"
    inputs = ", ".join(f'"{k}": [{v!r}]' for k, v in features.EXAMPLE_ROW.items())
    python = (
        "python - <<'EOF'\n"
        "import grpc, tensorflow as tf\n"
        "from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc\n"
        f"stub = prediction_service_pb2_grpc.PredictionServiceStub("
        f"grpc.insecure_channel('{config.grpc_target}'))\n"
        "request = predict_pb2.PredictRequest()\n"
        f"request.model_spec.name = '{config.model_name}'\n"
        "request.model_spec.signature_name = 'serving_raw'\n"
        f"for name, value in {{{inputs}}}.items():\n"
        "    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))\n"
        "print(stub.Predict(request, timeout=10).outputs['classes'].string_val)\n"
        "EOF")
    return curl, python


def _print_query_commands(config: PipelineConfig, answer: str | None, server_stays: bool) -> None:
    curl, python = query_commands(config)
    console.print("[bold]Query the live model[/] (REST, then gRPC):")
    console.print(curl, soft_wrap=True)
    if answer is not None:
        console.print(f"  [dim]-> {answer}[/]", soft_wrap=True)
    console.print(python, soft_wrap=True, markup=False)
    if not server_stays:
        console.print("[dim]The model server started for this run has stopped; "
                      "'make serve' serves the model again.[/]")


