"""ML Metadata records as plain Python: property values, states, event keys, times."""
from __future__ import annotations

import datetime
import json
from typing import Any

from ml_metadata.proto import metadata_store_pb2 as mlmd

Event = mlmd.Event
INPUT_EVENTS = (Event.INPUT, Event.DECLARED_INPUT)
OUTPUT_EVENTS = (Event.OUTPUT, Event.DECLARED_OUTPUT, Event.PENDING_OUTPUT)
# `tfxsp models label/promote/pin/unpin/rollback` (pipeline/lifecycle/actions.py) records each action as an execution
# of this type, its input the PushedModel it concerns: a downstream trace of a pushed version shows them.
MODEL_ACTION_TYPE = "tfxsp.ModelAction"
# `tfxsp monitor` (pipeline/monitoring/record.py) records each skew check as an execution of SKEW_CHECK_TYPE, its
# inputs the PushedModel and its training statistics and schema, its output a SKEW_REPORT_TYPE artifact.
SKEW_CHECK_TYPE = "tfxsp.ServingSkewCheck"
SKEW_REPORT_TYPE = "ServingSkewReport"

_EXECUTION_STATES = {
    mlmd.Execution.COMPLETE: "complete",
    mlmd.Execution.CACHED: "cached",
    mlmd.Execution.FAILED: "failed",
    mlmd.Execution.RUNNING: "running",
    mlmd.Execution.NEW: "new",
    mlmd.Execution.CANCELED: "canceled",
}

# What a person needs to tell artifacts of a type apart; other properties are in the JSON.
KEY_PROPERTIES = {
    "Examples": ("span", "version", "split_names"),
    "ExampleStatistics": ("span", "split_names"),
    "ExampleAnomalies": ("span", "split_names"),
    "PushedModel": ("pushed", "pushed_version", "pushed_destination"),
    "ModelBlessing": ("blessed", "current_model_id", "baseline_model_id"),
    "InfraBlessing": ("blessed",),
    "tfxsp.ServingValidation": ("blessed", "outcome", "probed_version", "reason", "rolled_back"),
}
_NOISE = frozenset({"tfx_version", "is_external", "state", "name", "producer_component",
                    "stats_dashboard_link", "sample_rate_by_split"})


def value_of(value: mlmd.Value) -> Any:
    """An MLMD property value as plain Python; JSON objects and lists held in strings (TFX's exec properties:
    custom_config, train_args, ...) are decoded."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        if text[:1] in ("{", "[") or text == "null":
            try:
                return json.loads(text)
            except ValueError:
                pass
        return text
    if kind in ("int_value", "double_value", "bool_value"):
        return getattr(value, kind)
    if kind in ("struct_value", "proto_value"):
        from google.protobuf import json_format
        return json_format.MessageToDict(getattr(value, kind))
    return None


def properties_of(node: Any) -> dict[str, Any]:
    """Properties and custom properties of an artifact, execution or context, merged."""
    merged = {k: value_of(v) for k, v in node.custom_properties.items()}
    merged.update({k: value_of(v) for k, v in node.properties.items()})
    return dict(sorted(merged.items()))


def key_properties(type_name: str, properties: dict[str, Any]) -> dict[str, Any]:
    wanted = KEY_PROPERTIES.get(type_name)
    if wanted is None:
        return {k: v for k, v in properties.items() if k not in _NOISE}
    return {k: properties[k] for k in wanted if k in properties}


def execution_state(execution: mlmd.Execution) -> str:
    return _EXECUTION_STATES.get(execution.last_known_state, "unknown")


def artifact_state(artifact: mlmd.Artifact) -> str:
    return mlmd.Artifact.State.Name(artifact.state).lower()


def execution_seconds(execution: mlmd.Execution) -> float:
    return max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000.0)


def iso(ms: int) -> str | None:
    """Milliseconds since the epoch as local ISO time (seconds precision)."""
    if not ms:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000).isoformat(timespec="seconds")


def short_type(execution_type: str) -> str:
    """'tfx.components.trainer.component.Trainer' -> 'Trainer'."""
    return execution_type.rsplit(".", 1)[-1]


def event_keys(event: mlmd.Event) -> list[str]:
    """The input/output keys of an event: its path is (key, index) pairs, one pair per key under which the
    execution saw the artifact (['model', 0, 'baseline_model', 0] = both keys)."""
    return [step.key for step in event.path.steps if step.HasField("key")]


def custom_string(artifact: mlmd.Artifact, key: str) -> str | None:
    """A string property or custom property of an artifact, None when it has none."""
    value = artifact.properties.get(key) or artifact.custom_properties.get(key)
    return value.string_value if value is not None else None
