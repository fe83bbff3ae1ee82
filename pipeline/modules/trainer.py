"""Trainer's run_fn: a Keras classifier over the transformed penguin features (TFX module file).

The exported SavedModel has three signatures:
  serving_default     serialized tf.Example (input `examples`) -> probabilities, class_ids, classes
  serving_raw         one tensor per raw feature (what a REST client sends as plain JSON rows)
                      -> the same outputs
  transform_features  serialized tf.Example -> transformed features; TFMA uses it to get the label
"""
import os
from typing import Any, Dict, List

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from pipeline.modules import features
from pipeline.modules import strategies

OUTPUT_KEYS = ("probabilities", "class_ids", "classes")


def _input_fn(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
              tf_transform_output: tft.TFTransformOutput, batch_size: int,
              seed: int) -> tf.data.Dataset:
    """Batches of (transformed features, label), repeated indefinitely."""
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, label_key=features.transformed_name(features.LABEL_KEY),
            shuffle_seed=seed),
        tf_transform_output.transformed_metadata.schema)


def _vocabulary_labels(tf_transform_output: tft.TFTransformOutput, key: str) -> List[str]:
    """The vocabulary of a categorical feature, with a label for each out-of-vocabulary bucket."""
    vocabulary = [v.decode() if isinstance(v, bytes) else v
                  for v in tf_transform_output.vocabulary_by_name(features.vocabulary_name(key))]
    return vocabulary + [f"[OOV {i}]" for i in range(features.NUM_OOV_BUCKETS)]


def _build_model(vocabularies: Dict[str, List[str]], num_classes: int,
                 hparams: Dict[str, Any]) -> tf.keras.Model:
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


def _tensorboard_callback(log_dir: str, vocabularies: Dict[str, List[str]],
                          hparams: Dict[str, Any]) -> tf.keras.callbacks.TensorBoard:
    """Scalars, graph, weight histograms and the projector's embeddings with vocabulary labels."""
    metadata = {}
    tf.io.gfile.makedirs(log_dir)
    for key, labels in vocabularies.items():
        filename = f"{key}_vocabulary.tsv"
        with tf.io.gfile.GFile(os.path.join(log_dir, filename), "w") as f:
            f.write("".join(label + "\n" for label in labels))
        metadata[embedding_layer_name(key)] = filename
    return tf.keras.callbacks.TensorBoard(
        log_dir=log_dir,
        histogram_freq=hparams["histogram_freq"],
        write_graph=True,
        update_freq=hparams["tensorboard_update_freq"] or "epoch",
        embeddings_freq=1,
        embeddings_metadata=metadata)


def _raw_serving_inputs(raw_feature_spec: Dict[str, Any]) -> Dict[str, tf.TensorSpec]:
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


def _make_signatures(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                     class_names: List[str]) -> Dict[str, Any]:
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_feature_spec = tf_transform_output.raw_feature_spec()
    serving_feature_spec = {k: v for k, v in raw_feature_spec.items() if k != features.LABEL_KEY}
    class_table = tf.constant(class_names)

    def predict(raw_features: Dict[str, Any]) -> Dict[str, tf.Tensor]:
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


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains under the configured tf.distribute strategy and exports the serving SavedModel."""
    if not tf.keras.__name__.startswith("tf_keras"):
        raise RuntimeError(
            f"tf.keras is {tf.keras.__name__}; this Trainer needs tf-keras (Keras 2). "
            "Import the 'pipeline' package before TensorFlow, which sets TF_USE_LEGACY_KERAS=1.")
    hparams = dict(fn_args.custom_config)
    tf.keras.utils.set_random_seed(hparams["random_seed"])
    strategy = strategies.make_strategy(hparams)

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    vocabularies = {key: _vocabulary_labels(tf_transform_output, key)
                    for key in features.CATEGORICAL_FEATURE_KEYS}
    class_names = [v.decode() for v in tf_transform_output.vocabulary_by_name(
        features.vocabulary_name(features.LABEL_KEY))]

    global_batch_size = hparams["batch_size"] * strategy.num_replicas_in_sync
    logging.info("Training with %s over %d replica(s), global batch %d",
                 type(strategy).__name__, strategy.num_replicas_in_sync, global_batch_size)
    train_dataset = _input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                              global_batch_size, hparams["random_seed"])
    eval_dataset = _input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output,
                             global_batch_size, hparams["random_seed"])

    with strategy.scope():
        model = _build_model(vocabularies, len(class_names), hparams)

    epochs = hparams["epochs"]
    model.fit(
        train_dataset,
        epochs=epochs,
        steps_per_epoch=max(1, fn_args.train_steps // epochs),
        validation_data=eval_dataset,
        validation_steps=fn_args.eval_steps,
        callbacks=[_tensorboard_callback(fn_args.model_run_dir, vocabularies, hparams)],
        verbose=0)

    signatures = _make_signatures(model, tf_transform_output, class_names)
    tf.saved_model.save(model, fn_args.serving_model_dir, signatures=signatures)
