"""TF_CONFIG, the environment variable through which TensorFlow's multi-worker strategies learn their cluster.

A cluster manager (a Kubeflow TFJob, Vertex AI, a hand-made cluster) sets it for every task; the local launcher
sets it for the processes of the clusters it starts (pipeline/training/launcher.py).
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

ENV = "TF_CONFIG"


def read() -> dict[str, Any]:
    """This process's TF_CONFIG as a dict ({} when unset)."""
    return json.loads(os.environ.get(ENV) or "{}")


def for_task(cluster: dict[str, list[str]], task_type: str, index: int) -> str:
    """The TF_CONFIG value of one task of `cluster` ({"worker": ["host:port", ...], "ps": [...]})."""
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Sets (None: removes) environment variables for the block, then restores what was there."""
    saved = {key: os.environ.get(key) for key in values}

    def apply(items):
        for key, value in items:
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        apply(values.items())
        yield
    finally:
        apply(saved.items())
