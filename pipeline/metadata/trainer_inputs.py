"""What the Trainer that made a pushed version was given, found through ML Metadata lineage: the dataset contract
(its custom_config: which column is which feature) and the Transform graph (whose label vocabulary names the
classes). `tfxsp monitor` and `tfxsp predict` read a pushed version this way, whatever tfxsp.toml says today."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from ml_metadata import metadata_store

from pipeline.metadata import lineage
from pipeline.metadata.store import NotFoundError
from pipeline.modules import features


@dataclasses.dataclass
class TrainerInputs:
    version: str
    pushed_model_id: int
    contract: features.DatasetContract
    transform_graph_uri: str  # "" when the lineage holds no TransformGraph
    upstream: lineage.Lineage  # the pushed version traced upstream, for callers that need more of it


def find(store: metadata_store.MetadataStore, version: int) -> TrainerInputs:
    """The Trainer inputs of pushed version `version`. Raises NotFoundError with what is missing."""
    pushed, _ = lineage.resolve_target(store, f"version:{version}", "")
    graph = lineage.trace(store, pushed.id, "upstream")
    trainers = sorted(graph.executions("Trainer"), key=lambda n: n.distance)
    if not trainers:
        raise NotFoundError(f"Pushed version {version} (PushedModel #{pushed.id}) has no lineage back to a Trainer "
                            "execution in this metadata store.")
    graphs = sorted(graph.of_type("TransformGraph"), key=lambda n: (n.distance, -(n.id or 0)))
    return TrainerInputs(str(version), pushed.id, contract_of(trainers[0].properties),
                         graphs[0].uri if graphs else "", graph)


def contract_of(properties: dict[str, Any]) -> features.DatasetContract:
    """The dataset contract in a Trainer execution's custom_config property."""
    custom_config = properties.get("custom_config") or {}
    try:
        return features.contract_of(json.loads(custom_config) if isinstance(custom_config, str) else custom_config)
    except (ValueError, TypeError) as e:
        raise NotFoundError(f"The Trainer's custom_config holds no dataset contract: {e}") from None
