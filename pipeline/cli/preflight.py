"""Checks that run before the pipeline, so that bad input fails in a second with a clear message
instead of deep inside a Beam job, and nothing is pushed.

They read the CSV files with the standard csv module: the same rules CsvExampleGen applies
(one header shared by all files, comma separated, an empty field is a missing value).
"""
from __future__ import annotations

import csv
import glob
import os
import tempfile

from pipeline.config import PipelineConfig
from pipeline.modules import features

# Fewer rows than this cannot give both a train and an eval split worth the name.
MIN_ROWS = 10
NUMERIC_COLUMNS = features.NUMERIC_FEATURE_KEYS + features.UNUSED_KEYS


class PreflightError(ValueError):
    """Input that the pipeline cannot use; the message says what and where."""


def check_inputs(config: PipelineConfig) -> list[str]:
    """Runs every check; returns the CSV files that will be read, or raises PreflightError."""
    csv_files = _check_data_root(config.data_dir)
    for path in csv_files:
        _check_csv(path)
    _check_writable(config.serving_model_dir, "serving model base path (config 'serving_model_base')")
    _check_writable(config.pipeline_root, "pipeline root (config 'tfx_root')")
    return csv_files


def _check_data_root(data_dir: str) -> list[str]:
    if not os.path.isdir(data_dir):
        raise PreflightError(
            f"The data directory {data_dir} does not exist. Point config 'data_root' at a folder "
            f"of CSV files (for example: tfxsp run --set data_root=data/penguins).")
    csv_files = sorted(glob.glob(os.path.join(data_dir, "*.csv")))
    if not csv_files:
        raise PreflightError(
            f"The data directory {data_dir} holds no *.csv file. CsvExampleGen reads every CSV "
            f"file in config 'data_root'; put the dataset there.")
    return csv_files


def _check_csv(path: str) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise PreflightError(f"{path} is empty: it needs a header line "
                                 f"({','.join(features.CSV_COLUMNS)}) and data rows.")
        header = [h.strip() for h in header]
        missing = [c for c in features.CSV_COLUMNS if c not in header]
        unexpected = [c for c in header if c not in features.CSV_COLUMNS]
        if missing or unexpected or len(set(header)) != len(header):
            raise PreflightError(
                f"{path} has the header {','.join(header)!r}, but the pipeline expects the columns "
                f"{','.join(features.CSV_COLUMNS)!r}"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unexpected: {', '.join(unexpected)}" if unexpected else "")
                + ("; duplicated columns" if len(set(header)) != len(header) else "") + ".")
        rows = 0
        for row in reader:
            rows += 1
            _check_row(path, reader.line_num, header, row)
    if rows < MIN_ROWS:
        raise PreflightError(f"{path} has {rows} data row(s); the pipeline needs at least "
                             f"{MIN_ROWS} to split them into train and eval sets.")


def _check_row(path: str, line: int, header: list[str], row: list[str]) -> None:
    if len(row) != len(header):
        raise PreflightError(f"{path}, line {line}: {len(row)} fields where the header has "
                             f"{len(header)}: {','.join(row)!r}.")
    record = dict(zip(header, row))
    if not record[features.LABEL_KEY].strip():
        raise PreflightError(f"{path}, line {line}: the label column '{features.LABEL_KEY}' is "
                             f"empty; every training row needs a label.")
    for column in NUMERIC_COLUMNS:
        value = record[column].strip()
        if value:
            try:
                float(value)
            except ValueError:
                raise PreflightError(
                    f"{path}, line {line}: column '{column}' holds {value!r}, which is not a "
                    f"number. Write a number, or leave the field empty for a missing value.") from None


def _check_writable(directory: str, what: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".tfxsp-write-check-"):
            pass
    except OSError as e:
        raise PreflightError(f"The {what} {directory} is not writable: {e.strerror}. Choose a "
                             f"folder you can write to.") from None


def check_serving_ports(config: PipelineConfig) -> None:
    """The model server the serving validation needs must be able to listen. Found only after training, a taken
    port would fail the probe and roll back a good model. A TF Serving model server already answering on the REST
    port is used; any other program there (recognised by its answer, serving.launcher.probe_rest) is an error."""
    if not config.serving_validation:
        return
    from serving import launcher
    answer = launcher.probe_rest(config.serving_host, config.rest_port)
    if answer.kind == "model_server":
        return  # a model server already runs there; the run uses it
    if answer.kind == "other":
        raise PreflightError(
            f"Serving port {config.rest_port} on {config.serving_host} is taken by a program that is not a TF "
            f"Serving model server: {answer.detail}. The serving validation would probe it. Stop that program, pick "
            "free ports (--set grpc_port=... --set rest_port=...), or skip the probe "
            "(--set serving_validation=false).")
    busy = [port for port in (config.grpc_port, config.rest_port)
            if not launcher.port_is_free(config.serving_host, port)]
    if busy:
        raise PreflightError(
            f"Serving ports in use: {', '.join(map(str, busy))} on {config.serving_host} is taken by another "
            f"program, and no model server answers at {config.rest_url}, so none can be started for the serving "
            "validation. Stop that program, pick free ports (--set grpc_port=... --set rest_port=...), or skip the "
            "probe (--set serving_validation=false).")
