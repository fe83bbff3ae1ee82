"""Model and hybrid parallelism with DTensor: the mesh, the layouts of the model's variables, an optimizer that
keeps gradients in those layouts, the input pipeline and gathering the weights back.

  model_parallel   a 1 x M mesh ("batch" 1, "model" M): every hidden kernel split into M column blocks, one per
                   device; the batch is replicated (every device sees the whole batch, computes its columns)
  hybrid_parallel  a B x M mesh: the kernels split along "model" as above and replicated along "batch"; each
                   global batch split into B parts along "batch"

Why DTensor and not hand-placed layer shards: tf-keras 2.16's LayoutMap builds the same Keras model with DTensor
variables, `model.fit` trains it on a `DTensorDataset`, and the SPMD expansion inserts the collectives that the
forward and backward passes need; the model definition stays the one every other strategy uses.

What the locked stack (TF 2.16.2, tf-keras 2.16.0) needs around it, each seen failing without:
* the B x M logical CPU devices exist before the TensorFlow runtime starts (strategies.needs_fresh_process);
* DTensorDataset gets unbatched elements and batches them itself, and shuffles without reshuffling per iteration;
* gradients of an embedding are IndexedSlices and come out of the backward pass in whatever layout the SPMD pass
  chose, which Adam's update of a sharded variable rejects: DenseGradAdam densifies and relayouts them;
* `get_weights` and `predict` do not work on DTensor variables: `gather` relayouts each one to a replicated
  layout and reads one copy, and the export is an ordinary model holding those values.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.experimental import dtensor

NAMES = ("model_parallel", "hybrid_parallel")
BATCH, MODEL = "batch", "model"
# Which variables are split along the model axis: the hidden layers' kernels (by columns) and biases, and the
# embeddings (by their width: the vocabulary axis is never split, a lookup would then need every device's rows).
HIDDEN_KERNEL = r"dense_\d+.*kernel"
HIDDEN_BIAS = r"dense_\d+.*bias"
EMBEDDINGS = r".*_embedding.*embeddings"


class MeshError(ValueError):
    """A mesh that cannot be made here, or a model that cannot be split over it."""


@dataclasses.dataclass(frozen=True)
class MeshShape:
    batch: int  # data-parallel replicas: the global batch is split into this many parts
    model: int  # model shards: each split variable is cut into this many parts

    @property
    def devices(self) -> int:
        return self.batch * self.model


def shape_of(hparams: dict[str, Any]) -> MeshShape | None:
    """The mesh the configured strategy trains on, or None for a tf.distribute strategy."""
    name = hparams["strategy"]
    if name not in NAMES:
        return None
    batch = int(hparams.get("data_parallel_replicas", 2)) if name == "hybrid_parallel" else 1
    return MeshShape(batch=batch, model=int(hparams.get("model_parallel_devices", 2)))


def make_mesh(shape: MeshShape, devices: list[str]) -> dtensor.Mesh:
    """A ("batch", B) x ("model", M) mesh on `devices` (B*M of them: strategies.mesh_devices)."""
    if len(devices) != shape.devices:
        raise MeshError(f"a {shape.batch} x {shape.model} mesh needs {shape.devices} devices, got {devices}")
    local = [tf.DeviceSpec.from_string(d).device_type + ":" + str(tf.DeviceSpec.from_string(d).device_index)
             for d in devices]
    return dtensor.create_mesh([(BATCH, shape.batch), (MODEL, shape.model)], devices=local)


def check_divisible(hparams: dict[str, Any], shape: MeshShape) -> None:
    """A hidden layer's width must split evenly over the model axis (DTensor shards evenly)."""
    if int(hparams["hidden_units"]) % shape.model:
        raise MeshError(f"hidden_units = {hparams['hidden_units']} cannot be split over model_parallel_devices = "
                        f"{shape.model}: choose a width divisible by it")


def layout_map(mesh: dtensor.Mesh, embedding_widths: dict[str, int]) -> Any:
    """tf-keras's LayoutMap for the project's model (pipeline/modules/model.py): hidden kernels [-, model], biases
    [model], embeddings [-, model] when their width divides evenly (else replicated: a width-3 embedding of a tiny
    vocabulary is not worth a collective). Every other variable (the logits layer, normalization) is replicated."""
    import tf_keras
    layouts = tf_keras.dtensor.experimental.LayoutMap(mesh=mesh)
    model_size = mesh.dim_size(MODEL)
    layouts[HIDDEN_KERNEL] = dtensor.Layout([dtensor.UNSHARDED, MODEL], mesh)
    layouts[HIDDEN_BIAS] = dtensor.Layout([MODEL], mesh)
    for layer, width in embedding_widths.items():
        if width % model_size == 0:
            layouts[rf"{layer}.*embeddings"] = dtensor.Layout([dtensor.UNSHARDED, MODEL], mesh)
    return layouts


def dense_grad_adam(learning_rate: float, mesh: dtensor.Mesh) -> tf.keras.optimizers.Optimizer:
    """tf-keras's Adam on the mesh, fed dense gradients in their variable's own layout."""

    class DenseGradAdam(tf.keras.optimizers.Adam):
        def apply_gradients(self, grads_and_vars, *args, **kwargs):
            fixed = []
            for grad, variable in grads_and_vars:
                if isinstance(grad, tf.IndexedSlices):
                    grad = tf.convert_to_tensor(grad)
                # `variable.layout` (not dtensor.fetch_layout, which works only eagerly: this runs in the step).
                fixed.append((dtensor.relayout(grad, variable.layout), variable))
            return super().apply_gradients(fixed, *args, **kwargs)

    return DenseGradAdam(learning_rate, mesh=mesh)


def dataset(batched: tf.data.Dataset, mesh: dtensor.Mesh, global_batch_size: int, seed: int,
            shuffle_buffer: int = 4096) -> dtensor.DTensorDataset:
    """A batched (features, label, weight) dataset as a DTensorDataset: every element split along "batch"."""
    rows = batched.unbatch().shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    # DTensorDataset reads the stream once per "batch" position and auto-shards each copy: by file (the default)
    # a split held in one file leaves the second copy empty ("End of sequence"); by element, every copy must see
    # the same order, hence the fixed shuffle above and no shuffling upstream (trainer.py).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    rows = rows.with_options(options)
    layouts = tf.nest.map_structure(
        lambda spec: dtensor.Layout.batch_sharded(mesh, BATCH, rank=spec.shape.rank + 1), rows.element_spec)
    return dtensor.DTensorDataset(rows, mesh=mesh, layouts=layouts, global_batch_size=global_batch_size,
                                  batch_dim=BATCH)


def is_dtensor(variable: Any) -> bool:
    return hasattr(variable, "layout") and isinstance(variable.layout, dtensor.Layout)


def gather(variable: Any) -> np.ndarray:
    """The whole value of a DTensor variable (one replica of it after a relayout to replicated)."""
    value = variable.read_value()
    replicated = dtensor.relayout(value, dtensor.Layout.replicated(variable.layout.mesh, rank=len(value.shape)))
    return dtensor.unpack(replicated)[0].numpy()


def gather_weights(keras_model: tf.keras.Model) -> list[np.ndarray]:
    """What keras_model.get_weights() would return, for a model of DTensor variables."""
    return [gather(v) if is_dtensor(v) else np.asarray(v.numpy()) for v in keras_model.weights]


def parts(variable: Any) -> list[tuple[str, np.ndarray]]:
    """The live parts of a DTensor variable: (device, value) of each component, in mesh order."""
    return [(component.device, component.numpy()) for component in dtensor.unpack(variable.read_value())]
