"""TF Serving's ``half_plus_two`` test model, recreated with TensorFlow 2 (spec §4.3).

y = a*x + b with a=0.5, b=2 (c=3 for the ``*_y2``/``x2_to_y3`` signatures), with the signature keys,
input/output aliases and dtypes of the official TF2 test model: ``serving_default`` (predict,
``x`` -> ``y``), ``regress_x_to_y``, ``regress_x_to_y2``, ``classify_x_to_y`` (tf.Example strings in
``inputs``), and the float-input ``regress_x2_to_y3`` / ``classify_x2_to_y3``. The predict input
has unknown rank, so like the official TF1 model it accepts ``[3]``, ``[2, 2]`` and scalars.

Used by the conformance tests and the benchmark, and handy for smoke-testing any TF Serving:
``python -m serving.half_plus_two /tmp/models/half_plus_two --version 123``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import tensorflow as tf

_FEATURES = {
    "x": tf.io.FixedLenFeature([1], tf.float32),
    "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
}


class HalfPlusTwo(tf.Module):
    def __init__(self, a: float = 0.5, b: float = 2.0, c: float = 3.0):
        super().__init__()
        self.a = tf.Variable(a, name="a")
        self.b = tf.Variable(b, name="b")
        self.c = tf.Variable(c, name="c")

    def _examples(self, serialized):
        return tf.io.parse_example(serialized, _FEATURES)

    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_x_to_y(self, serialized):
        return {"outputs": self.a * self._examples(serialized)["x"] + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_x_to_y2(self, serialized):
        return {"outputs": self.a * self._examples(serialized)["x"] + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_x_to_y(self, serialized):
        return {"scores": self.a * self._examples(serialized)["x"] + self.b}

    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.float32, name="inputs")])
    def regress_x2_to_y3(self, x2):
        return {"outputs": self.a * x2 + self.c}

    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.float32, name="inputs")])
    def classify_x2_to_y3(self, x2):
        return {"scores": self.a * x2 + self.c}

    def signatures(self) -> dict:
        return {
            "serving_default": self.predict,
            "regress_x_to_y": self.regress_x_to_y,
            "regress_x_to_y2": self.regress_x_to_y2,
            "regress_x2_to_y3": self.regress_x2_to_y3,
            "classify_x_to_y": self.classify_x_to_y,
            "classify_x2_to_y3": self.classify_x2_to_y3,
        }


def save(directory: str, a: float = 0.5, b: float = 2.0, c: float = 3.0) -> str:
    """Writes the SavedModel into ``directory`` (which must not be a live version directory)."""
    model = HalfPlusTwo(a, b, c)
    tf.saved_model.save(model, directory, signatures=model.signatures())
    return directory


def export(base_path: str, version: int = 123, a: float = 0.5, b: float = 2.0, c: float = 3.0) -> str:
    """Publishes ``base_path/<version>`` atomically: written to a non-numeric sibling, then renamed."""
    os.makedirs(base_path, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base_path)  # non-numeric: ignored by servers
    try:
        save(staging, a, b, c)
        final = os.path.join(base_path, str(version))
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_path", help="model base path; the version directory is created inside it")
    parser.add_argument("--version", type=int, default=123)
    parser.add_argument("--b", type=float, default=2.0, help="the constant added (3.0 gives half_plus_three)")
    args = parser.parse_args()
    print(export(args.base_path, args.version, b=args.b))


if __name__ == "__main__":
    main()
