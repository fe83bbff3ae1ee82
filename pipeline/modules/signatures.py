"""The serving signatures of the exported SavedModel (TFX module file).

  serving_default     serialized tf.Example (input `examples`) -> probabilities, class_ids, classes
  serving_raw         one tensor per raw feature (what a REST client sends as plain JSON rows)
                      -> the same outputs
  transform_features  serialized tf.Example -> transformed features; TFMA uses it to get the label
"""
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from pipeline.modules import features


def _raw_serving_inputs(raw_feature_spec: dict[str, Any]) -> dict[str, tf.TensorSpec]:
    """Plain JSON-friendly inputs: float32 for numbers, string for categories, one value per row."""
    specs = {}
    for key in features.NUMERIC_FEATURE_KEYS:
        specs[key] = tf.TensorSpec([None], tf.float32, name=key)
    for key in features.CATEGORICAL_FEATURE_KEYS:
        specs[key] = tf.TensorSpec([None], tf.string, name=key)
    assert set(specs) <= set(raw_feature_spec), "raw signature inputs must be raw features"
    return specs


def _as_raw_feature(value: tf.Tensor, spec: Any) -> Any:
    """Shapes a dense [batch] tensor the way tf.io.parse_example would for `spec`."""
    value = tf.cast(value, spec.dtype)
    if isinstance(spec, tf.io.VarLenFeature):
        batch = tf.shape(value, out_type=tf.int64)[0]
        rows = tf.range(batch, dtype=tf.int64)
        indices = tf.stack([rows, tf.zeros_like(rows)], axis=1)
        return tf.SparseTensor(indices, value, tf.stack([batch, tf.constant(1, tf.int64)]))
    return tf.reshape(value, [-1] + list(spec.shape))


def make_signatures(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                     class_names: list[str]) -> dict[str, Any]:
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_feature_spec = tf_transform_output.raw_feature_spec()
    serving_feature_spec = {k: v for k, v in raw_feature_spec.items() if k != features.LABEL_KEY}
    class_table = tf.constant(class_names)

    def predict(raw_features: dict[str, Any]) -> dict[str, tf.Tensor]:
        transformed = model.tft_layer(raw_features)
        model_inputs = {name: transformed[name] for name in model.input_names}
        probabilities = tf.nn.softmax(model(model_inputs))
        class_ids = tf.argmax(probabilities, axis=1)
        return {"probabilities": probabilities, "class_ids": class_ids,
                "classes": tf.gather(class_table, class_ids)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(serialized):
        return predict(tf.io.parse_example(serialized, serving_feature_spec))

    @tf.function(input_signature=[_raw_serving_inputs(raw_feature_spec)])
    def serve_raw(raw):
        return predict({k: _as_raw_feature(v, raw_feature_spec[k]) for k, v in raw.items()})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(serialized):
        return model.tft_layer(tf.io.parse_example(serialized, raw_feature_spec))

    return {
        "serving_default": serve_tf_examples.get_concrete_function(),
        "serving_raw": serve_raw.get_concrete_function(),
        "transform_features": transform_features.get_concrete_function(),
    }


