"""A run's evaluation: the Evaluator's metrics per slice, the thresholds it applied, the blessing, the baseline.

Read from what `runs.show_run` gathered (the Evaluator's exec properties hold its eval_config, as JSON) and from the
evaluation folder (metrics.py). Why a model was not blessed is asked of TFMA only then (it imports TensorFlow).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from pipeline import evaluation
from pipeline.metadata.metrics import OVERALL, eval_metrics, validation_failures
from pipeline.metadata.runs import RunDetail


@dataclasses.dataclass
class Threshold:
    metric: str
    lower_bound: float | None = None  # the metric must be at least this
    upper_bound: float | None = None  # ... at most this
    change: dict[str, Any] | None = None  # against the baseline: direction, absolute or relative allowed change

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Evaluation:
    run_id: str
    evaluation_id: int | None = None
    evaluation_uri: str | None = None
    metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # slice -> metric -> value
    gate_metric: str | None = None  # the metric the blessing gates on
    thresholds: list[Threshold] = dataclasses.field(default_factory=list)
    blessed: bool | None = None
    blessing_id: int | None = None
    model_id: int | None = None
    baseline_model_id: int | None = None  # the previously blessed model it was compared with
    failures: list[str] = dataclasses.field(default_factory=list)
    evaluator_state: str | None = None

    def by_slice(self, metric: str | None = None) -> dict[str, float]:
        metric = metric or self.gate_metric
        return {name: values[metric] for name, values in self.metrics.items() if metric in values}

    def to_dict(self) -> dict[str, Any]:
        result = dataclasses.asdict(self)
        result["thresholds"] = [t.to_dict() for t in self.thresholds]
        result["by_slice"] = self.by_slice() if self.gate_metric else {}
        return result


def thresholds_of(eval_config: Any) -> list[Threshold]:
    """The thresholds of an EvalConfig as JSON (json_format's camelCase or proto field names): per metric spec,
    its `thresholds` map and `perSliceThresholds`, and any threshold of a metric config."""
    found: list[Threshold] = []
    if not isinstance(eval_config, dict):
        return found
    specs = eval_config.get("metricsSpecs") or eval_config.get("metrics_specs") or []
    for spec in specs:
        for name, threshold in (spec.get("thresholds") or {}).items():
            found.append(_threshold(name, threshold))
        for name, per_slice in (spec.get("perSliceThresholds") or spec.get("per_slice_thresholds") or {}).items():
            for item in per_slice.get("thresholds", []):
                found.append(_threshold(name, item.get("threshold", {})))
        for metric in spec.get("metrics", []):
            name = _metric_name(metric)
            if metric.get("threshold"):
                found.append(_threshold(name, metric["threshold"]))
            for item in metric.get("perSliceThresholds") or metric.get("per_slice_thresholds") or []:
                found.append(_threshold(name, item.get("threshold", {})))
    return found


def _metric_name(metric: dict[str, Any]) -> str:
    config = metric.get("config")
    if isinstance(config, str) and '"name"' in config:
        import json
        try:
            return json.loads(config).get("name") or metric.get("className", "")
        except ValueError:
            pass
    # TFMA names a Keras metric class's results in snake case: SparseCategoricalAccuracy -> sparse_categorical_accuracy
    class_name = metric.get("className") or metric.get("class_name") or ""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()


def _threshold(name: str, threshold: dict[str, Any]) -> Threshold:
    value = threshold.get("valueThreshold") or threshold.get("value_threshold") or {}
    change = threshold.get("changeThreshold") or threshold.get("change_threshold")

    def bound(key: str) -> float | None:
        item = value.get(key, value.get(key.replace("B", "_b")))
        if isinstance(item, dict):  # json_format writes a DoubleValue as {"value": x} or as x
            item = item.get("value")
        return float(item) if isinstance(item, (int, float)) else None
    return Threshold(metric=name, lower_bound=bound("lowerBound"), upper_bound=bound("upperBound"),
                     change=change or None)


def evaluation_of(detail: RunDetail) -> Evaluation:
    """The run's evaluation (an empty one, evaluation_id None, when the run has no Evaluator output)."""
    result = Evaluation(run_id=detail.summary.run_id)
    for node in detail.summary.nodes:
        outputs = detail.outputs.get(node.execution_id, [])
        for artifact in outputs:
            if artifact.type == "ModelEvaluation":
                result.evaluation_id, result.evaluation_uri = artifact.id, artifact.uri
                result.evaluator_state = node.state
                parameters = detail.parameters.get(node.execution_id, {})
                result.thresholds = thresholds_of(parameters.get("eval_config"))
                for item in detail.inputs.get(node.execution_id, []):
                    if "baseline_model" in item.keys:
                        result.baseline_model_id = item.id
                    elif "model" in item.keys:
                        result.model_id = item.id
            elif artifact.type == "ModelBlessing":
                result.blessing_id = artifact.id
                if "blessed" in artifact.properties:
                    result.blessed = bool(artifact.properties["blessed"])
                result.baseline_model_id = result.baseline_model_id or \
                    artifact.properties.get("baseline_model_id") or None
    if result.evaluation_uri:
        result.metrics = detail.metrics or eval_metrics(result.evaluation_uri)
        overall = result.metrics.get(OVERALL, {})
        result.gate_metric = next((m for m in evaluation.GATE_METRIC.values() if m in overall), None)
        if result.blessed is False:
            result.failures = validation_failures(result.evaluation_uri)
    return result
