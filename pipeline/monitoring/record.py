"""The result of a skew check, recorded in ML Metadata: an execution of type `tfxsp.ServingSkewCheck` with the
served PushedModel (and the training statistics and schema it was compared with) as inputs and a
`ServingSkewReport` artifact (the report folder; the verdict, distances and counts as custom properties) as
output, so the check shows downstream of the PushedModel (tfxsp lineage version:N --downstream)."""
from __future__ import annotations

import json
import time

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.metadata.properties import SKEW_CHECK_TYPE, SKEW_REPORT_TYPE
from pipeline.monitoring.skew import SkewResult
from pipeline.monitoring.training_data import TrainingData

NODE_CONTEXT_TYPE = "node"
NODE_ID = "ServingSkewCheck"


def record(store: metadata_store.MetadataStore, training: TrainingData, result: SkewResult, *, report_dir: str,
           logs: str, model_name: str, pipeline_name: str) -> tuple[int, int]:
    """Writes the execution and its report artifact; returns (execution id, artifact id)."""
    execution_type = store.put_execution_type(mlmd.ExecutionType(name=SKEW_CHECK_TYPE))
    artifact_type = store.put_artifact_type(mlmd.ArtifactType(name=SKEW_REPORT_TYPE))
    flagged = [f.name for f in result.flagged]
    artifact = mlmd.Artifact(type_id=artifact_type, uri=report_dir, state=mlmd.Artifact.LIVE)
    values = {
        "model_name": model_name, "version": training.version, "logs": logs, "requests": result.requests,
        "skewed": int(bool(flagged)), "skewed_features": ",".join(flagged),
        "distances": json.dumps({f.name: f.distance for f in result.features}, sort_keys=True),
        "thresholds": json.dumps({f.name: f.threshold for f in result.features}, sort_keys=True),
    }
    for key, value in values.items():
        if isinstance(value, int):
            artifact.custom_properties[key].int_value = value
        else:
            artifact.custom_properties[key].string_value = value
    now = int(time.time() * 1000)
    execution = mlmd.Execution(type_id=execution_type, last_known_state=mlmd.Execution.COMPLETE)
    execution.custom_properties["skewed"].int_value = int(bool(flagged))
    execution.custom_properties["checked_at_ms"].int_value = now

    def event(kind, key: str, artifact_id: int | None = None) -> mlmd.Event:
        e = mlmd.Event(type=kind)
        if artifact_id is not None:
            e.artifact_id = artifact_id
        e.path.steps.add().key = key
        e.path.steps.add().index = 0
        return e

    inputs = [(mlmd.Artifact(id=training.pushed_model_id), event(mlmd.Event.INPUT, "pushed_model")),
              (mlmd.Artifact(id=training.statistics_id), event(mlmd.Event.INPUT, "statistics")),
              (mlmd.Artifact(id=training.schema_id), event(mlmd.Event.INPUT, "schema"))]
    existing = {a.id: a for a in store.get_artifacts_by_id([training.pushed_model_id, training.statistics_id,
                                                              training.schema_id])}
    pairs = [(existing[a.id], e) for a, e in inputs] + [(artifact, event(mlmd.Event.OUTPUT, "report"))]
    context = _node_context(store, pipeline_name)
    execution_id, artifact_ids, _ = store.put_execution(execution, pairs, contexts=[context])
    return execution_id, artifact_ids[-1]


def _node_context(store: metadata_store.MetadataStore, pipeline_name: str) -> mlmd.Context:
    """The checks' node context, named as TFX names its nodes' (<pipeline>.<node id>): the readers of this project
    (pipeline/metadata) name every execution by its node context."""
    from ml_metadata import errors
    try:
        type_id = store.get_context_type(NODE_CONTEXT_TYPE).id
    except errors.NotFoundError:
        type_id = store.put_context_type(mlmd.ContextType(name=NODE_CONTEXT_TYPE))
    name = f"{pipeline_name}.{NODE_ID}"
    found = store.get_context_by_type_and_name(NODE_CONTEXT_TYPE, name)
    if found is not None:
        return found
    context = mlmd.Context(type_id=type_id, name=name)
    [context.id] = store.put_contexts([context])
    return context
