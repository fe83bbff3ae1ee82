"""The Trainer's training curves, read from the TensorBoard event files in its ModelRun folder, without TensorFlow.

Keras' TensorBoard callback writes `<log_dir>/train` and `<log_dir>/validation`, each holding
`events.out.tfevents.*` files whose scalars are tensors (`epoch_loss`, `epoch_accuracy`, `epoch_learning_rate`, ...)
or, from older writers, simple values. Every folder under the ModelRun that holds event files is one curve set,
named by its path (a multi-worker run's workers write folders of their own), so every strategy's logs are read.
Per-batch scalars are left out: a curve per epoch is what a person compares.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from pipeline.metadata.records import read_records

EPOCH_PREFIX = "epoch_"


@dataclasses.dataclass
class Curve:
    metric: str  # loss, accuracy, learning_rate, ... (the tag without "epoch_")
    run: str  # train, validation, or a worker's folder
    points: list[tuple[int, float]]  # (epoch, value), by epoch

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "run": self.run, "points": [[s, v] for s, v in self.points]}


def event_folders(model_run_uri: str) -> dict[str, list[str]]:
    """relative folder ('train', 'validation', ...) -> its event files, sorted."""
    found: dict[str, list[str]] = {}
    for folder, _, files in os.walk(model_run_uri):
        events = sorted(f for f in files if f.startswith("events.out.tfevents"))
        if events:
            relative = os.path.relpath(folder, model_run_uri)
            found[relative if relative != "." else "run"] = [os.path.join(folder, f) for f in events]
    return dict(sorted(found.items()))


def read_curves(model_run_uri: str) -> list[Curve]:
    """Every per-epoch scalar of every event folder under the ModelRun, as curves ordered by metric then run.
    A truncated file (a run still writing, or killed) gives the points before the damage."""
    values: dict[tuple[str, str], dict[int, float]] = {}
    for run, files in event_folders(model_run_uri).items():
        for path in files:
            try:
                for record in read_records(path):
                    _add_scalars(event_pb2.Event.FromString(record), run, values)
            except ValueError:
                continue  # keep what was read before the damaged record
    return [Curve(metric=metric, run=run, points=sorted(points.items()))
            for (metric, run), points in sorted(values.items())]


def _add_scalars(event: Any, run: str, values: dict[tuple[str, str], dict[int, float]]) -> None:
    if not event.HasField("summary"):
        return
    for value in event.summary.value:
        if not value.tag.startswith(EPOCH_PREFIX):
            continue
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            number = float(value.simple_value)
        elif kind == "tensor":
            array = tensor_util.make_ndarray(value.tensor)
            if array.size != 1 or array.dtype.kind not in "fiu":
                continue
            number = float(array.reshape(()))
        else:
            continue
        values.setdefault((value.tag[len(EPOCH_PREFIX):], run), {})[int(event.step)] = number


@dataclasses.dataclass(frozen=True)
class TrainingSeen:
    """How much data the Trainer went through: steps x global batch, from the chief's training/<task>.json."""
    steps: int
    global_batch_size: int
    epochs: int

    @property
    def examples(self) -> int:
        return self.steps * self.global_batch_size


def training_seen(model_run_uri: str) -> TrainingSeen | None:
    """What the chief's summary (pipeline/modules/trainer.py writes it) says; None when there is none to read."""
    folder = os.path.join(model_run_uri, "training")
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except OSError:
        return None
    for name in names:
        try:
            with open(os.path.join(folder, name)) as f:
                summary = json.load(f)
            if summary.get("chief"):
                return TrainingSeen(steps=int(summary["steps"]), global_batch_size=int(summary["global_batch_size"]),
                                    epochs=int(summary["epochs"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a task's summary half-written by a killed run: another may be whole
    return None
