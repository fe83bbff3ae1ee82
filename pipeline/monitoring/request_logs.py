"""The requests a model server logged (TF Serving's request logging: TFRecord files of
`tensorflow.serving.PredictionLog` under a filename prefix, serving/request_logger.py) as rows of raw features, by
model version.

A row is what one example of a request held, by the feature's key in the training examples: `serving_raw` predict
requests (one input per CSV header, pipeline/modules/signatures.py) give one row per batch element; requests of
serialized tf.Examples (`serving_default` predict, classify, regress, multi-inference) give one row per example.
"""
from __future__ import annotations

import dataclasses
import glob
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any


class LogError(ValueError):
    """Logs that cannot be read or hold nothing for the model asked about; the message says what, for a person."""


@dataclasses.dataclass
class ModelLogs:
    model_name: str
    files: list[str]
    records_by_version: dict[int, list[Any]]  # PredictionLog records
    other_models: dict[str, int]  # records of other models in the same files


def log_files(prefix: str) -> list[str]:
    """The files of a prefix: <prefix>-*.tfrecord (as our server names them), or the prefix itself when it is a
    file or a folder of files."""
    if os.path.isfile(prefix):
        return [prefix]
    if os.path.isdir(prefix):
        return sorted(p for p in glob.glob(os.path.join(prefix, "*")) if os.path.isfile(p))
    return sorted(glob.glob(glob.escape(prefix) + "-*"))


def read_logs(prefix: str, model_name: str) -> ModelLogs:
    """Every logged request of `model_name`, by the version that answered it. Raises LogError."""
    from tensorflow_serving.apis import prediction_log_pb2

    files = log_files(prefix)
    if not files:
        raise LogError(f"No request logs at {prefix}: no file matches {prefix}-*. Log requests with a "
                       "logging_config in the model config file (docs/watching-a-served-model.md).")
    logs = ModelLogs(model_name, files, {}, {})
    for path in files:
        for data in _records(path):
            try:
                record = prediction_log_pb2.PredictionLog.FromString(data)
            except Exception:
                raise LogError(f"{path} holds a record that is not a tensorflow.serving.PredictionLog") from None
            spec = record.log_metadata.model_spec
            if spec.name != model_name:
                logs.other_models[spec.name] = logs.other_models.get(spec.name, 0) + 1
                continue
            logs.records_by_version.setdefault(spec.version.value, []).append(record)
    if not logs.records_by_version:
        if logs.other_models:
            others = ", ".join(f"{name or '(no name)'} ({count} requests)" for name, count in
                               sorted(logs.other_models.items()))
            raise LogError(f"The logs at {prefix} hold no request for model {model_name}, only for: {others}. "
                           "Pass the logs of this model, or set model_name.")
        raise LogError(f"The logs at {prefix} ({len(files)} file(s)) hold no request at all.")
    return logs


def rows_of(records: list[Any], names_to_keys: Mapping[str, str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The raw-feature rows of the records, and the count of requests skipped (no raw features), by why.
    `names_to_keys`: the raw serving signature's input names (CSV headers) -> feature keys."""
    rows: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    for record in records:
        rows.extend(_rows(record, names_to_keys, skipped))
    return rows, skipped


def _records(path: str) -> Iterator[bytes]:
    import tensorflow as tf
    try:
        for record in tf.data.TFRecordDataset([path]):
            yield record.numpy()
    except tf.errors.DataLossError:
        # A file still being written ends in a partial record: what was read before it stands.
        return
    except tf.errors.OpError as e:
        raise LogError(f"Cannot read {path} as TFRecords: {e.message}") from None


def _rows(record: Any, names_to_keys: Mapping[str, str], skipped: dict[str, int]) -> Iterator[dict[str, Any]]:
    kind = record.WhichOneof("log_type")
    if kind == "predict_log":
        inputs = record.predict_log.request.inputs
        raw = {name: inputs[name] for name in names_to_keys if name in inputs}
        if raw:
            yield from _tensor_rows(raw, names_to_keys)
            return
        strings = [t for t in inputs.values() if t.dtype == 7]  # DT_STRING: serialized tf.Examples
        if len(inputs) == 1 and strings:
            yield from _example_rows(strings[0].string_val)
            return
        skipped["predict requests without raw feature inputs"] = skipped.get(
            "predict requests without raw feature inputs", 0) + 1
        return
    if kind in ("classify_log", "regress_log", "multi_inference_log"):
        model_input = getattr(record, kind).request.input
        which = model_input.WhichOneof("kind")
        if which == "example_list":
            yield from (_example_row(e) for e in model_input.example_list.examples)
        elif which == "example_list_with_context":
            context = model_input.example_list_with_context.context
            for example in model_input.example_list_with_context.examples:
                merged = type(example)()
                merged.CopyFrom(context)
                merged.MergeFrom(example)
                yield _example_row(merged)
        return
    skipped[f"{kind} records"] = skipped.get(f"{kind} records", 0) + 1


def _tensor_rows(inputs: Mapping[str, Any], names_to_keys: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    import tensorflow as tf
    columns = {names_to_keys[name]: tf.make_ndarray(proto).reshape(-1) for name, proto in inputs.items()}
    size = min(len(values) for values in columns.values())
    for i in range(size):
        yield {key: _value(values[i]) for key, values in columns.items()}


def _example_rows(serialized: Any) -> Iterator[dict[str, Any]]:
    import tensorflow as tf
    for data in serialized:
        yield _example_row(tf.train.Example.FromString(data))


def _example_row(example: Any) -> dict[str, Any]:
    row = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        row[key] = _value(values[0]) if values else None
    return row


def _value(value: Any) -> Any:
    """A logged value as a Python scalar; a gap (NaN, empty text) as None."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        return text if text.strip() else None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bytes):
        return _value(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
