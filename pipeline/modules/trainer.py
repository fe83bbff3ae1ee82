"""Trainer's run_fn (TFX module file): trains the Keras model under the configured tf.distribute strategy and
exports the serving SavedModel (signatures: pipeline/modules/signatures.py).

pipeline/training/launcher.py decides which processes train: this one, a fresh one, or a local cluster; each of
them calls train_and_export.
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
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from pipeline.modules import callbacks, features, model, signatures, tflite_export, warmup
from pipeline.training import launcher, placement, strategies
from pipeline.training import mesh as dtensor_mesh

# What every process of a training cluster runs (named, so that each imports it: see launcher.run_training).
TRAIN_FN = "pipeline.modules.trainer:train_and_export"


def _input_fn(file_pattern: list[str], data_accessor: tfx.components.DataAccessor,
              tf_transform_output: tft.TFTransformOutput, batch_size: int, seed: int | None,
              shuffle: bool = True) -> tf.data.Dataset:
    """Batches of (transformed features, label, weight), repeated indefinitely; a row without a label has weight 0
    (features.py)."""
    dataset = data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=features.LABEL_XF,
                                                     shuffle=shuffle, shuffle_seed=seed),
        tf_transform_output.transformed_metadata.schema)
    return dataset.map(lambda x, label: ({k: v for k, v in x.items() if k != features.WEIGHT_KEY}, label,
                                         x[features.WEIGHT_KEY]))


def _vocabulary(tf_transform_output: tft.TFTransformOutput, name: str) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in tf_transform_output.vocabulary_by_name(name)]


def _embedding_labels(tf_transform_output: tft.TFTransformOutput, column: features.Column) -> list[str]:
    """The labels of a categorical feature's embedding rows: its vocabulary, then its out-of-vocabulary buckets."""
    vocabulary = _vocabulary(tf_transform_output, column.vocabulary)
    return ["(missing)" if v == features.MISSING_CATEGORY else v for v in vocabulary] + [
        f"[OOV {i}]" for i in range(features.NUM_OOV_BUCKETS)]


def _label_moments(fn_args: tfx.components.FnArgs, tf_transform_output: tft.TFTransformOutput,
                   batches: int = 200) -> tuple[float, float]:
    """Mean and variance of the training labels (of up to `batches` batches of 256: enough to scale the output),
    so that a regression model predicts z-scores and answers on the label's scale."""
    total = weight = squares = 0.0
    for _, label, w in _input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, 256,
                                 seed=None).take(batches):
        label, w = tf.cast(tf.reshape(label, [-1]), tf.float64), tf.cast(tf.reshape(w, [-1]), tf.float64)
        total += float(tf.reduce_sum(label * w))
        squares += float(tf.reduce_sum(label * label * w))
        weight += float(tf.reduce_sum(w))
    mean = total / weight if weight else 0.0
    return mean, max(squares / weight - mean * mean, 1e-12) if weight else 1.0


def _train_and_eval_data(fn_args: tfx.components.FnArgs, strategy: tf.distribute.Strategy,
                         tf_transform_output: tft.TFTransformOutput, global_batch_size: int,
                         seed: int, mesh: Any = None):
    """What model.fit gets for training and validation under `strategy` (or on a DTensor `mesh`)."""
    if mesh is not None:
        return tuple(dtensor_mesh.dataset(_input_fn(files, fn_args.data_accessor, tf_transform_output,
                                                    global_batch_size, seed, shuffle=False),
                                          mesh, global_batch_size, seed)
                     for files in (fn_args.train_files, fn_args.eval_files))
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


def _export(keras_model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
            contract: features.DatasetContract, class_names: list[str], serving_model_dir: str, chief: bool,
            export_tflite: bool = False) -> None:
    """Exports the serving SavedModel once: the chief to serving_model_dir. Every other worker of a
    multi-worker strategy saves too (saving can run collective ops that need every worker), into
    a temporary folder that it then removes, as in TF's multi-worker Keras guide. With export_tflite, the chief
    also writes model.tflite beside it, where TF Lite can convert it (pipeline/modules/tflite_export.py)."""
    export_dir = serving_model_dir if chief else tempfile.mkdtemp(prefix="tfxsp-export-")
    try:
        tf.saved_model.save(keras_model, export_dir, signatures=signatures.make_signatures(
            keras_model, tf_transform_output, contract, class_names))
        signatures.rename_raw_inputs(export_dir, contract)
        warmed = None
        if chief and export_tflite and tflite_export.export(export_dir):
            # A server preferring model.tflite serves serving_default alone, and a warmup request to a signature
            # the version lacks fails its load (as in TF Serving): warm up only what both formats serve.
            warmed = (tflite_export.SERVED_SIGNATURE,)
        if chief:  # TF Serving replays these when it loads the version (--enable_model_warmup)
            warmup.write_warmup_requests(export_dir, contract, tf_transform_output.raw_feature_spec(), warmed)
    finally:
        if not chief:
            tf.io.gfile.rmtree(export_dir)


