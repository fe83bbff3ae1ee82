"""The serving signatures of the exported SavedModel (TFX module file), the contract a client sees:

  serving_default     serialized tf.Example (input `examples`)
  serving_raw         one input per feature column, named as its CSV header ("Culmen Length (mm)"): a number
                      (float) for numeric and integer columns, a string for the others; a gap is NaN for a number
                      and "" for a string, filled as Transform filled the training data's gaps
  transform_features  serialized tf.Example -> transformed features; TFMA reads the label and weight from it

Classification answers `probabilities`, `class_ids` and `classes` (the label's own values, as strings); regression
answers `predictions` on the label's scale.

TensorFlow names a signature's inputs after its placeholders, which take only [A-Za-z0-9_.-] names; so serving_raw
is traced with the columns' internal names and, once saved, its SignatureDef (the map TF Serving reads) is given the
headers as keys: rename_raw_inputs. Loaded in Python (tf.saved_model.load), the signature keeps the internal names.
"""
from __future__ import annotations

import os
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow.core.protobuf import saved_model_pb2

from pipeline.modules import features

RAW_SIGNATURE = "serving_raw"


def raw_input_dtype(column: features.Column) -> tf.DType:
    """What serving_raw takes for a column: numbers for numeric and integer columns, text for the others."""
    return tf.string if column.role == features.CATEGORICAL and column.dtype == "string" else tf.float32


def make_signatures(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                    contract: features.DatasetContract, class_names: list[str]) -> dict[str, Any]:
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_feature_spec = tf_transform_output.raw_feature_spec()
    serving_feature_spec = {k: v for k, v in raw_feature_spec.items() if k != contract.label.key}
    predict = _classify(model, class_names) if contract.task == features.CLASSIFICATION else _regress(model)
    columns = [c for c in contract.features if c.key in raw_feature_spec]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(serialized):
        return predict(tf.io.parse_example(serialized, serving_feature_spec))

    @tf.function(input_signature=[{c.internal: tf.TensorSpec([None], raw_input_dtype(c), name=c.internal)
                                   for c in columns}])
    def serve_raw(raw):
        return predict({c.key: _as_raw_feature(raw[c.internal], raw_feature_spec[c.key]) for c in columns})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(serialized):
        return model.tft_layer(tf.io.parse_example(serialized, raw_feature_spec))

    return {
        "serving_default": serve_tf_examples.get_concrete_function(),
        RAW_SIGNATURE: serve_raw.get_concrete_function(),
        "transform_features": transform_features.get_concrete_function(),
    }


def _classify(model: tf.keras.Model, class_names: list[str]):
    class_table = tf.constant(class_names)

    def predict(raw_features: dict[str, Any]) -> dict[str, tf.Tensor]:
        transformed = model.tft_layer(raw_features)
        probabilities = tf.nn.softmax(model({name: transformed[name] for name in model.input_names}))
        class_ids = tf.argmax(probabilities, axis=1)
        return {"probabilities": probabilities, "class_ids": class_ids, "classes": tf.gather(class_table, class_ids)}
    return predict


def _regress(model: tf.keras.Model):
    def predict(raw_features: dict[str, Any]) -> dict[str, tf.Tensor]:
        transformed = model.tft_layer(raw_features)
        return {"predictions": tf.reshape(model({name: transformed[name] for name in model.input_names}), [-1])}
    return predict


def _as_raw_feature(value: tf.Tensor, spec: Any) -> Any:
    """A dense [batch] input shaped as tf.io.parse_example would give the raw feature, a gap (NaN, "") made a
    missing value: left out of a VarLenFeature; for a FixedLenFeature, which cannot lack a value, a value Transform
    reads as missing (NaN, "", or features.INT_MISSING)."""
    if value.dtype == tf.float32:
        missing = tf.math.is_nan(value)
        if spec.dtype == tf.string:  # a column of numbers written as text
            value = tf.where(missing, "", tf.strings.as_string(value))
        elif spec.dtype == tf.int64:
            value = tf.where(missing, tf.constant(features.INT_MISSING, tf.int64), tf.cast(tf.round(value), tf.int64))
    else:
        missing = tf.equal(tf.strings.strip(value), "")
    if isinstance(spec, tf.io.VarLenFeature):
        rows = tf.where(tf.logical_not(missing))[:, 0]
        indices = tf.stack([rows, tf.zeros_like(rows)], axis=1)
        return tf.SparseTensor(indices, tf.gather(value, rows),
                               tf.stack([tf.shape(value, out_type=tf.int64)[0], tf.constant(1, tf.int64)]))
    return tf.reshape(tf.cast(value, spec.dtype), [-1] + list(spec.shape))


def rename_raw_inputs(export_dir: str, contract: features.DatasetContract) -> None:
    """Gives serving_raw's SignatureDef inputs the columns' header names (see the module docstring)."""
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    names = {c.internal: c.name for c in contract.features}
    for meta_graph in saved_model.meta_graphs:
        if RAW_SIGNATURE not in meta_graph.signature_def:
            continue
        inputs = meta_graph.signature_def[RAW_SIGNATURE].inputs
        # Copies: the map's own messages go away with clear().
        renamed = {names.get(alias, alias): type(info).FromString(info.SerializeToString())
                   for alias, info in inputs.items()}
        inputs.clear()
        for alias, info in renamed.items():
            inputs[alias].CopyFrom(info)
    with tf.io.gfile.GFile(path + ".tmp", "wb") as f:
        f.write(saved_model.SerializeToString())
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
