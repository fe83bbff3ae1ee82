"""What a served version was trained on, found through ML Metadata lineage: the PushedModel of the version, traced
upstream (pipeline/metadata/lineage.py) to the StatisticsGen statistics and the SchemaGen schema it descends from,
and the dataset contract the Trainer got (which column is which feature)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from ml_metadata import metadata_store

from pipeline.metadata import lineage, trainer_inputs
from pipeline.metadata.store import NotFoundError
from pipeline.modules import features

TRAIN_SPLIT = "train"


@dataclasses.dataclass
class TrainingData:
    version: str
    pushed_model_id: int
    statistics_id: int
    schema_id: int
    statistics_path: str  # the train split's FeatureStats.pb
    schema_path: str
    contract: features.DatasetContract


def find(store: metadata_store.MetadataStore, version: int) -> TrainingData:
    """The training data of pushed version `version`. Raises NotFoundError with what is missing."""
    pushed, _ = lineage.resolve_target(store, f"version:{version}", "")
    graph = lineage.trace(store, pushed.id, "upstream")

    def nearest(type_name: str):
        nodes = sorted(graph.of_type(type_name), key=lambda n: (n.distance, -(n.id or 0)))
        return nodes[0] if nodes else None

    statistics, schema = nearest("ExampleStatistics"), nearest("Schema")
    trainers = sorted(graph.executions("Trainer"), key=lambda n: n.distance)
    missing = [what for what, node in (("StatisticsGen statistics", statistics), ("a SchemaGen schema", schema),
                                       ("a Trainer execution", trainers[0] if trainers else None)) if node is None]
    if missing:
        raise NotFoundError(f"Pushed version {version} (PushedModel #{pushed.id}) has no lineage back to "
                            f"{' and '.join(missing)} in this metadata store: it cannot be compared with its "
                            "training data.")
    statistics_path = _stats_file(statistics.uri)
    schema_path = os.path.join(schema.uri, "schema.pbtxt")
    for what, path in (("statistics", statistics_path), ("schema", schema_path)):
        if not os.path.isfile(path):
            raise NotFoundError(f"The training {what} of version {version} are recorded at {path}, which does "
                                "not exist any more.")
    return TrainingData(str(version), pushed.id, statistics.id, schema.id, statistics_path, schema_path,
                        trainer_inputs.contract_of(trainers[0].properties))


def _stats_file(uri: str) -> str:
    split = os.path.join(uri, f"Split-{TRAIN_SPLIT}")
    for name in ("FeatureStats.pb", "stats_tfrecord"):  # TFX 1.x binary proto; the older TFRecord form
        if os.path.isfile(os.path.join(split, name)):
            return os.path.join(split, name)
    return os.path.join(split, "FeatureStats.pb")


def load_statistics(path: str) -> Any:
    import tensorflow_data_validation as tfdv
    if path.endswith("FeatureStats.pb"):
        return tfdv.load_stats_binary(path)
    return tfdv.load_statistics(path)


def load_schema(path: str) -> Any:
    import tensorflow_data_validation as tfdv
    return tfdv.load_schema_text(path)
