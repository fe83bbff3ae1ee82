"""Trainer's run_fn: a Keras classifier over the transformed penguin features (TFX module file).

The exported SavedModel has three signatures:
  serving_default     serialized tf.Example (input `examples`) -> probabilities, class_ids, classes
  serving_raw         one tensor per raw feature (what a REST client sends as plain JSON rows)
                      -> the same outputs
  transform_features  serialized tf.Example -> transformed features; TFMA uses it to get the label
"""
import hashlib
import io
import json
import os
import tempfile
import time
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from google.protobuf import text_format
from tensorboard.plugins import projector
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from pipeline import distributed
from pipeline.modules import features, strategies

OUTPUT_KEYS = ("probabilities", "class_ids", "classes")


def _input_fn(file_pattern: list[str], data_accessor: tfx.components.DataAccessor,
              tf_transform_output: tft.TFTransformOutput, batch_size: int,
              seed: int | None) -> tf.data.Dataset:
    """Batches of (transformed features, label), repeated indefinitely."""
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(
            batch_size=batch_size, label_key=features.transformed_name(features.LABEL_KEY),
            shuffle_seed=seed),
        tf_transform_output.transformed_metadata.schema)


def _vocabulary_labels(tf_transform_output: tft.TFTransformOutput, key: str) -> list[str]:
    """The vocabulary of a categorical feature, with a label for each out-of-vocabulary bucket."""
    vocabulary = [v.decode() if isinstance(v, bytes) else v
                  for v in tf_transform_output.vocabulary_by_name(features.vocabulary_name(key))]
    return vocabulary + [f"[OOV {i}]" for i in range(features.NUM_OOV_BUCKETS)]


def _build_model(vocabularies: dict[str, list[str]], num_classes: int,
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


def vocabulary_filename(key: str) -> str:
    """The projector's metadata file for `key`'s embedding: one vocabulary label per row."""
    return f"{key}_vocabulary.tsv"


class LearningRateLogger(tf.keras.callbacks.Callback):
    """Puts the optimizer's current learning rate into the logs, so that the TensorBoard callback
    after it writes `epoch_learning_rate` and `batch_learning_rate` (tf-keras logs the learning
    rate only when it is a schedule). Also lands in the History."""

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True  # batch logs stay tensors: no host sync per step

    def _learning_rate(self) -> tf.Tensor:
        return tf.convert_to_tensor(self.model.optimizer.learning_rate)

    def on_train_batch_end(self, batch, logs=None):
        # With ParameterServerStrategy batch logs are RemoteValues, not dicts: nothing to add to.
        if isinstance(logs, dict):
            logs["learning_rate"] = self._learning_rate()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self._learning_rate().numpy())


class EmbeddingProjector(tf.keras.callbacks.Callback):
    """The embeddings for TensorBoard's projector, in <log_dir>/train (the training run, where the
    projector looks): a checkpoint holding only the embedding variables, every `freq` epochs;
    projector_config.pbtxt naming each one; and a metadata file of its vocabulary labels.

    tf-keras's own `embeddings_freq` names every embedding 'layer_with_weights-0' of a whole-model
    checkpoint, so a model with two embedding layers would show the first one twice (and the
    optimizer's and dense layers' matrices beside them)."""

    def __init__(self, log_dir: str, vocabularies: dict[str, list[str]], chief: bool,
                 freq: int = 1):
        super().__init__()
        self._log_dir, self._vocabularies, self._chief, self._freq = (
            log_dir, vocabularies, chief, max(1, freq))
        self._dir = self._manager = None
        self._saved_epoch = None

    def on_train_begin(self, logs=None):
        # As tf-keras does for its TensorBoard logs: only the chief writes where people look;
        # another worker writes the same into a temporary folder, removed at the end.
        self._dir = (os.path.join(self._log_dir, "train") if self._chief
                     else tempfile.mkdtemp(prefix="tfxsp-embeddings-"))
        tf.io.gfile.makedirs(self._dir)
        variables, config = {}, projector.ProjectorConfig()
        for key, labels in self._vocabularies.items():
            layer = embedding_layer_name(key)
            variables[layer] = self.model.get_layer(layer).embeddings
            with tf.io.gfile.GFile(os.path.join(self._dir, vocabulary_filename(key)), "w") as f:
                f.write("".join(label + "\n" for label in labels))
            embedding = config.embeddings.add()
            embedding.tensor_name = f"{layer}/.ATTRIBUTES/VARIABLE_VALUE"
            embedding.metadata_path = vocabulary_filename(key)
        with tf.io.gfile.GFile(os.path.join(self._dir, "projector_config.pbtxt"), "w") as f:
            f.write(text_format.MessageToString(config))
        self._manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(**variables), self._dir, max_to_keep=1,
            checkpoint_name="embeddings")

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self._freq == 0:
            self._manager.save(checkpoint_number=epoch)
            self._saved_epoch = epoch

    def on_train_end(self, logs=None):
        if self._saved_epoch is None:
            self._manager.save(checkpoint_number=0)
        if not self._chief:
            tf.io.gfile.rmtree(self._dir)


