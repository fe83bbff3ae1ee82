"""Probe requests from real eval examples, and the outputs the trained model gives them in process."""
from __future__ import annotations

import glob
import os

import numpy as np
import tensorflow as tf
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


def _takes_serialized_examples(signature: tf.types.experimental.ConcreteFunction) -> bool:
    specs = signature.structured_input_signature[1]
    return len(specs) == 1 and next(iter(specs.values())).dtype == tf.string and \
        next(iter(specs)) == "examples"


def _raw_inputs(serialized: list[bytes], specs: dict[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    """One value per input from each example that has all of them (a raw signature takes no gaps)."""
    columns: dict[str, list] = {name: [] for name in specs}
    for record in serialized:
        features = tf.train.Example.FromString(record).features.feature
        values = {}
        for name in specs:
            feature = features.get(name)
            kind = feature.WhichOneof("kind") if feature is not None else None
            found = list(getattr(feature, kind).value) if kind else []
            if not found:
                break
            values[name] = found[0]
        else:
            for name, value in values.items():
                columns[name].append(value)
    return {name: np.array(values, dtype=specs[name].dtype.as_numpy_dtype
                           if specs[name].dtype != tf.string else object)
            for name, values in columns.items()}


def probe_inputs(model: Artifact, examples: Artifact, signature_names: list[str],
                 count: int) -> list[ProbeInput]:
    """For each signature: requests built from eval examples, and the trained model's answers."""
    loaded = tf.saved_model.load(path_utils.serving_model_path(model.uri))
    serialized = eval_examples(examples, count)
    probes = []
    for name in signature_names:
        if name not in loaded.signatures:
            raise ValueError(f"the trained model has no signature '{name}'; it has "
                             f"{sorted(loaded.signatures)}")
        signature = loaded.signatures[name]
        specs = signature.structured_input_signature[1]
        binary = _takes_serialized_examples(signature)
        if binary:
            inputs = {next(iter(specs)): np.array(serialized, dtype=object)}
        else:
            inputs = _raw_inputs(serialized, specs)
        if not len(next(iter(inputs.values()))):
            raise ValueError(f"none of the {len(serialized)} eval examples has every input of "
                             f"signature '{name}'")
        outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
        probes.append(ProbeInput(name, inputs, {k: v.numpy() for k, v in outputs.items()}, binary))
    return probes