def train_and_export(fn_args: tfx.components.FnArgs) -> dict[str, Any]:
    """Trains in this process under the configured strategy, exports the model (chief only) and writes this task's
    training summary to <model_run_dir>/training/<task>.json (plus its final weights, <task>.weights.npz)."""
    hparams = dict(fn_args.custom_config)
    # First, before any op runs: some strategies configure devices or collective ops.
    strategy = strategies.make_strategy(hparams)
    mesh_shape = dtensor_mesh.shape_of(hparams)
    mesh = dtensor_mesh.make_mesh(mesh_shape, strategies.mesh_devices(mesh_shape)) if mesh_shape else None
    tf.keras.utils.set_random_seed(hparams["random_seed"])
    chief = strategies.is_chief(strategy)
    task = strategies.task_name(strategy)

    contract = features.contract_of(hparams)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    vocabularies = {c.internal: _embedding_labels(tf_transform_output, c) for c in contract.categorical}
    buckets = {c.name: tf_transform_output.num_buckets_for_transformed_feature(c.transformed)
               for c in contract.categorical}
    classification = contract.task == features.CLASSIFICATION
    class_names = _vocabulary(tf_transform_output, contract.label.vocabulary) if classification else []
    label_moments = (0.0, 1.0) if classification else _label_moments(fn_args, tf_transform_output)

    # One step = one batch per replica in sync. With ParameterServerStrategy the replicas in sync are one worker's
    # devices: each step runs on whichever worker is free, `workers` at a time.
    # On a DTensor mesh the replicas are the batch axis: the model axis's devices share one replica's batch.
    replicas = mesh_shape.batch if mesh_shape else strategy.num_replicas_in_sync
    global_batch_size = hparams["batch_size"] * replicas
    logging.info("Training (%s) with %s: %d replica(s) in sync, %d worker(s), %d parameter server(s), global batch "
                 "%d%s", task, type(strategy).__name__, replicas, strategies.num_workers(strategy),
                 strategies.num_parameter_servers(strategy), global_batch_size,
                 f", on a DTensor mesh {mesh_shape}" if mesh_shape else "")
    if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        # Keras would create it in fit(); it is one per strategy, so fit() reuses this one.
        tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    train_data, eval_data = _train_and_eval_data(fn_args, strategy, tf_transform_output, global_batch_size,
                                                 hparams["random_seed"], mesh)
    if mesh is not None:
        dtensor_mesh.check_divisible(hparams, mesh_shape)
        scope = dtensor_mesh.layout_map(mesh, model.embedding_widths(contract, buckets, hparams)).scope()
    else:
        scope = strategy.scope()
    with scope:
        keras_model = model.build_model(contract, buckets, len(class_names), hparams, label_moments, mesh=mesh)

    steps_per_epoch = max(1, fn_args.train_steps // hparams["epochs"])
    throughput = callbacks.Throughput()
    start = time.perf_counter()
    validation = None
    if mesh is not None:  # a fresh eval DTensorDataset per epoch (callbacks.FreshValidation says why)
        validation = callbacks.FreshValidation(lambda: _train_and_eval_data(
            fn_args, strategy, tf_transform_output, global_batch_size, hparams["random_seed"], mesh)[1],
            fn_args.eval_steps)
    # Never stops early (patience: every epoch); at the end puts back the weights of the best validation epoch.
    best_epoch = tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=hparams["epochs"],
                                                  restore_best_weights=True)
    keep_best = hparams.get("keep_best_epoch", True) and mesh is None
    history = keras_model.fit(
        train_data, epochs=hparams["epochs"], steps_per_epoch=steps_per_epoch,
        validation_data=None if mesh is not None else eval_data, validation_steps=fn_args.eval_steps,
        callbacks=[throughput, *callbacks.callbacks(fn_args.model_run_dir, vocabularies, hparams, chief,
                                                    gather=dtensor_mesh.gather if mesh is not None else None,
                                                    validation=validation),
                   *([best_epoch] if keep_best else [])],
        verbose=0)
    train_seconds = time.perf_counter() - start

    if mesh is not None:
        # The export is an ordinary model (no DTensor) holding the gathered weights: served like any other.
        weights = dtensor_mesh.gather_weights(keras_model)
        export_model = model.build_model(contract, buckets, len(class_names), hparams, label_moments)
        export_model.set_weights(weights)
    else:
        export_model, weights = keras_model, keras_model.get_weights()
    distribution = _distribution(hparams, strategy, keras_model, mesh, global_batch_size, train_data)
    if chief:
        _write_json(os.path.join(fn_args.model_run_dir, "distribution.json"), distribution)
    _export(export_model, tf_transform_output, contract, class_names, fn_args.serving_model_dir, chief,
            export_tflite=bool(hparams.get("export_tflite")))
    summary = _summary(strategy, keras_model, hparams, history, throughput, train_seconds, steps_per_epoch,
                       replicas, weights, distribution)
    summary["kept_epoch"] = best_epoch.best_epoch + 1 if keep_best else hparams["epochs"]
    _write_summary(fn_args.model_run_dir, summary, weights)
    logging.info("Trained (%s): %d steps, %.0f examples/s, final %s", task, summary["steps"],
                 summary["examples_per_second"], {k: round(v[-1], 4) for k, v in summary["history"].items()})
    return summary


