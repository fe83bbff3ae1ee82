"""The Keras model the Trainer trains (TFX module file), built from the dataset contract: the transformed features
in; class logits (classification) or the label on its own scale (regression) out.

Numeric features enter as they are (Transform z-scored them); each categorical feature enters through an embedding
of its vocabulary (plus out-of-vocabulary buckets), whose width grows with the vocabulary's size. A regression
model predicts the z-score of the label and turns it back into the label's scale (a Normalization layer adapted to
the training labels), so that training is well scaled whatever the label's units.
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf

from pipeline.modules import features
from pipeline.training import mesh as dtensor_mesh


def embedding_width(buckets: int, most: int) -> int:
    """Wider embeddings for larger vocabularies (the rule of thumb fast.ai uses), at most `most`."""
    return max(2, min(most, round(1.6 * buckets ** 0.56)))


def embedding_layer_name(internal: str) -> str:
    return f"{internal}_embedding"


def embedding_widths(contract: features.DatasetContract, buckets: dict[str, int],
                     hparams: dict[str, Any]) -> dict[str, int]:
    """Embedding layer name -> its width."""
    return {embedding_layer_name(c.internal): embedding_width(buckets[c.name], hparams["embedding_dim"])
            for c in contract.categorical}


def _metric(cls: type, mesh: Any, **kwargs: Any) -> tf.keras.metrics.Metric:
    """A metric whose variables live on `mesh` (model_parallel, hybrid_parallel), else an ordinary one. tf-keras
    takes the mesh only through `mesh=` of its base classes' __init__, which RootMeanSquaredError and
    MeanAbsoluteError do not pass on; the mesh must be set before __init__ creates the variables."""
    if mesh is None:
        return cls(**kwargs)
    metric = cls.__new__(cls)
    metric._mesh = mesh
    metric.__init__(**kwargs)
    return metric


def build_model(contract: features.DatasetContract, buckets: dict[str, int], num_classes: int,
                hparams: dict[str, Any], label_moments: tuple[float, float] = (0.0, 1.0),
                mesh: Any = None) -> tf.keras.Model:
    """`buckets`: categorical column name -> ids its transformed feature takes (vocabulary + OOV buckets).
    Regression: `label_moments` are the training labels' mean and variance. `mesh`: the DTensor mesh the model is
    built on (inside its layout map's scope), for the optimizer and metrics."""
    inputs, encoded = {}, []
    for column in contract.numeric:
        inputs[column.transformed] = tf.keras.layers.Input(shape=(1,), name=column.transformed, dtype=tf.float32)
        encoded.append(inputs[column.transformed])
    for column in contract.categorical:
        inputs[column.transformed] = tf.keras.layers.Input(shape=(1,), name=column.transformed, dtype=tf.int64)
        embedded = tf.keras.layers.Embedding(
            buckets[column.name], embedding_width(buckets[column.name], hparams["embedding_dim"]),
            name=embedding_layer_name(column.internal))(inputs[column.transformed])
        encoded.append(tf.keras.layers.Flatten()(embedded))
    hidden = tf.keras.layers.concatenate(encoded) if len(encoded) > 1 else encoded[0]
    for i in range(2):
        hidden = tf.keras.layers.Dense(hparams["hidden_units"], activation="relu", name=f"dense_{i}")(hidden)
    optimizer = (dtensor_mesh.dense_grad_adam(hparams["learning_rate"], mesh) if mesh is not None
                 else tf.keras.optimizers.Adam(hparams["learning_rate"]))
    if contract.task == features.CLASSIFICATION:
        logits = tf.keras.layers.Dense(num_classes, name="logits")(hidden)
        model = tf.keras.Model(inputs=inputs, outputs=logits)
        model.compile(optimizer=optimizer,
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      weighted_metrics=[_metric(tf.keras.metrics.SparseCategoricalAccuracy, mesh, name="accuracy")])
        return model
    z = tf.keras.layers.Dense(1, name="label_z_score")(hidden)
    mean, variance = label_moments
    prediction = tf.keras.layers.Normalization(mean=mean, variance=variance, invert=True, name="label_scale")(z)
    model = tf.keras.Model(inputs=inputs, outputs=prediction)
    model.compile(optimizer=optimizer, loss=tf.keras.losses.MeanSquaredError(),
                  weighted_metrics=[_metric(tf.keras.metrics.RootMeanSquaredError, mesh, name="rmse"),
                                    _metric(tf.keras.metrics.MeanAbsoluteError, mesh, name="mae")])
    return model
