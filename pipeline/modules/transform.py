"""Transform's preprocessing_fn: impute, scale and build vocabularies (TFX module file)."""

import tensorflow as tf
import tensorflow_transform as tft

from pipeline.modules import features

TensorLike = tf.Tensor | tf.SparseTensor


def _fill_in_missing(value: TensorLike, default: tf.Tensor | str | float) -> tf.Tensor:
    """Densifies a feature that SchemaGen inferred as optional (a SparseTensor) to shape [batch]."""
    if not isinstance(value, tf.SparseTensor):
        return tf.reshape(value, [-1])
    dense = tf.sparse.to_dense(
        tf.SparseTensor(value.indices, value.values, [value.dense_shape[0], 1]),
        default_value=tf.cast(default, value.dtype))
    return tf.squeeze(dense, axis=1)


def _as_float(value: TensorLike) -> TensorLike:
    if isinstance(value, tf.SparseTensor):
        return value.with_values(tf.cast(value.values, tf.float32))
    return tf.cast(value, tf.float32)


def preprocessing_fn(inputs: dict[str, TensorLike]) -> dict[str, tf.Tensor]:
    outputs = {}
    for key in features.NUMERIC_FEATURE_KEYS:
        value = _as_float(inputs[key])
        # The mean over the values that are present is the imputed value for those that are not.
        filled = _fill_in_missing(value, tft.mean(value))
        outputs[features.transformed_name(key)] = tft.scale_to_z_score(filled)

    for key in features.CATEGORICAL_FEATURE_KEYS:
        filled = _fill_in_missing(inputs[key], features.MISSING_CATEGORY)
        outputs[features.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            filled, num_oov_buckets=features.NUM_OOV_BUCKETS,
            vocab_filename=features.vocabulary_name(key))

    # The label's vocabulary is also how the serving signature turns class ids back into names.
    label = _fill_in_missing(inputs[features.LABEL_KEY], "")
    outputs[features.transformed_name(features.LABEL_KEY)] = tft.compute_and_apply_vocabulary(
        label, vocab_filename=features.vocabulary_name(features.LABEL_KEY))
    return outputs
