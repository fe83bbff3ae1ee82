"""A pipeline's push history without running the pipeline: real SavedModels in a model base path (each version
answers y = x + version, so an answer names the version that gave it) and a real ML Metadata store that records
them as TFX does (Model -> Evaluator's ModelBlessing -> Pusher -> PushedModel -> ServingValidator), for the tests
of the commands that act after the push."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.config import PipelineConfig, load_config
from tests.support.processes import free_port


class AddVersion(tf.Module):
    def __init__(self, version: int):
        super().__init__()
        self.offset = tf.constant(float(version))

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.float32, name="x")])
    def predict(self, x):
        return {"y": x + self.offset}


def export(path: str, version: int) -> None:
    model = AddVersion(version)
    tf.saved_model.save(model, path, signatures={"serving_default": model.predict})


@dataclasses.dataclass
class Version:
    number: int
    blessed: bool = True
    quarantined: bool = False  # failed its serving validation and was moved out of the base path


@dataclasses.dataclass
class History:
    root: Path
    config: PipelineConfig
    set_args: list[str]
    pushed_model_ids: dict[int, int]


def make_history(root: Path, versions: list[Version]) -> History:
    grpc_port, rest_port = free_port(), free_port()
    overrides = {"tfx_root": str(root / "runs"), "grpc_port": str(grpc_port), "rest_port": str(rest_port),
                 "probe_deadline_s": "30"}
    config = load_config(overrides, environ={})
    set_args = [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    os.makedirs(config.pipeline_root, exist_ok=True)
    connection = config.metadata_connection_config()
    store = metadata_store.MetadataStore(connection)
    types = {name: store.put_artifact_type(mlmd.ArtifactType(name=name))
             for name in ("Model", "ModelBlessing", "PushedModel", "tfxsp.ServingValidation")}
    exec_types = {name: store.put_execution_type(mlmd.ExecutionType(name=name))
                  for name in ("tfx.components.evaluator.component.Evaluator",
                               "tfx.components.pusher.component.Pusher",
                               "components.serving_validation.component.ServingValidator")}
    pipeline_type = store.put_context_type(mlmd.ContextType(name="pipeline"))
    run_type = store.put_context_type(mlmd.ContextType(name="pipeline_run"))
    [pipeline_ctx] = store.put_contexts([mlmd.Context(type_id=pipeline_type, name=config.pipeline_name)])
    pushed_ids = {}
    for v in versions:
        [run_ctx] = store.put_contexts([mlmd.Context(type_id=run_type, name=f"run-{v.number}")])
        contexts = store.get_contexts_by_id([pipeline_ctx, run_ctx])
        model_dir = root / "trainer" / str(v.number) / "Format-Serving"
        export(str(model_dir), v.number)
        destination = os.path.join(config.serving_model_dir, str(v.number))
        if v.quarantined:
            export(os.path.join(config.serving_model_dir + ".quarantine", str(v.number)), v.number)
        else:
            export(destination, v.number)
        model = _artifact(types["Model"], str(model_dir.parent))
        blessing = _artifact(types["ModelBlessing"], str(root / "blessing" / str(v.number)),
                             blessed=int(v.blessed))
        [model_id, blessing_id] = store.put_artifacts([model, blessing])
        store.put_artifacts([_with_id(blessing, blessing_id, current_model_id=model_id)])
        _execution(store, exec_types["tfx.components.evaluator.component.Evaluator"], contexts,
                   inputs={"model": model_id}, outputs={"blessing": blessing_id})
        pushed = _artifact(types["PushedModel"], str(root / "pushed" / str(v.number)), pushed=1,
                           pushed_version=str(v.number), pushed_destination=destination)
        [pushed_id] = store.put_artifacts([pushed])
        pushed_ids[v.number] = pushed_id
        _execution(store, exec_types["tfx.components.pusher.component.Pusher"], contexts,
                   inputs={"model": model_id, "model_blessing": blessing_id}, outputs={"pushed_model": pushed_id})
        outcome = "failed" if v.quarantined else "passed"
        validation = _artifact(types["tfxsp.ServingValidation"], str(root / "validation" / str(v.number)),
                               outcome=outcome, blessed=int(not v.quarantined), rolled_back=int(v.quarantined),
                               reason="wrong answers" if v.quarantined else "all checks passed")
        [validation_id] = store.put_artifacts([validation])
        _execution(store, exec_types["components.serving_validation.component.ServingValidator"], contexts,
                   inputs={"pushed_model": pushed_id}, outputs={"validation": validation_id})
    return History(root, config, set_args, pushed_ids)


def _artifact(type_id: int, uri: str, **props) -> mlmd.Artifact:
    artifact = mlmd.Artifact(type_id=type_id, uri=uri, state=mlmd.Artifact.LIVE)
    for key, value in props.items():
        if isinstance(value, int):
            artifact.custom_properties[key].int_value = value
        else:
            artifact.custom_properties[key].string_value = value
    return artifact


def _with_id(artifact: mlmd.Artifact, artifact_id: int, **props) -> mlmd.Artifact:
    updated = mlmd.Artifact()
    updated.CopyFrom(artifact)
    updated.id = artifact_id
    for key, value in props.items():
        updated.custom_properties[key].int_value = value
    return updated


def _execution(store, type_id: int, contexts, inputs: dict[str, int], outputs: dict[str, int]) -> int:
    execution = mlmd.Execution(type_id=type_id, last_known_state=mlmd.Execution.COMPLETE)
    pairs = []
    for kind, keyed in ((mlmd.Event.INPUT, inputs), (mlmd.Event.OUTPUT, outputs)):
        for key, artifact_id in keyed.items():
            [artifact] = store.get_artifacts_by_id([artifact_id])
            event = mlmd.Event(type=kind)
            event.path.steps.add().key = key
            event.path.steps.add().index = 0
            pairs.append((artifact, event))
    execution_id, _, _ = store.put_execution(execution, pairs, contexts)
    return execution_id
