"""What `tfxsp predict` scores with: a pushed version, the dataset contract its Trainer got (which columns it takes,
the label, the task, the missing markers) and, for classification, its classes in the order of the model's
probabilities (the label vocabulary of the Transform graph it was trained with); all found through ML Metadata
lineage, so that a version is read as it was trained, whatever tfxsp.toml says today."""
from __future__ import annotations

import dataclasses

from ml_metadata import metadata_store

from pipeline.metadata import trainer_inputs
from pipeline.metadata.store import NotFoundError
from pipeline.modules import features


@dataclasses.dataclass(frozen=True)
class Target:
    version: int
    directory: str  # the version's SavedModel folder under the model base path
    contract: features.DatasetContract
    class_names: list[str]  # classification: class id -> the label's value; regression: []

    @property
    def classification(self) -> bool:
        return self.contract.task == features.CLASSIFICATION


def describe(store: metadata_store.MetadataStore, version: int, directory: str) -> Target:
    """The Target of a pushed version. Raises NotFoundError when its lineage lacks what scoring needs."""
    found = trainer_inputs.find(store, version)
    contract = found.contract
    if contract.task != features.CLASSIFICATION:
        return Target(version, directory, contract, [])
    if not found.transform_graph_uri:
        raise NotFoundError(f"Pushed version {version} has no lineage back to a Transform graph, whose label "
                            "vocabulary names its classes.")
    import tensorflow_transform as tft
    try:
        vocabulary = tft.TFTransformOutput(found.transform_graph_uri).vocabulary_by_name(contract.label.vocabulary)
    except (OSError, ValueError) as e:  # the folder was removed, or the vocabulary is not in it
        raise NotFoundError(f"The label vocabulary of version {version} cannot be read from its Transform graph "
                            f"{found.transform_graph_uri}: {e}") from None
    names = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in vocabulary]
    return Target(version, directory, contract, names)
