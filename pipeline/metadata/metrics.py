"""The Evaluator's results, read from its output folder without TensorFlow: the candidate model's metrics per slice,
and the thresholds it failed.

TFMA writes the metrics as TFRecord files of MetricsForSlice protos (`metrics-*`). That generated module needs
protobuf alone, but importing it through the `tensorflow_model_analysis` package would import TensorFlow (~5 s), so
it is loaded from its file. The failed thresholds (asked for only when a model was not blessed) are read with TFMA
itself: their proto module imports the package.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

from pipeline.metadata.records import read_records

OVERALL = "Overall"


def eval_metrics(eval_uri: str) -> dict[str, dict[str, float]]:
    """slice ('Overall', 'species=Adelie', ...) -> metric name -> value of the candidate model. {} when there is
    no evaluation there."""
    pb2 = _metrics_for_slice_pb2()
    metrics: dict[str, dict[str, float]] = {}
    for record in _records(eval_uri, "metrics"):
        message = pb2.MetricsForSlice.FromString(record)
        slice_name = ", ".join(f"{s.column}={_slice_value(s)}" for s in message.slice_key.single_slice_keys) \
            or OVERALL
        for item in message.metric_keys_and_values:
            key = item.key
            if key.is_diff or key.model_name not in ("", "candidate") or not item.value.HasField("double_value"):
                continue
            name = key.name
            if key.HasField("sub_key"):  # a binarized metric, e.g. the AUC of class 1: "auc/class_1"
                if not key.sub_key.HasField("class_id"):
                    continue
                name = f"{name}/class_{key.sub_key.class_id.value}"
            metrics.setdefault(slice_name, {})[name] = item.value.double_value.value
    return dict(sorted(metrics.items(), key=lambda kv: (kv[0] != OVERALL, kv[0])))


def validation_failures(eval_uri: str) -> list[str]:
    """Why the Evaluator did not bless, one line per failed threshold ([] when it blessed or did not validate)."""
    import tensorflow_model_analysis as tfma
    try:
        validation = tfma.load_validation_result(eval_uri)
    except (OSError, ValueError):
        return []
    return [describe_failure(failure) for per_slice in validation.metric_validations_per_slice
            for failure in per_slice.failures]


def describe_failure(failure: Any) -> str:
    """'sparse_categorical_accuracy = 0.412, below the required 0.9', or the change against the baseline."""
    name = failure.metric_key.name
    value = failure.metric_value.double_value.value
    threshold = failure.metric_threshold
    if threshold.HasField("change_threshold"):
        allowed = threshold.change_threshold.absolute.value
        return (f"{name} changed by {value:+.3f} against the baseline model; the change threshold allows at least "
                f"{allowed:+.3f}")
    bounds = threshold.value_threshold
    if bounds.HasField("lower_bound") and value < bounds.lower_bound.value:
        return f"{name} = {value:.3f}, below the required {bounds.lower_bound.value:g}"
    if bounds.HasField("upper_bound") and value > bounds.upper_bound.value:
        return f"{name} = {value:.3f}, above the allowed {bounds.upper_bound.value:g}"
    return f"{name} = {value:.3f}: {failure.message or 'threshold not met'}"


def _records(eval_uri: str, prefix: str):
    try:
        names = sorted(f for f in os.listdir(eval_uri) if f.startswith(prefix))
    except OSError:
        return
    for name in names:
        yield from read_records(os.path.join(eval_uri, name))


def _slice_value(single: Any) -> Any:
    kind = single.WhichOneof("kind")
    value = getattr(single, kind) if kind else ""
    return value.decode() if isinstance(value, bytes) else value


def _metrics_for_slice_pb2() -> ModuleType:
    full_name = "tensorflow_model_analysis.proto.metrics_for_slice_pb2"
    if full_name in sys.modules or "tensorflow_model_analysis" in sys.modules:
        return importlib.import_module(full_name)
    package = importlib.util.find_spec("tensorflow_model_analysis")
    path = os.path.join(package.submodule_search_locations[0], "proto", "metrics_for_slice_pb2.py")
    spec = importlib.util.spec_from_file_location(full_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[full_name] = module
    return module
