"""Where a trained model's variables live, for `distribution.json` in the Trainer's model_run output: the strategy,
its devices or mesh, and for every trainable variable its shape, how each dimension is split and which devices hold
each part. Read from the live variables at the end of training, whatever the strategy:

  default, one_device, tpu     one copy, on the device the variable reports
  mirrored                     one whole copy per replica device (MirroredVariable's values)
  multi_worker_mirrored        one whole copy per replica device of every worker (this worker's values; the others'
                               are the same devices of the other tasks, which hold identical copies)
  central_storage              one copy, on the parameter device (the CPU)
  parameter_server             one copy per variable on a ps task, or the ShardedVariable's shards along axis 0
  model_parallel, hybrid       DTensor: the layout's sharding spec per dimension; the parts are the components
                               `dtensor.unpack` returns, on the mesh's devices (a part is held by every device of a
                               mesh axis the variable is not split along)
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.experimental import dtensor

from pipeline.training import mesh as dtensor_mesh


def _part(slices: list[list[int]], devices: list[str], dtype: tf.DType) -> dict[str, Any]:
    shape = [stop - start for start, stop in slices]
    return {"slices": slices, "shape": shape, "devices": devices,
            "bytes": int(np.prod(shape, dtype=np.int64)) * dtype.size}


def _whole(shape: list[int]) -> list[list[int]]:
    return [[0, n] for n in shape]


def _dtensor_variable(variable: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    layout = variable.layout
    shape = list(variable.shape)
    split = [None if spec == dtensor.UNSHARDED else {"mesh_axis": spec, "parts": layout.mesh.dim_size(spec)}
             for spec in layout.sharding_specs]
    by_shard: dict[tuple[int, ...], dict[str, Any]] = {}
    # unpack's components come in the mesh's device order, as offset_to_shard numbers them.
    for (device, value), shard in zip(dtensor_mesh.parts(variable), layout.offset_to_shard()):
        if shard not in by_shard:
            block = [n // (s["parts"] if s else 1) for n, s in zip(shape, split)]
            slices = [[i * b, (i + 1) * b] for i, b in zip(shard, block)]
            if list(value.shape) != block:
                raise AssertionError(f"{variable.name}: part {shard} on {device} is {value.shape}, expected {block}")
            by_shard[shard] = {**_part(slices, [], variable.dtype), "sha256": {}}
        by_shard[shard]["devices"].append(device)
        # What each device holds, so that a reader can match it against the same slice of the exported model.
        by_shard[shard]["sha256"][device] = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    return split, list(by_shard.values())


def _sharded_variable(variable: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    """ParameterServerStrategy's ShardedVariable: consecutive rows on the ps tasks."""
    shards, start, parts = variable.variables, 0, []
    for shard in shards:
        rows = int(shard.shape[0])
        parts.append(_part([[start, start + rows], *_whole(list(shard.shape)[1:])], [shard.device], variable.dtype))
        start += rows
    split = [{"axis_parts": len(shards)}] + [None] * (len(variable.shape) - 1)
    return split, parts


def _other_workers(devices: list[str], cluster: dict[str, list[str]]) -> list[str]:
    """The same devices on every task of a multi-worker cluster (each holds an identical copy)."""
    found = []
    for job in ("chief", "worker"):
        for task in range(len(cluster.get(job, []))):
            for device in devices:
                spec = tf.DeviceSpec.from_string(device).replace(job=job, task=task)
                found.append(spec.to_string())
    return found or devices


def _replicated_variable(strategy: tf.distribute.Strategy, variable: Any,
                         cluster: dict[str, list[str]]) -> tuple[list[Any], list[dict[str, Any]]]:
    try:
        values = list(strategy.experimental_local_results(variable))
    except (ValueError, TypeError):
        values = [variable]
    devices = [v.device for v in values] if len(values) > 1 else [variable.device]
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and cluster:
        devices = _other_workers(devices, cluster)
    return [None] * len(variable.shape), [_part(_whole(list(variable.shape)), devices, variable.dtype)]


def describe(name: str, strategy: tf.distribute.Strategy, variables: list[Any], cluster: dict[str, list[str]],
             devices: list[str], mesh: Any = None, batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """distribution.json's content for these (trainable) variables."""
    described, per_device = [], {}
    for variable in variables:
        if dtensor_mesh.is_dtensor(variable):
            split, parts = _dtensor_variable(variable)
        elif hasattr(variable, "variables") and type(variable).__name__ == "ShardedVariable":
            split, parts = _sharded_variable(variable)
        else:
            split, parts = _replicated_variable(strategy, variable, cluster)
        for part in parts:
            for device in part["devices"]:
                per_device[device] = per_device.get(device, 0) + part["bytes"]
        described.append({"name": variable.name, "shape": list(variable.shape), "dtype": variable.dtype.name,
                          "split": split, "copies": sum(len(p["devices"]) for p in parts), "parts": parts})
    record = {"strategy": name, "strategy_class": type(strategy).__name__, "devices": devices,
              "cluster": cluster or None, "variables": described,
              "variable_bytes_per_device": dict(sorted(per_device.items()))}
    if mesh is not None:
        record["strategy_class"] = "dtensor.Mesh"
        record["mesh"] = {"axes": {axis: mesh.dim_size(axis) for axis in mesh.dim_names},
                          "devices": [d for d in mesh.local_devices()]}
    if batch is not None:
        record["batch"] = batch
    return record


def batch_split(element: Any) -> dict[str, Any]:
    """How one global batch of a DTensorDataset is laid out: per input, its sharding spec and the devices and
    shapes of its parts (from the live DTensors)."""
    features, label, _ = element
    inputs = {**features, "label": label}
    return {key: {"shape": list(value.shape), "sharding": list(dtensor.fetch_layout(value).sharding_specs),
                  "parts": [[c.device, list(c.shape)] for c in dtensor.unpack(value)]}
            for key, value in sorted(inputs.items())}
