"""Artifacts from ML Metadata: how many of each type, the newest of a type with its producer, one by id."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.metadata.executions import producers
from pipeline.metadata.properties import artifact_state, iso, key_properties, properties_of
from pipeline.metadata.store import EmptyStoreError, NotFoundError, require_not_empty


@dataclasses.dataclass
class ArtifactInfo:
    id: int
    type: str
    uri: str
    state: str
    created_ms: int
    properties: dict[str, Any]
    producer: dict[str, Any] | None = None  # execution_id, node_id, run_id, state, reused_by

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "uri": self.uri, "state": self.state,
                "created": iso(self.created_ms), "properties": self.properties,
                "key_properties": key_properties(self.type, self.properties),
                "producer": self.producer}


def artifact_type_counts(store: metadata_store.MetadataStore) -> dict[str, int]:
    """Artifacts per type name (types with none are left out)."""
    require_not_empty(store)
    counts: dict[str, int] = {}
    for artifact in store.get_artifacts():
        counts[artifact.type] = counts.get(artifact.type, 0) + 1
    return dict(sorted(counts.items()))


def resolve_type_name(store: metadata_store.MetadataStore, name: str) -> str:
    """The store's artifact type named `name`, case-insensitively; 'pushed-model' and
    'pushed_model' find PushedModel."""
    types = [t.name for t in store.get_artifact_types()]
    wanted = name.replace("-", "").replace("_", "").lower()
    for type_name in types:
        if type_name.lower() == wanted or type_name.replace("_", "").lower() == wanted:
            return type_name
    if not types:
        require_not_empty(store)
    raise NotFoundError(f"No artifact type {name!r} in this metadata store. Known types: "
                        f"{', '.join(sorted(types)) or 'none'}.")


def newest_first(artifacts: Iterable[mlmd.Artifact]) -> list[mlmd.Artifact]:
    return sorted(artifacts, key=lambda a: (a.create_time_since_epoch, a.id), reverse=True)


def list_artifacts(store: metadata_store.MetadataStore, type_name: str,
                   limit: int | None = 50) -> list[ArtifactInfo]:
    """Artifacts of a type, newest first, with their properties and producer."""
    type_name = resolve_type_name(store, type_name)
    artifacts = newest_first(store.get_artifacts_by_type(type_name))
    artifacts = artifacts[:limit] if limit else artifacts
    producer_of = producers(store, [a.id for a in artifacts])
    return [ArtifactInfo(id=a.id, type=a.type, uri=a.uri, state=artifact_state(a),
                         created_ms=a.create_time_since_epoch, properties=properties_of(a),
                         producer=producer_of.get(a.id)) for a in artifacts]


def newest_artifact(store: metadata_store.MetadataStore, query: str) -> mlmd.Artifact | None:
    found = store.get_artifacts(list_options=metadata_store.ListOptions(
        limit=1, order_by=metadata_store.OrderByField.CREATE_TIME, is_asc=False,
        filter_query=query))
    return found[0] if found else None


def artifact_by_id(store: metadata_store.MetadataStore, artifact_id: int) -> mlmd.Artifact:
    found = store.get_artifacts_by_id([artifact_id])
    if found:
        return found[0]
    newest = newest_artifact(store, "id > 0")
    if newest is None:
        require_not_empty(store)
        raise EmptyStoreError("The metadata store holds no artifacts yet. Run the pipeline first "
                              "(tfxsp run).")
    raise NotFoundError(f"No artifact with id {artifact_id} in this metadata store (the newest "
                        f"artifact is {newest.type} #{newest.id}; tfxsp artifacts lists them).")


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


