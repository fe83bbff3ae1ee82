"""TF Serving warmup requests for the export (TFX module file): `assets.extra/tf_serving_warmup_requests`, TFRecords
of `tensorflow.serving.PredictionLog` that TF Serving (and our server, serving/warmup.py) replays when it loads the
version, so that the first client request does not pay for tracing the signatures.

The requests are built from the dataset contract's sample rows (a few rows of the CSV, pipeline/dataset): one
`serving_raw` predict per row, as a client sends it (a number per numeric or integer column, NaN for a gap; text
for the others), and one `serving_default` predict of all of them as serialized tf.Examples of the raw features.
"""
from __future__ import annotations

import math
import os
from typing import Any

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from pipeline.modules import features, signatures

ASSETS_EXTRA = "assets.extra"
REQUESTS_FILE = "tf_serving_warmup_requests"


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.nan  # a missing marker such as NA, or an empty cell
    return value


def raw_inputs(rows: list[dict[str, str]], contract: features.DatasetContract,
               raw_feature_spec: dict[str, Any]) -> dict[str, tf.Tensor]:
    """serving_raw's inputs (by header name) for the rows."""
    inputs = {}
    for column in contract.features:
        if column.key not in raw_feature_spec:
            continue
        cells = [row.get(column.name, "") for row in rows]
        if signatures.raw_input_dtype(column) == tf.string:
            inputs[column.name] = tf.constant([c.strip() for c in cells], tf.string)
        else:
            inputs[column.name] = tf.constant([_number(c) for c in cells], tf.float32)
    return inputs


def _example(row: dict[str, str], contract: features.DatasetContract, raw_feature_spec: dict[str, Any]) -> bytes:
    """A row as CsvExampleGen writes it: a cell in its column's type, an empty cell left out. Every column of the
    raw feature spec, the ignored ones too: serving_default parses them all (a required one missing fails)."""
    example = tf.train.Example()
    for column in contract.columns:
        spec = raw_feature_spec.get(column.key)
        text = row.get(column.name, "").strip()
        if spec is None or text == "":
            continue
        feature = example.features.feature[column.key]
        if spec.dtype == tf.string:
            feature.bytes_list.value.append(text.encode("utf-8"))
        elif spec.dtype == tf.int64:
            number = _number(text)
            if math.isnan(number):
                continue
            feature.int64_list.value.append(int(number))
        else:
            number = _number(text)
            if math.isnan(number):
                continue
            feature.float_list.value.append(number)
    return example.SerializeToString()


def warmup_logs(contract: features.DatasetContract, raw_feature_spec: dict[str, Any], model_name: str = "",
                signature_names: tuple[str, ...] | None = None) -> list[prediction_log_pb2.PredictionLog]:
    """Requests of the sample rows to the raw signature (one per row) and to serving_default (one of all the rows it
    can parse); only those of `signature_names` when given."""
    rows = contract.sample_rows
    if not rows:
        return []
    logs = []
    wanted = set(signature_names or (signatures.RAW_SIGNATURE, "serving_default"))
    for row in rows if signatures.RAW_SIGNATURE in wanted else []:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signatures.RAW_SIGNATURE
        for name, tensor in raw_inputs([row], contract, raw_feature_spec).items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(tensor))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    # serving_default parses tf.Examples: a FixedLenFeature (a column without gaps in training) must have a value.
    fixed = [c for c in contract.columns
             if isinstance(raw_feature_spec.get(c.key), tf.io.FixedLenFeature)
             and raw_feature_spec[c.key].default_value is None]
    complete = [row for row in rows if all(_has_value(row.get(c.name, ""), raw_feature_spec[c.key]) for c in fixed)]
    if complete and "serving_default" in wanted:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = "serving_default"
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(
            [_example(row, contract, raw_feature_spec) for row in complete], dtype=tf.string))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def _has_value(text: str, spec: Any) -> bool:
    text = text.strip()
    return text != "" if spec.dtype == tf.string else not math.isnan(_number(text))


def write_warmup_requests(export_dir: str, contract: features.DatasetContract, raw_feature_spec: dict[str, Any],
                          signature_names: tuple[str, ...] | None = None) -> str | None:
    """Writes <export_dir>/assets.extra/tf_serving_warmup_requests (only requests to `signature_names` when given);
    returns its path (None: no request to write)."""
    logs = warmup_logs(contract, raw_feature_spec, signature_names=signature_names)
    if not logs:
        return None
    directory = os.path.join(export_dir, ASSETS_EXTRA)
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, REQUESTS_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path
