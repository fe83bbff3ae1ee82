"""Two runs side by side: how their configuration differed (every node's exec properties, flattened), and how their
metrics did (the evaluation's, per slice), from what `runs.show_run` reads of each."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from pipeline.metadata.runs import RunDetail

# Exec properties TFX keeps for itself (its result, cache and state bookkeeping): not settings a person chose.
EXECUTION_PROPERTY_NOISE = frozenset({"__execution_result__", "__external_execution_index__", "state",
                                      "__stateful_working_dir_index__"})


@dataclasses.dataclass
class Difference:
    key: str  # "Trainer.custom_config.epochs", "Overall.sparse_categorical_accuracy"
    a: Any
    b: Any

    @property
    def change(self) -> float | None:
        """b - a, for two numbers."""
        numbers = (int, float)
        if isinstance(self.a, numbers) and isinstance(self.b, numbers) and not isinstance(self.a, bool):
            return self.b - self.a
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "a": self.a, "b": self.b, "change": self.change}


@dataclasses.dataclass
class Comparison:
    a: str  # run ids
    b: str
    config: list[Difference]  # only the settings that differ
    same_settings: int  # how many were equal
    metrics: list[Difference]  # every metric of either run

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "same_settings": self.same_settings,
                "config": [d.to_dict() for d in self.config], "metrics": [d.to_dict() for d in self.metrics]}


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'prefix.a.b': 1}; lists stay whole (as JSON text when they hold dicts)."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}"))
        return flat
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return {prefix: json.dumps(value, sort_keys=True)}
    return {prefix: value}


def settings(detail: RunDetail) -> dict[str, Any]:
    """node.setting -> value for every exec property of every node of the run (TFX's own bookkeeping left out)."""
    flat: dict[str, Any] = {}
    for node in detail.summary.nodes:
        for key, value in detail.parameters.get(node.execution_id, {}).items():
            if key not in EXECUTION_PROPERTY_NOISE:
                flat.update(flatten(value, f"{node.node_id}.{key}"))
    return flat


def compare(a: RunDetail, b: RunDetail) -> Comparison:
    left, right = settings(a), settings(b)
    keys = sorted(set(left) | set(right))
    config = [Difference(k, left.get(k), right.get(k)) for k in keys if left.get(k) != right.get(k)]
    metrics_a = flatten(a.metrics, "").items()
    metrics_b = dict(flatten(b.metrics, "").items())
    seen = dict(metrics_a)
    metric_keys = list(seen) + [k for k in metrics_b if k not in seen]
    return Comparison(a=a.summary.run_id, b=b.summary.run_id, config=config,
                      same_settings=len(keys) - len(config),
                      metrics=[Difference(k.lstrip("."), seen.get(k), metrics_b.get(k)) for k in metric_keys])
