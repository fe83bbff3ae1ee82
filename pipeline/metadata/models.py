"""Pushed model versions from ML Metadata, each with its model, blessing, evaluation metrics, serving validation,
and whether TF Serving serves it from the model base path."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from ml_metadata import metadata_store

from pipeline.metadata.artifacts import newest_first
from pipeline.metadata.executions import execution_infos
from pipeline.metadata.metrics import eval_metrics
from pipeline.metadata.properties import INPUT_EVENTS, OUTPUT_EVENTS, event_keys, iso, properties_of
from pipeline.metadata.store import require_not_empty


@dataclasses.dataclass
class ModelVersion:
    version: str | None
    pushed: bool
    destination: str | None
    present: bool  # the version folder exists in the model base path
    served: bool  # the highest version there: the one TF Serving serves
    pushed_model_id: int
    created_ms: int
    run_id: str | None = None
    model_id: int | None = None
    blessing_id: int | None = None
    blessed: bool | None = None
    evaluation_id: int | None = None
    evaluation_uri: str | None = None
    metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    serving_validation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        result = dataclasses.asdict(self)
        result["created"] = iso(result.pop("created_ms"))
        return result


def served_version(model_base_path: str) -> str | None:
    """The version TF Serving serves from the model base path: its highest numbered folder."""
    try:
        versions = [d for d in os.listdir(model_base_path)
                    if d.isascii() and d.isdigit() and os.path.isdir(os.path.join(model_base_path, d))]
    except OSError:
        return None
    return max(versions, key=int) if versions else None


def _version_present(destination: str) -> bool:
    if not destination:
        return False
    if "://" in destination:  # a remote filesystem: trust the record
        return True
    return os.path.isdir(destination)


def list_models(store: metadata_store.MetadataStore, model_base_path: str, *,
                include_unpushed: bool = False, with_metrics: bool = True,
                offset: int = 0, limit: int | None = None) -> list[ModelVersion]:
    """Pushed model versions, newest first, each with its model, blessing, evaluation metrics and serving
    validation (when the pipeline has a ServingValidator). About eight MLMD calls. `offset`, `limit`: a page of
    them, whose links alone are gathered (count_models tells how many there are)."""
    pushed = _pushed(store, include_unpushed, model_base_path)
    pushed = pushed[offset:None if limit is None else offset + limit]
    if not pushed:
        return []
    links = _Links.gather(store, pushed)
    served = served_version(model_base_path)
    return [links.model_version(artifact, served, with_metrics) for artifact in pushed]


def count_models(store: metadata_store.MetadataStore, model_base_path: str, include_unpushed: bool = False) -> int:
    return len(_pushed(store, include_unpushed, model_base_path))


def _pushed(store: metadata_store.MetadataStore, include_unpushed: bool, model_base_path: str) -> list:
    """The PushedModels, newest first; of a push, only those into this model base path (a store that several
    pipelines share holds the others' too)."""
    require_not_empty(store)
    query = "type = 'PushedModel'"
    if not include_unpushed:
        query += " AND custom_properties.pushed.int_value = 1"
    base = os.path.normpath(model_base_path) + os.sep if model_base_path else ""
    return newest_first([a for a in store.get_artifacts(list_options=metadata_store.ListOptions(filter_query=query))
                         if not base or not a.custom_properties["pushed"].int_value
                         or a.custom_properties["pushed_destination"].string_value.startswith(base)
                         or "://" in a.custom_properties["pushed_destination"].string_value])


@dataclasses.dataclass
class _Links:
    """The neighbourhood of the pushed models in the lineage graph, fetched in a few batched calls: the Pusher of
    each, its inputs (model, blessing), the Evaluator of each blessing and its evaluation, and the executions that
    consumed each pushed model (the ServingValidator, whose output is a ServingValidation)."""
    pusher_of: dict[int, int]  # pushed model id -> Pusher execution id
    consumers: dict[int, list[int]]  # pushed model id -> ids of executions that read it
    inputs_of: dict[int, dict[str, int]]  # execution id -> input key -> artifact id
    outputs_of: dict[int, list[int]]  # execution id -> output artifact ids
    evaluator_of: dict[int, int]  # blessing id -> Evaluator execution id
    evaluation_candidates: dict[int, list[int]]  # Evaluator execution id -> its output artifact ids
    artifacts: dict[int, Any]  # the blessings, evaluations and serving validations, by id
    runs: dict[int, Any]  # Pusher execution id -> ExecutionInfo (node id, run ids)

    @classmethod
    def gather(cls, store: metadata_store.MetadataStore, pushed: list) -> _Links:
        events = store.get_events_by_artifact_ids([a.id for a in pushed])
        pusher_of = {e.artifact_id: e.execution_id for e in sorted(
            (e for e in events if e.type in OUTPUT_EVENTS), key=lambda e: -e.execution_id)}
        consumers: dict[int, list[int]] = {}
        for e in events:
            if e.type in INPUT_EVENTS:
                consumers.setdefault(e.artifact_id, []).append(e.execution_id)
        inputs_of: dict[int, dict[str, int]] = {}
        outputs_of: dict[int, list[int]] = {}
        for e in store.get_events_by_execution_ids(
                sorted(set(pusher_of.values()) | {x for ids in consumers.values() for x in ids})):
            if e.type in INPUT_EVENTS:
                for key in event_keys(e):
                    inputs_of.setdefault(e.execution_id, {})[key] = e.artifact_id
            elif e.type in OUTPUT_EVENTS:
                outputs_of.setdefault(e.execution_id, []).append(e.artifact_id)
        blessing_ids = sorted({inputs_of.get(x, {}).get("model_blessing") for x in pusher_of.values()} - {None})
        evaluator_of = {e.artifact_id: e.execution_id for e in store.get_events_by_artifact_ids(blessing_ids)
                        if e.type in OUTPUT_EVENTS} if blessing_ids else {}
        evaluation_candidates: dict[int, list[int]] = {}
        if evaluator_of:
            for e in store.get_events_by_execution_ids(sorted(set(evaluator_of.values()))):
                if e.type in OUTPUT_EVENTS:
                    evaluation_candidates.setdefault(e.execution_id, []).append(e.artifact_id)
        wanted = set(blessing_ids) | {i for ids in evaluation_candidates.values() for i in ids}
        wanted |= {i for ids in consumers.values() for x in ids for i in outputs_of.get(x, [])}
        artifacts = {a.id: a for a in store.get_artifacts_by_id(sorted(wanted))} if wanted else {}
        return cls(pusher_of, consumers, inputs_of, outputs_of, evaluator_of, evaluation_candidates, artifacts,
                   execution_infos(store, set(pusher_of.values())))

    def model_version(self, artifact: Any, served: str | None, with_metrics: bool) -> ModelVersion:
        props = properties_of(artifact)
        pusher = self.pusher_of.get(artifact.id)
        pusher_inputs = self.inputs_of.get(pusher, {})
        destination = props.get("pushed_destination") or None
        version = props.get("pushed_version") or None
        is_pushed = bool(props.get("pushed"))
        present = is_pushed and _version_present(destination or "")
        model = ModelVersion(
            version=str(version) if version is not None else None, pushed=is_pushed, destination=destination,
            present=present, served=bool(present and version is not None and str(version) == served),
            pushed_model_id=artifact.id, created_ms=artifact.create_time_since_epoch,
            run_id=(self.runs[pusher].run_ids or [None])[0] if pusher in self.runs else None,
            model_id=pusher_inputs.get("model"), blessing_id=pusher_inputs.get("model_blessing"))
        blessing = self.artifacts.get(model.blessing_id)
        if blessing is not None:
            model.blessed = bool(properties_of(blessing).get("blessed"))
            for candidate in self.evaluation_candidates.get(self.evaluator_of.get(blessing.id), []):
                evaluation = self.artifacts.get(candidate)
                if evaluation is not None and evaluation.type == "ModelEvaluation":
                    model.evaluation_id, model.evaluation_uri = evaluation.id, evaluation.uri
                    if with_metrics:
                        model.metrics = eval_metrics(evaluation.uri)
        validations = [self.artifacts[i] for x in self.consumers.get(artifact.id, [])
                       for i in self.outputs_of.get(x, []) if i in self.artifacts
                       and self.artifacts[i].type == "tfxsp.ServingValidation"]
        if validations:
            newest = max(validations, key=lambda a: (a.create_time_since_epoch, a.id))
            model.serving_validation = {"artifact_id": newest.id, **properties_of(newest)}
        return model
