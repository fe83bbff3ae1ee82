"""`tfxsp monitor --logs PREFIX`: is what the served model sees what it was trained on? The logged requests
(pipeline/monitoring/request_logs.py) against the served version's training statistics and schema, found through
ML Metadata lineage, by TFDV's skew comparison; each feature's distance and verdict, an HTML report, the result
recorded in ML Metadata; exit 7 (exit_codes.SKEWED) when a feature crossed its threshold."""
from __future__ import annotations

import os
import sys

import click
from rich.table import Table

from pipeline.cli import console, exit_codes
from pipeline.cli.options import echo_json, fail, guarded, load, set_option
from pipeline.cli.tables import e


@click.command()
@click.option("--logs", "logs", required=True, metavar="PREFIX",
              help="The request logs: the filename_prefix of the model config's log_collector_config "
                   "(files PREFIX-*.tfrecord), or a file or folder of PredictionLog TFRecords.")
@click.option("--version", "version", type=int, default=None,
              help="The served version to check (default: the newest version in the logs).")
@click.option("--format", "output_format", type=click.Choice(("table", "json")), default="table",
              help="table (the default) for people, json for scripts.")
@click.option("--report", "report", type=click.Path(dir_okay=False), default=None,
              help="Where to write the HTML report (default: <pipeline root>/monitoring/<model>-<version>-"
                   "<time>/report.html).")
@click.option("--metadata-url", default=None, metavar="URL",
              help="The store to use instead of the configured one: a path or sqlite:///path, mysql://..., "
                   "grpc://host:port.")
@set_option
def monitor(logs: str, version: int | None, output_format: str, report: str | None, metadata_url: str | None,
            set_items: tuple[str, ...]) -> None:
    """Compare the served model's logged requests with its training data (TFDV skew).

    Numeric features by Jensen-Shannon divergence, categorical ones by L-infinity distance; thresholds are
    config monitor_numeric_threshold, monitor_categorical_threshold and monitor_feature_thresholds. Exits 7 when
    a feature is over its threshold, 2 on bad input (no logs, logs of another model, a version without lineage).
    """
    import time

    from pipeline.metadata import store as store_lib
    from pipeline.monitoring import record, request_logs, skew, training_data
    from pipeline.monitoring import report as report_lib

    if metadata_url and "://" not in metadata_url:
        metadata_url = "sqlite://" + os.path.abspath(metadata_url)
    config = load(set_items, metadata_url=metadata_url)
    connection = config.metadata_connection_config()
    store = guarded(lambda: store_lib.open_store(connection, writable=True))
    try:
        logged = request_logs.read_logs(logs, config.model_name)
    except request_logs.LogError as error:
        fail("Request logs:", str(error))
    versions = sorted(logged.records_by_version)
    if version is None:
        version = versions[-1]
    elif version not in versions:
        fail("Request logs:", f"The logs at {logs} hold no request of {config.model_name} version {version}; they "
                              f"hold version(s) {', '.join(map(str, versions))}.")
    training = guarded(lambda: training_data.find(store, version))
    rows, skipped = request_logs.rows_of(logged.records_by_version[version],
                                         {c.name: c.key for c in training.contract.features})
    if not rows:
        why = "; ".join(f"{count} {reason}" for reason, count in skipped.items())
        fail("Request logs:", f"The logged requests of {config.model_name} version {version} hold no raw features"
                              + (f" ({why})" if why else "") + ": nothing to compare.")
    result = skew.compare(rows, training_data.load_statistics(training.statistics_path),
                          training_data.load_schema(training.schema_path), training.contract,
                          config.monitor_numeric_threshold, config.monitor_categorical_threshold,
                          config.monitor_feature_thresholds)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    report_path = os.path.abspath(report or os.path.join(
        config.pipeline_root, "monitoring", f"{config.model_name}-{version}-{stamp}", "report.html"))
    try:
        report_lib.write_html(report_path, result, model=config.model_name, version=version, logs=logs,
                              files=len(logged.files), pushed_model_id=training.pushed_model_id,
                              statistics_id=training.statistics_id, schema_id=training.schema_id)
    except OSError as error:
        fail("Cannot write the report:", f"{report_path}: {error.strerror}")
    execution_id, artifact_id = record.record(store, training, result, report_dir=os.path.dirname(report_path),
                                              logs=logs, model_name=config.model_name,
                                              pipeline_name=config.pipeline_name)
    if output_format == "json":
        echo_json({
            "model_name": config.model_name, "version": version, "requests": result.requests,
            "files": logged.files, "other_models": logged.other_models, "skipped": skipped,
            "features": [{"name": f.name, "key": f.key, "measure": f.measure, "distance": f.distance,
                          "threshold": f.threshold, "verdict": f.verdict, "skewed": f.flagged}
                         for f in result.features],
            "skewed": [f.name for f in result.flagged],
            "other_anomalies": dict(report_lib.other_anomalies(result)),
            "report": report_path, "execution_id": execution_id, "report_artifact_id": artifact_id,
            "pushed_model_id": training.pushed_model_id})
    else:
        _print(config.model_name, version, logged, result, report_path, execution_id, training.pushed_model_id)
    if result.flagged:
        sys.exit(exit_codes.SKEWED)


_SHORT = {"Jensen-Shannon divergence": "Jensen-Shannon", "L-infinity distance": "L-infinity"}


def _print(model: str, version: int, logged, result, report_path: str, execution_id: int, pushed_id: int) -> None:
    table = Table(title=f"{model} version {version}: {result.requests} logged examples vs training data")
    for column in ("Feature", "Measure", "Distance", "Threshold", "Verdict"):
        table.add_column(column, justify="right" if column in ("Distance", "Threshold") else "left")
    for f in result.features:
        verdict = {"SKEWED": "[bold red]SKEWED[/]", "ok": "[green]ok[/]"}.get(f.verdict, f.verdict)
        distance = "–" if f.distance is None else f"{f.distance:.4f}"
        table.add_row(e(f.name), e(_SHORT.get(f.measure, f.measure)), distance, f"{f.threshold:.4f}", verdict)
    console.console.print(table)
    if logged.other_models:
        console.console.print("Left out: requests of other models: " + ", ".join(
            f"{e(name)} ({count})" for name, count in sorted(logged.other_models.items())))
    flagged = [f.name for f in result.flagged]
    console.console.print(("[bold red]Skewed:[/] " + ", ".join(e(n) for n in flagged)) if flagged
                          else "No feature over its threshold.")
    console.console.print(f"Report: {e(report_path)}  (recorded in ML Metadata: execution #{execution_id}, "
                          f"downstream of PushedModel #{pushed_id})")
