"""Transform's preprocessing_fn (TFX module file): the dataset contract (features.py) applied to every example.

  numeric      missing values (an empty field, NaN, or a missing marker in a column of numbers written as text)
               become the training mean; then z-scores
  categorical  missing values become one category of their own; a vocabulary of the (most frequent) values plus an
               out-of-vocabulary bucket maps them to integer ids
  label        classification: the class's index in the label's vocabulary (the classes the model serves);
               regression: the number itself. A row without a label gets weight 0, so that the Trainer and the
               Evaluator leave it out.

The serving signatures apply this same graph to what a client sends, so a gap in a request (NaN for a number, ""
for a string) is filled exactly as a gap in the training data was.
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from pipeline.modules import features

TensorLike = tf.Tensor | tf.SparseTensor
# A number as text, as the CSV decoder would read it (no thousands separators, no NaN or infinity).
NUMBER = r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*"


def preprocessing_fn(inputs: dict[str, TensorLike], custom_config: dict[str, Any]) -> dict[str, tf.Tensor]:
    contract = features.contract_of(custom_config)
    outputs = {}
    for column in contract.numeric:
        present = numbers(inputs[column.key], column)
        # The mean over the values that are present is the imputed value for those that are not.
        outputs[column.transformed] = tft.scale_to_z_score(densify(present, tft.mean(present)))
    for column in contract.categorical:
        present = categories(inputs[column.key], contract.missing_markers)
        outputs[column.transformed] = tft.compute_and_apply_vocabulary(
            densify(present, features.MISSING_CATEGORY), top_k=column.max_categories or None,
            num_oov_buckets=features.NUM_OOV_BUCKETS, vocab_filename=column.vocabulary)
    label = contract.label
    if contract.task == features.CLASSIFICATION:
        present = categories(inputs[label.key], contract.missing_markers)
        # The vocabulary of the labels that are present: the classes, most frequent first.
        classes = tft.vocabulary(present, vocab_filename=label.vocabulary)
        ids = tft.apply_vocabulary(densify(present, ""), classes, default_value=-1)
        outputs[features.WEIGHT_KEY] = tf.cast(ids >= 0, tf.float32)
        outputs[features.LABEL_XF] = tf.maximum(ids, 0)
    else:
        present = numbers(inputs[label.key], label)
        values = densify(present, float("nan"))
        known = tf.logical_not(tf.math.is_nan(values))
        outputs[features.WEIGHT_KEY] = tf.cast(known, tf.float32)
        outputs[features.LABEL_XF] = tf.where(known, values, 0.0)
    return outputs


def numbers(value: TensorLike, column: features.Column) -> tf.SparseTensor:
    """The numbers that are present, as a SparseTensor of shape [batch, 1]: NaN, and in a column of numbers written
    as text anything that is not a number (the missing markers), count as missing."""
    value = _sparse(value)
    if value.dtype == tf.int64:
        value = tf.sparse.retain(value, tf.not_equal(value.values, features.INT_MISSING))
    if column.parse_numbers:
        text = tf.strings.strip(value.values)
        is_number = tf.strings.regex_full_match(text, NUMBER)
        parsed = tf.strings.to_number(tf.where(is_number, text, "nan"), out_type=tf.float32)
        value = value.with_values(tf.where(is_number, parsed, float("nan")))
    value = value.with_values(tf.cast(value.values, tf.float32))
    return tf.sparse.retain(value, tf.logical_not(tf.math.is_nan(value.values)))


def categories(value: TensorLike, missing_markers: list[str]) -> tf.SparseTensor:
    """The categories that are present, as strings (integers too), as a SparseTensor of shape [batch, 1]; an empty
    string and the missing markers count as missing."""
    value = _sparse(value)
    if value.dtype == tf.int64:
        value = tf.sparse.retain(value, tf.not_equal(value.values, features.INT_MISSING))
    text = value.values if value.dtype == tf.string else tf.strings.as_string(value.values)
    stripped = tf.strings.strip(text)
    missing = tf.equal(stripped, "")
    for marker in missing_markers:
        missing = tf.logical_or(missing, tf.equal(stripped, marker))
    return tf.sparse.retain(value.with_values(stripped), tf.logical_not(missing))


def densify(value: tf.SparseTensor, default: Any) -> tf.Tensor:
    """[batch] values, `default` where a row has none."""
    dense = tf.sparse.to_dense(tf.SparseTensor(value.indices, value.values, [value.dense_shape[0], 1]),
                               default_value=tf.cast(default, value.dtype))
    return tf.squeeze(dense, axis=1)


def _sparse(value: TensorLike) -> tf.SparseTensor:
    """A feature as a SparseTensor of shape [batch, 1]: SchemaGen makes an always-present column dense."""
    if isinstance(value, tf.SparseTensor):
        return value
    dense = tf.reshape(value, [-1, 1])
    return tf.sparse.from_dense(dense) if dense.dtype == tf.string else tf.SparseTensor(
        tf.where(tf.ones_like(dense, dtype=tf.bool)), tf.reshape(dense, [-1]), tf.shape(dense, out_type=tf.int64))
