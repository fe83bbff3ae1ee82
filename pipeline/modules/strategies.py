"""The tf.distribute strategy the Trainer builds and compiles its model under, chosen by config."""
from typing import Any, Dict

import tensorflow as tf


def make_strategy(hparams: Dict[str, Any]) -> tf.distribute.Strategy:
    """Returns the strategy named by hparams['strategy']."""
    name = hparams["strategy"]
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"strategy {name!r} is not supported by this Trainer")
