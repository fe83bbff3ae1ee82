"""The Trainer's TensorBoard logs (TFX module file): scalars, graphs, histograms and the embedding projector.

    callbacks(log_dir, vocabularies, hparams, chief)   what model.fit gets (vocabularies: internal column name ->
                                                       the labels of its embedding's rows)
    Throughput                                         wall time per epoch, for the training summary
"""
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from google.protobuf import text_format
from tensorboard.plugins import projector

from pipeline.modules.model import embedding_layer_name

Gather = Callable[[Any], Any]  # a DTensor variable -> its whole value


def vocabulary_filename(internal: str) -> str:
    """The projector's metadata file for a column's embedding: one vocabulary label per row."""
    return f"{internal}_vocabulary.tsv"


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
                 freq: int = 1, gather: Gather | None = None):
        super().__init__()
        self._log_dir, self._vocabularies, self._chief, self._freq = (
            log_dir, vocabularies, chief, max(1, freq))
        self._dir = self._manager = None
        self._saved_epoch = None
        # DTensor (model_parallel, hybrid_parallel): the checkpoint holds ordinary copies of the gathered
        # embeddings, refreshed before each save, so that the projector reads it as any other.
        self._gather, self._copies = gather, {}

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
            if self._gather is not None:
                self._copies[layer] = (variables[layer], tf.Variable(self._gather(variables[layer]),
                                                                     trainable=False))
                variables[layer] = self._copies[layer][1]
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

    def _save(self, epoch: int) -> None:
        for live, copy in self._copies.values():
            copy.assign(self._gather(live))
        self._manager.save(checkpoint_number=epoch)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self._freq == 0:
            self._save(epoch)
            self._saved_epoch = epoch

    def on_train_end(self, logs=None):
        if self._saved_epoch is None:
            self._save(0)
        if not self._chief:
            tf.io.gfile.rmtree(self._dir)


class GatheredHistograms(tf.keras.callbacks.Callback):
    """Weight histograms of a model of DTensor variables (model_parallel, hybrid_parallel), which tf-keras's
    TensorBoard callback cannot write (its histogram op does not run on DTensors): every `freq` epochs, each
    variable gathered to one whole array and written as tf-keras would name it (`<layer>/<weight>_0`)."""

    def __init__(self, log_dir: str, gather: Gather, freq: int):
        super().__init__()
        self._dir, self._gather, self._freq = os.path.join(log_dir, "train"), gather, freq
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self._freq:
            return
        self._writer = self._writer or tf.summary.create_file_writer(self._dir)
        with self._writer.as_default():
            for layer in self.model.layers:
                for weight in layer.weights:
                    name = weight.name.split(":")[0].replace(":", "_") + "_0"
                    tf.summary.histogram(name, self._gather(weight), step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


class FreshValidation(tf.keras.callbacks.Callback):
    """Validation on a fresh DTensorDataset each epoch (model_parallel, hybrid_parallel), its metrics put into the
    epoch's logs as `val_*`, where History and the TensorBoard callback after this one read them as tf-keras's
    own validation's. Seen with tf-keras 2.16: fit()'s validation keeps one DTensorDataset iterator across epochs
    and, from the second epoch on, scored ~0.55 accuracy a model that scores 0.98 on the same split."""

    def __init__(self, make_dataset: Callable[[], Any], steps: int):
        super().__init__()
        self._make_dataset, self._steps = make_dataset, steps

    def on_epoch_end(self, epoch, logs=None):
        results = self.model.evaluate(self._make_dataset(), steps=self._steps, verbose=0, return_dict=True)
        if logs is not None:
            logs.update({f"val_{k}": float(v) for k, v in results.items()})


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


def callbacks(log_dir: str, vocabularies: dict[str, list[str]], hparams: dict[str, Any],
               chief: bool, gather: Gather | None = None,
               validation: FreshValidation | None = None) -> list[tf.keras.callbacks.Callback]:
    """TensorBoard: scalars per epoch and every `tensorboard_update_freq` steps (loss, accuracy,
    learning rate, steps/s), the Keras model and train-step graphs, weight and bias histograms
    every `histogram_freq` epochs, and the projector's embeddings with vocabulary labels.
    `gather` (a DTensor model): how to read a variable whole; its histograms are then written from that."""
    tf.io.gfile.makedirs(log_dir)
    histograms = [GatheredHistograms(log_dir, gather, hparams["histogram_freq"])] if (
        gather is not None and hparams["histogram_freq"] and chief) else []
    return [
        *([validation] if validation is not None else []),  # before TensorBoard, which writes its val_* logs
        LearningRateLogger(),  # before TensorBoard, which writes what this adds to the logs
        TensorBoard(
            log_dir=log_dir,
            histogram_freq=0 if gather is not None else hparams["histogram_freq"],
            write_graph=True,
            # Per-step scalars and the train-step graph are written from batch hooks, which
            # tf-keras calls only when some callback needs them; steps/s is the one that does.
            write_steps_per_second=True,
            update_freq=hparams["tensorboard_update_freq"] or "epoch",
            embeddings_freq=0),  # EmbeddingProjector does it correctly
        EmbeddingProjector(log_dir, vocabularies, chief, gather=gather),
        *histograms,
    ]