def _distribution(hparams: dict[str, Any], strategy: tf.distribute.Strategy, keras_model: tf.keras.Model,
                  mesh: Any, global_batch_size: int, train_data: Any) -> dict[str, Any]:
    """distribution.json: where every trainable variable's parts live, and how a global batch is split."""
    batch = {"global": global_batch_size, "per_replica": hparams["batch_size"],
             "replicas": global_batch_size // hparams["batch_size"]}
    if mesh is not None:
        batch["inputs"] = placement.batch_split(next(iter(train_data)))  # one batch, as the mesh holds it
    return placement.describe(
        hparams["strategy"], strategy, keras_model.trainable_variables, strategies.cluster_spec(strategy),
        [d for d in mesh.local_devices()] if mesh is not None else _replica_devices(strategy), mesh, batch)


def _write_json(path: str, record: dict[str, Any]) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(record, f, indent=1)


def _summary(strategy: tf.distribute.Strategy, keras_model: tf.keras.Model, hparams: dict[str, Any],
             history: tf.keras.callbacks.History, throughput: callbacks.Throughput, train_seconds: float,
             steps_per_epoch: int, replicas: int, weights: list[np.ndarray],
             distribution: dict[str, Any]) -> dict[str, Any]:
    """What this task did: its place in the cluster, where the variables live, steps, examples/s, the history."""
    epochs = hparams["epochs"]
    global_batch_size = hparams["batch_size"] * replicas
    mesh = distribution.get("mesh")
    examples_per_epoch = steps_per_epoch * global_batch_size
    later = throughput.epoch_seconds[1:]  # the first epoch includes tracing and cluster set-up
    return {
        "task": strategies.task_name(strategy),
        "chief": strategies.is_chief(strategy),
        "pid": os.getpid(),
        "strategy": hparams["strategy"],
        "strategy_class": type(strategy).__name__,
        "keras": tf.keras.__name__,
        "num_replicas_in_sync": replicas,
        "workers": strategies.num_workers(strategy),
        "parameter_servers": strategies.num_parameter_servers(strategy),
        "replica_devices": mesh["devices"] if mesh else _replica_devices(strategy),
        "mesh": mesh,
        "variable_devices": (sorted(mesh["devices"]) if mesh else
                             sorted({v.device for v in keras_model.trainable_variables})),
        # Copies of each variable kept in sync: one per replica (mirrored), else one. On a mesh, the first
        # variable (an embedding or kernel) may be split: its parts are in distribution.json.
        "variable_copies": (distribution["variables"][0]["copies"] if mesh else
                            len(strategy.experimental_local_results(keras_model.trainable_variables[0]))),
        "batch_size_per_replica": hparams["batch_size"],
        "global_batch_size": global_batch_size,
        "epochs": epochs,
        "steps": steps_per_epoch * epochs,
        "examples": examples_per_epoch * epochs,
        "train_seconds": train_seconds,
        "epoch_seconds": throughput.epoch_seconds,
        "examples_per_second": examples_per_epoch * epochs / train_seconds,
        "steady_examples_per_second": examples_per_epoch * len(later) / sum(later) if later else None,
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "weights_sha256": _weights_fingerprint(weights),
    }


def _write_summary(model_run_dir: str, summary: dict[str, Any], weights: list[np.ndarray]) -> None:
    summary_dir = os.path.join(model_run_dir, "training")
    tf.io.gfile.makedirs(summary_dir)
    with tf.io.gfile.GFile(os.path.join(summary_dir, f"{summary['task']}.json"), "w") as f:
        json.dump(summary, f, indent=1)
    buffer = io.BytesIO()  # np.savez seeks, which GFile cannot
    np.savez(buffer, *weights)
    with tf.io.gfile.GFile(os.path.join(summary_dir, f"{summary['task']}.weights.npz"), "wb") as f:
        f.write(buffer.getvalue())


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains under the configured tf.distribute strategy and exports the serving SavedModel.

    pipeline/training/launcher.py runs train_and_export here or, when the strategy needs them, in a local cluster
    of processes (multi_worker_mirrored, parameter_server without TF_CONFIG) or in a fresh process (a strategy that
    must set TensorFlow up before its first op, after Transform ran TensorFlow in this one)."""
    if not tf.keras.__name__.startswith("tf_keras"):
        raise RuntimeError(
            f"tf.keras is {tf.keras.__name__}; this Trainer needs tf-keras (Keras 2). "
            "Import the 'pipeline' package before TensorFlow, which sets TF_USE_LEGACY_KERAS=1.")
    launcher.run_training(fn_args, TRAIN_FN)
