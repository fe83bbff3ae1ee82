"""Rows of the pipeline's examples as a client of the raw serving signature sends them: one value per feature
column, under its header's name; a number for numeric and integer columns, a string for the others. With their
serialized tf.Example, as serving_default takes it."""
from __future__ import annotations

import dataclasses
import glob
import math
import os
from typing import Any

from pipeline.modules import features


@dataclasses.dataclass(frozen=True)
class EvalExample:
    row: dict[str, Any]  # as a client of the raw signature (serving_raw) sends it
    record: bytes  # the serialized tf.Example, as serving_default takes it


def eval_examples(examples_uri: str, contract: features.DatasetContract, count: int = 1) -> list[EvalExample]:
    """The first `count` eval examples with a value in every feature column (or, when there are not that many,
    the first ones, a gap written NaN or "")."""
    complete, partial = [], []
    for example, record in _examples(examples_uri, "eval", limit=200):
        row = _row(example, contract)
        gaps = any(v == "" or (isinstance(v, float) and math.isnan(v)) for v in row.values())
        (partial if gaps else complete).append(EvalExample(row, record))
        if len(complete) >= count:
            break
    return (complete + partial)[:count]


def rows_and_labels(examples_uri: str, contract: features.DatasetContract, split: str = "eval",
                    limit: int | None = None):
    """(row, label) for the examples of a split, in order, streaming; the label as the model answers it (a class
    as text, a number), None for a row without one."""
    for example, _ in _examples(examples_uri, split, limit):
        yield _row(example, contract), _label(example, contract)


def _examples(examples_uri: str, split: str, limit: int | None):
    """(tf.train.Example, its serialized record) of a split written by CsvExampleGen, in order, streaming."""
    import tensorflow as tf
    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    for record in (dataset.take(limit) if limit else dataset).as_numpy_iterator():
        yield tf.train.Example.FromString(record), record


def _label(example: Any, contract: features.DatasetContract) -> Any:
    feature = example.features.feature.get(contract.label.key)
    kind = feature.WhichOneof("kind") if feature is not None else None
    values = list(getattr(feature, kind).value) if kind else []
    if not values:
        return None
    value = values[0]
    if contract.task == features.CLASSIFICATION:
        text = value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else str(value)
        return None if text == "" or text in contract.missing_markers else text
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _row(example: Any, contract: features.DatasetContract) -> dict[str, Any]:
    values = example.features.feature
    row: dict[str, Any] = {}
    for column in contract.features:
        feature = values.get(column.key)
        kind = feature.WhichOneof("kind") if feature is not None else None
        found = list(getattr(feature, kind).value) if kind else []
        text_input = column.role == features.CATEGORICAL and column.dtype == "string"
        if text_input:
            row[column.name] = found[0].decode("utf-8", "replace") if found else ""
            continue
        value = found[0] if found else math.nan
        if isinstance(value, bytes):
            try:
                value = float(value.decode())
            except ValueError:
                value = math.nan  # a missing marker such as NA
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            row[column.name] = int(value)
        else:  # tf.Example holds float32: its shortest decimal form
            row[column.name] = value if math.isnan(value) else float(f"{value:.7g}")
    return row
