"""`tfxsp predict INPUT.csv -o OUTPUT.csv`: batch scoring of raw CSV rows with a pushed version (pipeline/scoring/),
in this process or through the model server over REST or gRPC. Streaming: memory is a few batches, whatever the
file's size. Exits 0 when every scorable row was scored (rejected rows are in the rejects file), 2 on bad input,
5 when no model server answers (--via rest|grpc), 1 when the server refuses a batch."""
from __future__ import annotations

import os

import click

from pipeline.cli import console, exit_codes
from pipeline.cli.model import pick_present
from pipeline.cli.model_actions import current_serving, mark_served
from pipeline.cli.options import echo_json, fail, guarded, metadata_options, open_metadata
from pipeline.cli.tables import e

VIAS = ("local", "rest", "grpc")
IN_FLIGHT = {"local": 2, "rest": 4, "grpc": 4}  # batches scored at once: enough to keep both cores or the server busy


@click.command()
@click.argument("input_path", metavar="INPUT.csv", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False),
              help="The CSV to write: the input's columns, then the prediction columns.")
@click.option("--version", "version", type=int, default=None, help="Score with this pushed version.")
@click.option("--label", "label", default=None, help="Score with the version under this label (e.g. stable).")
@click.option("--via", type=click.Choice(VIAS), default="local", show_default=True,
              help="local: the SavedModel in this process; rest, grpc: ask the model server.")
@click.option("--rejects", "rejects_path", default=None, type=click.Path(dir_okay=False),
              help="Where rows that cannot be scored go.  [default: OUTPUT.rejects.csv]")
@click.option("--batch-size", type=click.IntRange(1, 1_000_000), default=1024, show_default=True,
              help="Rows per call of the model.")
@metadata_options()
def predict(input_path: str, output_path: str, version: int | None, label: str | None, via: str,
            rejects_path: str | None, batch_size: int, set_items: tuple[str, ...], metadata_url: str | None,
            output_format: str | None) -> None:
    """Score the rows of INPUT.csv with a pushed version (the served one by default) into OUTPUT.csv. When the
    file has the label column, the metric (accuracy; RMSE and MAE) is printed."""
    # Before TensorFlow is imported. Level 3 also hides the CUDA plugins' "Unable to register" lines, which TF prints
    # at import on every machine; a real failure still reaches the user as the exception it raises.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    console.quiet_logs(verbose=False)
    from pipeline.scoring import batch, reader, scorers, target, writer
    if version is not None and label is not None:
        fail("Bad arguments:", "give --version or --label, not both.")
    if os.path.abspath(input_path) in (os.path.abspath(output_path), os.path.abspath(output_path) + writer.PARTIAL):
        fail("Bad arguments:", f"the output {output_path} would overwrite the input.")
    rejects_path = rejects_path or os.path.splitext(output_path)[0] + ".rejects.csv"
    config, store, _ = open_metadata(set_items, metadata_url)
    chosen = _version(config, store, version, label)
    scoring_target = guarded(lambda: target.describe(store, int(chosen.version), chosen.destination))
    reader.set_field_size_limit()
    try:
        rows = reader.CsvRows(input_path, scoring_target.contract, batch_size)
    except reader.InputError as error:
        fail("Bad input:", str(error))
    try:
        scorer = _scorer(via, scoring_target, config, label)
    except scorers.ScoringError as error:
        rows.close()
        fail("Cannot score:", str(error))
    try:
        output = writer.OutputWriter(output_path, rows.header_text, rows.header, scoring_target)
    except OSError as error:
        rows.close()
        fail("Cannot write:", f"{output_path}: {error.strerror or error}")
    rejects = writer.RejectsWriter(rejects_path, rows.header)
    try:
        with _progress(rows, output_format == "json") as advance:
            summary = batch.score_file(rows, scorer, scoring_target, output, rejects, IN_FLIGHT[via], advance)
    except batch.Failed as failure:
        _report_failure(failure, via)
    finally:
        rows.close()
        rejects.close()
        scorer.close()
    _report(summary, chosen.version, via, label, output_path, rejects, output_format)


