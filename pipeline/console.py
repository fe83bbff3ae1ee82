"""What `tfxsp run` shows a person: one line per component while it runs, a summary at the end,
and by default none of TFX's, Beam's and TensorFlow's log noise (`-v` shows all of it)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from pipeline.config import PipelineConfig

if TYPE_CHECKING:  # run_report imports TensorFlow, which must wait until quiet_logs() ran
    from pipeline.run_report import RunReport

console = Console(highlight=False)


@contextlib.contextmanager
def output_to_file(log_path: str) -> Iterator[None]:
    """Sends everything written to file descriptors 1 and 2 to `log_path` (TensorFlow's C++ logs,
    Beam's and the module-file wheel build's output included); this console keeps the terminal."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    saved = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    previous_file = console.file
    console.file = terminal
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    # Python logging (TFX's, Beam's) goes to the log file too, in full.
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(logging.INFO)
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)
        console.file = previous_file
        root.setLevel(previous_level)
        terminal.close()


def quiet_logs(verbose: bool) -> None:
    """Must run before TensorFlow is imported: TF_CPP_MIN_LOG_LEVEL is read once, at import."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        logging.basicConfig(level=logging.INFO)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore")


class ComponentProgress(logging.Handler):
    """Turns LocalDagRunner's 'Component X is running/finished.' log records into progress lines."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self._started: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "Component %s is running.":
            node_id = record.args[0]
            self._started[node_id] = time.monotonic()
            console.print(f"  [cyan]▶[/] {node_id} …")
        elif record.msg == "Component %s is finished.":
            node_id = record.args[0]
            elapsed = time.monotonic() - self._started.get(node_id, time.monotonic())
            console.print(f"  [green]✓[/] {node_id} [dim]({elapsed:.1f} s)[/]")

    def __enter__(self) -> ComponentProgress:
        # TFX logs through absl, whose records reach Python logging's "absl" logger.
        logger = logging.getLogger("absl")
        self._requested_level = logger.level
        logger.setLevel(logging.INFO)
        # Importing TensorBoard (which Transform and Trainer do) calls
        # absl.logging.set_verbosity(WARNING), which would hide the runner's progress records
        # from here on. Keep INFO while the run lasts; honour the last request afterwards.
        logger.setLevel = self._remember_level
        logger.addHandler(self)
        return self

    def _remember_level(self, level: int) -> None:
        self._requested_level = level

    def __exit__(self, *exc_info) -> None:
        logger = logging.getLogger("absl")
        logger.removeHandler(self)
        del logger.setLevel  # back to logging.Logger.setLevel
        logger.setLevel(self._requested_level)


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
        if report.serving_validation["state"] == "passed":
            _print_query_commands(config, live_answer, server_stays)
    console.print("[bold]Next:[/]")
    console.print("  TensorBoard:  make tensorboard   (or: tfxsp tensorboard)")
    console.print("  Lineage:      tfxsp lineage served   (also: tfxsp runs, tfxsp models)")
    console.print(f"  Metadata:     {config.metadata_url or config.metadata_path}")


def _print_serving_validation(validation: dict) -> None:
    state = validation["state"]
    if state == "passed":
        latency = validation.get("latency", {})
        figures = "; ".join(f"{api.upper() if api == 'rest' else 'gRPC'} p50 {f['p50_ms']:.1f} ms, "
                            f"p99 {f['p99_ms']:.1f} ms" for api, f in latency.items())
        console.print(f"[bold]Serving validation:[/] [green]passed[/] - version "
                      f"{validation['probed_version']} answers over REST and gRPC as the trained "
                      f"model does ({figures})")
    elif state == "skipped":
        console.print(f"[bold]Serving validation:[/] {validation['reason']}")
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


# A penguin from the dataset, as plain JSON for the raw-feature signature.
EXAMPLE_ROW = {"island": "Biscoe", "sex": "female", "bill_length_mm": 46.5, "bill_depth_mm": 14.8,
               "flipper_length_mm": 217.0, "body_mass_g": 5200.0}


def query_commands(config: PipelineConfig) -> tuple[str, str]:
    """Copy-paste commands that query the live model: curl over REST, and Python over gRPC."""
    body = json.dumps({"signature_name": "serving_raw", "instances": [EXAMPLE_ROW]})
    curl = f"curl -d '{body}' {config.rest_url}/v1/models/{config.model_name}:predict"
    inputs = ", ".join(f'"{k}": [{v!r}]' for k, v in EXAMPLE_ROW.items())
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


def describe_error(error: BaseException) -> str:
    """The error and what caused it: TFX wraps a module file's ImportError, for one."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return " <- caused by ".join(parts)


def print_error(title: str, message: str) -> None:
    console.print(f"[bold red]{title}[/] {message}")
