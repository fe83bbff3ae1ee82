"""The summary `tfxsp run` prints at the end of a run: every component's state and time, the evaluation, the
blessing, the push, the serving validation, and commands that query the live model."""
from __future__ import annotations

import base64
import json
import shlex
from typing import Any

from rich.table import Table

from pipeline import evaluation
from pipeline.cli import dataset_report
from pipeline.cli.console import console
from pipeline.cli.tables import e
from pipeline.config import PipelineConfig
from pipeline.dataset.analysis import Analysis
from pipeline.dataset.examples import EvalExample
from pipeline.metadata.report import RunReport
from pipeline.metadata.store import describe_connection
from pipeline.modules import features, signatures, tflite_export
from pipeline.runners import local

_STATE_STYLE = {"complete": "green", "cached": "blue", "failed": "bold red"}


def print_summary(report: RunReport, config: PipelineConfig, log_path: str | None, found: Analysis,
                  example: EvalExample | None = None, live_answer: str | None = None,
                  server_stays: bool = True) -> None:
    console.print(f"\n[bold]Pipeline run[/] {report.run_id} ({config.pipeline_name})")
    console.print(dataset_report.one_line(found))
    table = Table()
    table.add_column("Component")
    table.add_column("State")
    table.add_column("Time", justify="right")
    for node in report.nodes:
        style = _STATE_STYLE.get(node.state, "yellow")
        table.add_row(node.node_id, f"[{style}]{node.state}[/]", f"{node.seconds:.1f} s")
    console.print(table)

    if report.training:
        console.print(f"[bold]Trainer saw:[/] {training_line(report)}")
    _print_metrics(report)
    if report.blessed is True:
        console.print(f"[bold]Blessing:[/] [green]blessed[/] ({e(local.blessing(config, found.contract).reason)})")
    elif report.blessed is False:
        console.print("[bold]Blessing:[/] [bold red]not blessed, not pushed[/]")
        for failure in report.validation_failures:
            console.print(f"  - {failure}")
    if report.push_reused:
        console.print(f"[bold]Pushed:[/] nothing new - {unchanged_push_line(report)} ({report.pushed_destination})")
    elif report.pushed:
        console.print(f"[bold]Pushed:[/] version {report.pushed_version} -> "
                      f"{report.pushed_destination}")
    if report.serving_validation:
        _print_serving_validation(report.serving_validation)
        if report.serving_validation["outcome"] == "passed" and example:
            _print_query_commands(config, found.contract, example, served_format(report), live_answer, server_stays)
    console.print("[bold]Next:[/]")
    console.print("  TensorBoard:  make tensorboard   (or: tfxsp tensorboard)")
    console.print("  Lineage:      tfxsp lineage served   (also: tfxsp runs, tfxsp models)")
    # describe_connection never shows a password.
    console.print(f"  Metadata:     {describe_connection(config.metadata_connection_config())}")


def training_line(report: RunReport) -> str:
    """How many examples the Trainer went through, against the training rows there are: a model trained for a
    fixed number of steps sees a shrinking share of a growing CSV (docs/large-data.md: sizing train_steps)."""
    seen = report.training
    line = f"{seen.examples:,} examples ({seen.steps:,} steps x batch {seen.global_batch_size:,})"
    rows = report.split_rows.get("train")
    if not rows:
        return line
    passes = seen.examples / rows
    line += f", {passes:,.0f} passes" if passes >= 10 else f", {passes:.2g} passes"
    line += f" over the {rows:,} training rows"
    if passes < 1:
        line += (f"; at most {passes:.0%} of them were used: raise train_steps to at least "
                 f"{-(-rows // seen.global_batch_size):,} for one pass (docs/large-data.md)")
    return line


def unchanged_push_line(report: RunReport) -> str:
    """What a run whose Pusher came from the cache says: the model was pushed before, by an earlier run. It
    "serves" only when this run's probe proved it (or there was no probe to ask)."""
    outcome = (report.serving_validation or {}).get("outcome")
    if outcome in (None, "passed"):
        return f"unchanged: version {report.pushed_version} already serves this model"
    return f"unchanged: version {report.pushed_version} holds this model, pushed by an earlier run"


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