def _version(config, store, version: int | None, label: str | None):
    """The ModelVersion to score with: --version, the version under --label (the model config file), or the one
    served; or exit 2."""
    from pipeline.metadata import models as api
    found = guarded(lambda: api.list_models(store, config.serving_model_dir))
    serving = current_serving(config)
    mark_served(found, serving)
    which = "served" if version is None else str(version)
    if label is not None:
        labels = serving.labels if serving else {}
        if label not in labels:
            known = ", ".join(f"{k} -> {v}" for k, v in sorted(labels.items())) or "none"
            fail("Unknown label:", f"{label!r} is not a label of {config.model_name} in {config.model_config_file} "
                                   f"(labels: {known}; tfxsp models label VERSION LABEL sets one).")
        which = str(labels[label])
    return pick_present(found, which, config.serving_model_dir)


def _scorer(via: str, scoring_target, config, label: str | None):
    from pipeline.scoring import scorers
    if via == "local":
        return scorers.LocalScorer(scoring_target)
    if via == "rest":
        return scorers.RestScorer(scoring_target, config.model_name, label, config.rest_url)
    return scorers.GrpcScorer(scoring_target, config.model_name, label, config.grpc_target)


class _progress:
    """A progress bar over the input's bytes with the rows scored and rows/s, on stderr; none for --format json
    or when stderr is not a terminal."""

    def __init__(self, rows, quiet: bool):
        self._rows, self._quiet = rows, quiet
        self._bar = None

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        err = Console(stderr=True)
        if self._quiet or not err.is_terminal:
            return lambda scored: None
        size = max(os.path.getsize(self._rows.path), 1)
        self._bar = Progress(TextColumn("Scoring"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                             TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s"),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True)
        self._bar.start()
        task = self._bar.add_task("score", total=size, rows=0, rate=0.0)
        started = self._bar.get_time()

        def advance(scored: int) -> None:
            elapsed = max(self._bar.get_time() - started, 1e-9)
            self._bar.update(task, completed=self._rows.bytes_read, rows=scored, rate=scored / elapsed)
        return advance

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def _report_failure(failure, via: str) -> None:
    kept = (f" The {failure.rows:,} rows scored before it are in {failure.partial_path}." if failure.rows else "")
    if not failure.rows and os.path.exists(failure.partial_path):
        os.unlink(failure.partial_path)
    if failure.cause.unreachable:
        fail("Model server unreachable:", f"{failure.cause}.{kept} Start one with `tfxsp serve` (or `make serve`), "
                                          "or score in this process with --via local.", exit_codes.UNREACHABLE)
    fail("Scoring failed:", f"{failure.cause}.{kept}", exit_codes.FAILED)


def _report(summary, version: str, via: str, label: str | None, output_path: str, rejects,
            output_format: str | None) -> None:
    if output_format == "json":
        echo_json({"version": int(version), "label": label, "via": via, "rows": summary.rows,
                   "rejects": summary.rejects, "rejects_file": rejects.path if summary.rejects else None,
                   "output": os.path.abspath(output_path), "seconds": round(summary.seconds, 3),
                   "rows_per_second": round(summary.rows_per_second, 1), "metric": summary.metric})
        return
    out = console.console
    served_by = f"version {version}" + (f" (label {label})" if label else "")
    out.print(f"[bold]Scored {summary.rows:,} rows[/] with {e(served_by)} via {via} in {summary.seconds:.1f} s "
              f"({summary.rows_per_second:,.0f} rows/s) -> {e(output_path)}")
    if summary.metric:
        values = ", ".join(f"{k} {v:.4f}" for k, v in summary.metric.items() if k != "labelled")
        out.print(f"  On the {summary.metric['labelled']:,} rows with a label: {values}")
    if summary.rejects:
        out.print(f"  [yellow]{summary.rejects:,} rows could not be scored[/]: {e(rejects.path)} has each with its "
                  "line number and reason")
