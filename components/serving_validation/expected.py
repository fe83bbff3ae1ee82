"""Probe requests from real eval examples, and the outputs the trained model gives them in process.

A raw-feature signature (serving_raw) takes one input per feature column, named as its CSV header; its SignatureDef
(what TF Serving reads) carries those names, while the signature loaded in Python keeps the internal names it was
traced with (pipeline/modules/signatures.py). The two are matched through the placeholder each SignatureDef input
points at, which TensorFlow names `<signature>_<argument>`. Rows are built from eval examples as a client sends
them, gaps included: NaN for a missing number, "" for a missing string.
"""
from __future__ import annotations

import glob
import math
import os

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tfx.types import Artifact, artifact_utils
from tfx.utils import path_utils

from components.serving_validation.probes import ProbeInput


def eval_examples(examples: Artifact, count: int) -> list[bytes]:
    """The first `count` serialized tf.Examples of the eval split."""
    split_uri = artifact_utils.get_split_uri([examples], "eval")
    files = sorted(glob.glob(os.path.join(split_uri, "*")))
    if not files:
        raise ValueError(f"the eval split of {examples.uri} holds no files")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
    return list(dataset.as_numpy_iterator())


def _signature_def_inputs(model_dir: str, signature: str) -> dict[str, tuple[str, tf.DType]]:
    """served input name -> (the Python argument it feeds, its dtype), from the SavedModel's SignatureDef."""
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    meta_graph = next(m for m in saved_model.meta_graphs if signature in m.signature_def)
    prefix = f"{signature}_"
    return {alias: (info.name.split(":")[0].removeprefix(prefix), tf.as_dtype(info.dtype))
            for alias, info in meta_graph.signature_def[signature].inputs.items()}


def _value(feature: tf.train.Feature | None, dtype: tf.DType):
    """A feature's first value as a client sends it: a number (NaN when missing or not a number) or a string."""
    kind = feature.WhichOneof("kind") if feature is not None else None
    values = list(getattr(feature, kind).value) if kind else []
    if dtype == tf.string:
        return values[0] if values else b""
    if not values:
        return math.nan
    value = values[0]
    if isinstance(value, bytes):
        try:
            return float(value.decode())
        except ValueError:
            return math.nan  # a missing marker such as NA
    return float(value)


def _raw_inputs(serialized: list[bytes], served: dict[str, tuple[str, tf.DType]], feature_of: dict[str, str]
                ) -> dict[str, np.ndarray]:
    rows = [tf.train.Example.FromString(record).features.feature for record in serialized]
    return {name: np.array([_value(row.get(feature_of.get(name, name)), dtype) for row in rows],
                           dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
            for name, (_, dtype) in served.items()}


def probe_inputs(model: Artifact, examples: Artifact, signature_names: list[str], count: int,
                 feature_of: dict[str, str]) -> list[ProbeInput]:
    """For each signature: requests built from eval examples, and the trained model's answers. `feature_of`: a
    raw signature's input name -> the example feature that feeds it (its column's key)."""
    model_dir = path_utils.serving_model_path(model.uri)
    loaded = tf.saved_model.load(model_dir)
    serialized = eval_examples(examples, count)
    probes = []
    for name in signature_names:
        if name not in loaded.signatures:
            raise ValueError(f"the trained model has no signature '{name}'; it has {sorted(loaded.signatures)}")
        signature = loaded.signatures[name]
        served = _signature_def_inputs(model_dir, name)
        binary = list(served) == ["examples"] and served["examples"][1] == tf.string
        if binary:
            inputs = {"examples": np.array(serialized, dtype=object)}
        else:
            inputs = _raw_inputs(serialized, served, feature_of)
        outputs = signature(**{served[k][0]: tf.constant(v) for k, v in inputs.items()})
        probes.append(ProbeInput(name, inputs, {k: v.numpy() for k, v in outputs.items()}, binary))
    return probes
