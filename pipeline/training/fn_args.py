"""The Trainer's FnArgs, handed from the process TFX runs run_fn in to the processes the launcher starts.

FnArgs holds a DataAccessor whose dataset factories are closures over the examples' payload format; cloudpickle
(which Apache Beam uses to ship functions to its workers) serializes them by value, so a child process gets the
very factories TFX built, however the examples are encoded.
"""
from __future__ import annotations

from typing import Any

import cloudpickle


def save(fn_args: Any, path: str) -> None:
    with open(path, "wb") as f:
        cloudpickle.dump(fn_args, f)


def load(path: str) -> Any:
    with open(path, "rb") as f:
        return cloudpickle.load(f)
