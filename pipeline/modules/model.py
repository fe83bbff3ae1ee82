"""The Keras model the Trainer trains (TFX module file): the transformed features in, class logits out.

Numeric features enter as they are (Transform z-scored them); each categorical feature enters through an embedding
of its vocabulary (plus out-of-vocabulary buckets).
"""
from typing import Any

import tensorflow as tf

from pipeline.modules import features


def build_model(vocabularies: dict[str, list[str]], num_classes: int,
                 hparams: dict[str, Any]) -> tf.keras.Model:
    """Numeric features as they are; each categorical feature through its own embedding layer."""
    inputs, encoded = {}, []
    for key in features.NUMERIC_FEATURE_KEYS:
        name = features.transformed_name(key)
        inputs[name] = tf.keras.layers.Input(shape=(1,), name=name, dtype=tf.float32)
        encoded.append(inputs[name])
    for key in features.CATEGORICAL_FEATURE_KEYS:
        name = features.transformed_name(key)
        inputs[name] = tf.keras.layers.Input(shape=(1,), name=name, dtype=tf.int64)
        embedded = tf.keras.layers.Embedding(
            len(vocabularies[key]), hparams["embedding_dim"], name=embedding_layer_name(key))(
                inputs[name])
        encoded.append(tf.keras.layers.Flatten()(embedded))
    hidden = tf.keras.layers.concatenate(encoded)
    for i in range(2):
        hidden = tf.keras.layers.Dense(hparams["hidden_units"], activation="relu",
                                       name=f"dense_{i}")(hidden)
    logits = tf.keras.layers.Dense(num_classes, name="logits")(hidden)
    model = tf.keras.Model(inputs=inputs, outputs=logits)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(hparams["learning_rate"]),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def embedding_layer_name(key: str) -> str:
    return f"{key}_embedding"