def _print_metrics(report: RunReport) -> None:
    gate = report.gate_metric
    if gate is None:
        return
    label = evaluation.METRIC_LABELS.get(gate, gate)
    slices = ", ".join(f"{e(name)} {value:.4g}" for name, value in report.by_slice(gate).items())
    console.print(f"[bold]Eval {label}:[/] {slices}")
    others = {k: v for k, v in report.metrics.get("Overall", {}).items() if k in evaluation.METRIC_LABELS and k != gate}
    if others:
        console.print("[bold]Also (overall):[/] " + ", ".join(f"{evaluation.METRIC_LABELS[k]} {v:.4g}"
                                                               for k, v in others.items()))


def served_format(report: RunReport) -> str:
    """What the server serves of the pushed version, as the ServingValidator found: "tflite" or "saved_model"."""
    return (report.serving_validation or {}).get("served_format") or "saved_model"


def query_request(example: EvalExample, served: str) -> tuple[str, list[Any]]:
    """The signature and REST instances that query the live model with an eval example: its raw row to serving_raw,
    or, where the server serves model.tflite (serving_default alone), its tf.Example."""
    if served == "tflite":
        return tflite_export.SERVED_SIGNATURE, [{"b64": base64.b64encode(example.record).decode()}]
    return signatures.RAW_SIGNATURE, [example.row]


def query_commands(config: PipelineConfig, contract: features.DatasetContract, example: EvalExample,
                   served: str = "saved_model") -> tuple[str, str]:
    """Copy-paste commands that query the live model with a real eval row: curl over REST, and Python over gRPC."""
    signature, instances = query_request(example, served)
    body = json.dumps({"signature_name": signature, "instances": instances})
    curl = f"curl -d {shlex.quote(body)} {config.rest_url}/v1/models/{config.model_name}:predict"
    output = "classes" if contract.task == features.CLASSIFICATION else "predictions"
    values = "string_val" if output == "classes" else "float_val"
    if signature == tflite_export.SERVED_SIGNATURE:
        inputs = (f"request.inputs['examples'].CopyFrom(tf.make_tensor_proto("
                  f"[base64.b64decode({instances[0]['b64']!r})], dtype=tf.string))\n")
    else:
        inputs = (f"for name, value in {{{', '.join(f'{k!r}: [{v!r}]' for k, v in example.row.items())}}}.items():\n"
                  "    dtype = tf.string if isinstance(value[0], str) else tf.float32\n"
                  "    request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))\n")
    python = (
        "python - <<'EOF'\n"
        "import base64, grpc, tensorflow as tf\n"
        "from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc\n"
        f"stub = prediction_service_pb2_grpc.PredictionServiceStub("
        f"grpc.insecure_channel('{config.grpc_target}'))\n"
        "request = predict_pb2.PredictRequest()\n"
        f"request.model_spec.name = '{config.model_name}'\n"
        f"request.model_spec.signature_name = '{signature}'\n"
        f"{inputs}"
        f"print(stub.Predict(request, timeout=10).outputs['{output}'].{values})\n"
        "EOF")
    return curl, python


def _print_query_commands(config: PipelineConfig, contract: features.DatasetContract, example: EvalExample,
                          served: str, answer: str | None, server_stays: bool) -> None:
    curl, python = query_commands(config, contract, example, served)
    console.print("[bold]Query the live model[/] (REST, then gRPC):")
    console.print(curl, soft_wrap=True)
    if answer is not None:
        console.print(f"  [dim]-> {answer}[/]", soft_wrap=True)
    console.print(python, soft_wrap=True, markup=False)
    if not server_stays:
        console.print("[dim]The model server started for this run has stopped; "
                      "'make serve' serves the model again.[/]")


