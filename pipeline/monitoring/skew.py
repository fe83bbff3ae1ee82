"""TFDV's training-serving skew comparison of logged requests with the training data.

The logged rows become TFDV statistics (in memory, typed as the training schema types each feature); the schema
gets a skew comparator per served feature (Jensen-Shannon divergence for numbers, L-infinity distance for
categories, as TFDV decides from the statistics: a feature of strings, or of integers marked categorical, is
categorical) with its threshold from the configuration, and `tfdv.validate_statistics` compares. Each feature's
distance is read from the anomalies' drift_skew_info; a feature whose distance is above its threshold is flagged.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipeline.modules import features

JENSEN_SHANNON = "Jensen-Shannon divergence"
L_INFINITY = "L-infinity distance"


@dataclasses.dataclass(frozen=True)
class FeatureSkew:
    name: str  # the CSV header
    key: str  # the feature's key in the examples and statistics
    measure: str  # JENSEN_SHANNON | L_INFINITY
    distance: float | None  # None: the requests held no value of it
    threshold: float

    @property
    def flagged(self) -> bool:
        return self.distance is not None and self.distance > self.threshold

    @property
    def verdict(self) -> str:
        if self.distance is None:
            return "no values"
        return "SKEWED" if self.flagged else "ok"


@dataclasses.dataclass
class SkewResult:
    features: list[FeatureSkew]
    requests: int  # rows (examples) compared
    serving_statistics: Any  # DatasetFeatureStatisticsList
    training_statistics: Any
    anomalies: Any  # tensorflow_metadata Anomalies

    @property
    def flagged(self) -> list[FeatureSkew]:
        return [f for f in self.features if f.flagged]


def serving_statistics(rows: list[dict[str, Any]], schema: Any) -> Any:
    """TFDV statistics of the rows, each feature typed as the schema types it (a logged float of an INT feature is
    rounded, as the raw serving signature rounds it)."""
    import pyarrow as pa
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.statistics import stats_impl
    from tensorflow_metadata.proto.v0 import schema_pb2

    arrays, names = [], []
    for feature in schema.feature:
        if feature.type == schema_pb2.INT:
            kind, convert = pa.int64(), _as_int
        elif feature.type == schema_pb2.FLOAT:
            kind, convert = pa.float32(), _as_float
        else:
            kind, convert = pa.binary(), _as_bytes
        values = []
        for row in rows:
            value = convert(row.get(feature.name))
            values.append(None if value is None else [value])
        arrays.append(pa.array(values, type=pa.list_(kind)))
        names.append(feature.name)
    batch = pa.RecordBatch.from_arrays(arrays, names)
    return stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions(schema=schema))


def compare(rows: list[dict[str, Any]], training_statistics: Any, schema: Any, contract: features.DatasetContract,
            numeric_threshold: float, categorical_threshold: float,
            feature_thresholds: Mapping[str, float]) -> SkewResult:
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = _copy(schema)
    served = {c.key: c for c in contract.features}
    # Only what clients send is compared, and has statistics: the label and ignored columns are not served.
    served_schema = _copy(schema)
    for feature in list(served_schema.feature):
        if feature.name not in served:
            served_schema.feature.remove(feature)
    statistics = serving_statistics(rows, served_schema)
    categorical = _categorical_features(training_statistics)
    comparisons = []
    for feature in schema.feature:
        if feature.name not in served:
            continue
        column = served[feature.name]
        threshold = feature_thresholds.get(column.name, feature_thresholds.get(column.key))
        if feature.name in categorical or feature.type == schema_pb2.BYTES:
            threshold = categorical_threshold if threshold is None else threshold
            feature.skew_comparator.infinity_norm.threshold = threshold
            comparisons.append((column, L_INFINITY, threshold))
        else:
            threshold = numeric_threshold if threshold is None else threshold
            feature.skew_comparator.jensen_shannon_divergence.threshold = threshold
            comparisons.append((column, JENSEN_SHANNON, threshold))
    anomalies = tfdv.validate_statistics(statistics=training_statistics, schema=schema,
                                         serving_statistics=statistics)
    distances = _distances(anomalies)
    present = _features_with_values(statistics)
    result = [FeatureSkew(column.name, column.key, measure,
                          distances.get((column.key, measure)) if column.key in present else None, threshold)
              for column, measure, threshold in comparisons]
    return SkewResult(result, len(rows), statistics, training_statistics, anomalies)


def _copy(message: Any) -> Any:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _categorical_features(statistics: Any) -> set[str]:
    names = set()
    for dataset in statistics.datasets:
        for feature in dataset.features:
            if feature.WhichOneof("stats") == "string_stats":
                names.add(feature.path.step[-1] if feature.path.step else feature.name)
    return names


def _features_with_values(statistics: Any) -> set[str]:
    names = set()
    for dataset in statistics.datasets:
        for feature in dataset.features:
            stats = getattr(feature, feature.WhichOneof("stats"))
            if stats.common_stats.num_non_missing > 0:
                names.add(feature.path.step[-1] if feature.path.step else feature.name)
    return names


def _distances(anomalies: Any) -> dict[tuple[str, str], float]:
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    kinds = {anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: JENSEN_SHANNON,
             anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: L_INFINITY}
    distances = {}
    for info in anomalies.drift_skew_info:
        key = info.path.step[-1]
        for measurement in info.skew_measurements:
            if measurement.type in kinds:
                distances[(key, kinds[measurement.type])] = measurement.value
    return distances


def _as_int(value: Any) -> int | None:
    if value is None or isinstance(value, str):
        return None
    return int(round(float(value)))  # as serving_raw hands an integer column to Transform (signatures.py)


def _as_float(value: Any) -> float | None:
    if value is None or isinstance(value, str):
        return None
    return float(value)


def _as_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a number column the schema types as text (numbers with NA markers)
    return str(value).encode("utf-8")