class Throughput(tf.keras.callbacks.Callback):
    """Wall time of every epoch, for the examples/s in the training summary."""

    def __init__(self):
        super().__init__()
        self.epoch_seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._start)


class TensorBoard(tf.keras.callbacks.TensorBoard):
    """tf-keras's TensorBoard callback, writing per-step scalars only every `update_freq` steps.

    tf-keras calls its batch hook on every step and issues a summary op per log entry each time,
    recorded or not, which made each step several times slower than the step itself."""

    def on_train_batch_end(self, batch, logs=None):
        # _global_train_batch counts the steps of this fit() as the model's train counter does,
        # which is what the recording condition of the per-step summaries checks.
        due = (self.update_freq != "epoch" and self._global_train_batch % self.update_freq == 0)
        if due or self._should_write_train_graph:
            super().on_train_batch_end(batch, logs)


def _callbacks(log_dir: str, vocabularies: dict[str, list[str]], hparams: dict[str, Any],
               chief: bool) -> list[tf.keras.callbacks.Callback]:
    """TensorBoard: scalars per epoch and every `tensorboard_update_freq` steps (loss, accuracy,
    learning rate, steps/s), the Keras model and train-step graphs, weight and bias histograms
    every `histogram_freq` epochs, and the projector's embeddings with vocabulary labels."""
    tf.io.gfile.makedirs(log_dir)
    return [
        LearningRateLogger(),  # before TensorBoard, which writes what this adds to the logs
        TensorBoard(
            log_dir=log_dir,
            histogram_freq=hparams["histogram_freq"],
            write_graph=True,
            # Per-step scalars and the train-step graph are written from batch hooks, which
            # tf-keras calls only when some callback needs them; steps/s is the one that does.
            write_steps_per_second=True,
            update_freq=hparams["tensorboard_update_freq"] or "epoch",
            embeddings_freq=0),  # EmbeddingProjector does it correctly
        EmbeddingProjector(log_dir, vocabularies, chief),
    ]


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


def _make_signatures(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
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


def _train_and_eval_data(fn_args: tfx.components.FnArgs, strategy: tf.distribute.Strategy,
                         tf_transform_output: tft.TFTransformOutput, global_batch_size: int,
                         seed: int):
    """What model.fit gets for training and validation under `strategy`."""
    if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        # TF's "Parameter server training with Keras": each worker builds its own input pipeline
        # from a dataset_fn. Workers step independently, so they shuffle independently (no seed):
        # with one seed every worker would train on the same batches in the same order.
        def creator(files: list[str], shuffle_seed: int | None):
            def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
                batch = input_context.get_per_replica_batch_size(global_batch_size)
                dataset = _input_fn(files, fn_args.data_accessor, tf_transform_output, batch,
                                    shuffle_seed)
                return dataset.shard(input_context.num_input_pipelines,
                                     input_context.input_pipeline_id)
            return tf.keras.utils.experimental.DatasetCreator(dataset_fn)
        return creator(fn_args.train_files, None), creator(fn_args.eval_files, None)

    def dataset(files: list[str]) -> tf.data.Dataset:
        options = tf.data.Options()
        # Every worker reads the same shuffled stream (same seed) and keeps its own share of each
        # global batch; sharding by file would need at least as many files as workers.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        return _input_fn(files, fn_args.data_accessor, tf_transform_output, global_batch_size,
                         seed).with_options(options)
    return dataset(fn_args.train_files), dataset(fn_args.eval_files)


def _replica_devices(strategy: tf.distribute.Strategy) -> list[str]:
    try:
        return list(strategy.extended.worker_devices)
    except (RuntimeError, NotImplementedError, AttributeError):  # the default strategy
        return []


