"""The dataset contract (TFX module file): what the pipeline does with each column of the CSV, as Transform, the
Trainer and the serving signatures read it.

The contract is decided from the data before the pipeline runs (pipeline/dataset/roles.py, from TFDV's statistics;
`tfxsp init` writes the decisions into tfxsp.toml for a person to read and edit) and reaches the module files as
JSON in their `custom_config`, so that TFX's cache key sees every decision and a compiled Kubeflow pipeline carries
them unchanged.

This folder holds only the module files that TFX packages for Transform and Trainer (TFX hashes every .py file
here, so an edit to any of them re-runs those components instead of reusing cache).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

NUMERIC, CATEGORICAL, IGNORED = "numeric", "categorical", "ignored"
CLASSIFICATION, REGRESSION = "classification", "regression"

# What a missing categorical value becomes before its vocabulary is computed (a value no CSV cell holds).
MISSING_CATEGORY = "__missing__"
# Out-of-vocabulary values get one extra bucket, so a new category at serving time is not an error.
NUM_OOV_BUCKETS = 1
# The weight of an example in training and evaluation: 0 for a row without a label.
WEIGHT_KEY = "__weight__"
LABEL_XF = "__label__"
# How the serving signature hands Transform a missing integer where the raw feature cannot lack a value (a column
# that had a value in every training row): a value no CSV holds, read as missing.
INT_MISSING = -(2**63)


@dataclasses.dataclass(frozen=True)
class Column:
    name: str  # the header as a person reads it; the raw serving signature's input name
    key: str  # the feature name in the examples (as CsvExampleGen names it)
    internal: str  # a name safe for TensorFlow ops and Keras layers, unique in the dataset
    dtype: str  # the examples' type: int, float or string
    role: str  # numeric, categorical, ignored (or label)
    reason: str = ""
    # A string column of numbers (with missing values written as text, e.g. NA): Transform parses it.
    parse_numbers: bool = False
    # Categorical: the number of values in its vocabulary (the most frequent ones), 0 = all.
    max_categories: int = 0

    @property
    def transformed(self) -> str:
        return self.internal + "_xf"

    @property
    def vocabulary(self) -> str:
        return self.internal + "_vocab"


@dataclasses.dataclass(frozen=True)
class DatasetContract:
    label: Column
    task: str  # classification | regression
    columns: list[Column]  # the features and the ignored columns, in header order
    slice_by: list[str]  # column names the Evaluator also slices by
    missing_markers: list[str]  # text that means "missing" (besides an empty field)
    # The naive baseline on the data: the majority class's share (classification), the label's standard deviation
    # (regression; the RMSE of always predicting the mean).
    baseline: float = 0.0
    num_classes: int = 0  # classification: how many classes the labelled rows hold
    # A few rows of the CSV as its cells' text by column name: the Trainer writes them into every export as TF
    # Serving warmup requests (warmup.py).
    sample_rows: list[dict[str, str]] = dataclasses.field(default_factory=list)
    rows: int = 0  # the data rows the contract was decided on (the eval split is sized from it)

    @property
    def features(self) -> list[Column]:
        return [c for c in self.columns if c.role in (NUMERIC, CATEGORICAL)]

    @property
    def numeric(self) -> list[Column]:
        return [c for c in self.columns if c.role == NUMERIC]

    @property
    def categorical(self) -> list[Column]:
        return [c for c in self.columns if c.role == CATEGORICAL]

    @property
    def ignored(self) -> list[Column]:
        return [c for c in self.columns if c.role == IGNORED]

    def by_name(self, name: str) -> Column:
        return next(c for c in [self.label, *self.columns] if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetContract:
        return cls(label=Column(**data["label"]), task=data["task"],
                   columns=[Column(**c) for c in data["columns"]], slice_by=list(data["slice_by"]),
                   missing_markers=list(data["missing_markers"]), baseline=float(data.get("baseline", 0.0)),
                   num_classes=int(data.get("num_classes", 0)),
                   sample_rows=[dict(row) for row in data.get("sample_rows", [])], rows=int(data.get("rows", 0)))


def contract_of(custom_config: dict[str, Any] | None) -> DatasetContract:
    """The contract a module file got in its custom_config."""
    if not custom_config or "dataset" not in custom_config:
        raise ValueError("custom_config holds no 'dataset' contract: build the pipeline with pipeline/runners, "
                         "which decides it from the data")
    return DatasetContract.from_dict(custom_config["dataset"])


def internal_names(names: list[str]) -> list[str]:
    """Names safe for TensorFlow ops and Keras layers ([a-z0-9_], not starting with a digit), one per column."""
    taken: set[str] = set()
    result = []
    for name in names:
        base = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "column"
        if base[0].isdigit():
            base = "c_" + base
        candidate, n = base, 2
        while candidate in taken or candidate in (WEIGHT_KEY, LABEL_XF):
            candidate, n = f"{base}_{n}", n + 1
        taken.add(candidate)
        result.append(candidate)
    return result