def _weights_fingerprint(weights: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for w in weights:
        digest.update(str(w.shape).encode())
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def _export(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
            class_names: list[str], serving_model_dir: str, chief: bool) -> None:
    """Exports the serving SavedModel once: the chief to serving_model_dir. Every other worker of a
    multi-worker strategy saves too (saving can run collective ops that need every worker), into
    a temporary folder that it then removes, as in TF's multi-worker Keras guide."""
    export_dir = serving_model_dir if chief else tempfile.mkdtemp(prefix="tfxsp-export-")
    try:
        signatures = _make_signatures(model, tf_transform_output, class_names)
        tf.saved_model.save(model, export_dir, signatures=signatures)
    finally:
        if not chief:
            tf.io.gfile.rmtree(export_dir)


def train_and_export(fn_args: tfx.components.FnArgs) -> dict[str, Any]:
    """Trains in this process under the configured strategy, exports the model (chief only) and
    writes this task's training summary to <model_run_dir>/training/<task>.json (plus its final
    weights, <task>.weights.npz). pipeline/distributed.py decides which processes call this."""
    hparams = dict(fn_args.custom_config)
    # First, before any op runs: some strategies configure devices or collective ops.
    strategy = strategies.make_strategy(hparams)
    tf.keras.utils.set_random_seed(hparams["random_seed"])
    chief = strategies.is_chief(strategy)
    task = strategies.task_name(strategy)
    is_ps = isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    vocabularies = {key: _vocabulary_labels(tf_transform_output, key)
                    for key in features.CATEGORICAL_FEATURE_KEYS}
    class_names = [v.decode() for v in tf_transform_output.vocabulary_by_name(
        features.vocabulary_name(features.LABEL_KEY))]

    replicas = strategy.num_replicas_in_sync
    workers = strategies.num_workers(strategy)
    # One step = one batch per replica in sync. With ParameterServerStrategy the replicas in sync
    # are one worker's devices: each step runs on whichever worker is free, `workers` at a time.
    global_batch_size = hparams["batch_size"] * replicas
    logging.info("Training (%s) with %s: %d replica(s) in sync, %d worker(s), %d parameter "
                 "server(s), global batch %d", task, type(strategy).__name__, replicas, workers,
                 strategies.num_parameter_servers(strategy), global_batch_size)
    if is_ps:
        # Keras would create it in fit(); it is one per strategy, so fit() reuses this one.
        tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    train_data, eval_data = _train_and_eval_data(fn_args, strategy, tf_transform_output,
                                                 global_batch_size, hparams["random_seed"])

    with strategy.scope():
        model = _build_model(vocabularies, len(class_names), hparams)

    epochs = hparams["epochs"]
    steps_per_epoch = max(1, fn_args.train_steps // epochs)
    throughput = Throughput()
    start = time.perf_counter()
    history = model.fit(
        train_data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=eval_data,
        validation_steps=fn_args.eval_steps,
        callbacks=[throughput, *_callbacks(fn_args.model_run_dir, vocabularies, hparams, chief)],
        verbose=0)
    train_seconds = time.perf_counter() - start

    _export(model, tf_transform_output, class_names, fn_args.serving_model_dir, chief)

    weights = model.get_weights()
    examples_per_epoch = steps_per_epoch * global_batch_size
    later = throughput.epoch_seconds[1:]  # the first epoch includes tracing and cluster set-up
    summary = {
        "task": task,
        "chief": chief,
        "pid": os.getpid(),
        "strategy": hparams["strategy"],
        "strategy_class": type(strategy).__name__,
        "keras": tf.keras.__name__,
        "num_replicas_in_sync": replicas,
        "workers": workers,
        "parameter_servers": strategies.num_parameter_servers(strategy),
        "replica_devices": _replica_devices(strategy),
        "variable_devices": sorted({v.device for v in model.trainable_variables}),
        # Copies of each variable kept in sync: one per replica (mirrored), else one.
        "variable_copies": len(strategy.experimental_local_results(model.trainable_variables[0])),
        "batch_size_per_replica": hparams["batch_size"],
        "global_batch_size": global_batch_size,
        "epochs": epochs,
        "steps": steps_per_epoch * epochs,
        "examples": examples_per_epoch * epochs,
        "train_seconds": train_seconds,
        "epoch_seconds": throughput.epoch_seconds,
        "examples_per_second": examples_per_epoch * epochs / train_seconds,
        "steady_examples_per_second": (examples_per_epoch * len(later) / sum(later)
                                       if later else None),
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "weights_sha256": _weights_fingerprint(weights),
    }
    summary_dir = os.path.join(fn_args.model_run_dir, "training")
    tf.io.gfile.makedirs(summary_dir)
    with tf.io.gfile.GFile(os.path.join(summary_dir, f"{task}.json"), "w") as f:
        json.dump(summary, f, indent=1)
    buffer = io.BytesIO()  # np.savez seeks, which GFile cannot
    np.savez(buffer, *weights)
    with tf.io.gfile.GFile(os.path.join(summary_dir, f"{task}.weights.npz"), "wb") as f:
        f.write(buffer.getvalue())
    logging.info("Trained (%s): %d steps, %.0f examples/s, final %s", task, summary["steps"],
                 summary["examples_per_second"],
                 {k: round(v[-1], 4) for k, v in summary["history"].items()})
    return summary


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains under the configured tf.distribute strategy and exports the serving SavedModel.

    pipeline/distributed.py runs train_and_export here or, when the strategy needs them, in a local
    cluster of processes (multi_worker_mirrored, parameter_server without TF_CONFIG) or in a fresh
    process (a strategy that must set TensorFlow up before its first op, after Transform ran
    TensorFlow in this one)."""
    if not tf.keras.__name__.startswith("tf_keras"):
        raise RuntimeError(
            f"tf.keras is {tf.keras.__name__}; this Trainer needs tf-keras (Keras 2). "
            "Import the 'pipeline' package before TensorFlow, which sets TF_USE_LEGACY_KERAS=1.")
    distributed.run_training(fn_args, train_and_export)
