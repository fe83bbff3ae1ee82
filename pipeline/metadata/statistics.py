"""StatisticsGen's statistics and ExampleValidator's anomalies, read from their output folders without TensorFlow.

StatisticsGen (TFX 1.16) writes one `Split-<name>/FeatureStats.pb` per split, a binary DatasetFeatureStatisticsList;
ExampleValidator writes `Split-<name>/SchemaDiff.pb`, a binary Anomalies proto. Both protos come from
tensorflow_metadata, which needs protobuf alone.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

HISTOGRAM_BUCKETS = 10  # StatisticsGen's standard histogram of a numeric feature


@dataclasses.dataclass
class FeatureSummary:
    name: str
    type: str  # INT | FLOAT | STRING | BYTES | STRUCT
    count: int  # examples with a value
    missing: float  # share of the examples without one (0..1)
    mean: float | None = None
    std: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    unique: int | None = None  # distinct values of a string feature
    top: list[tuple[str, float]] = dataclasses.field(default_factory=list)  # most frequent values, with counts
    histogram: list[tuple[float, float, float]] = dataclasses.field(default_factory=list)  # (low, high, count)

    def to_dict(self) -> dict[str, Any]:
        result = dataclasses.asdict(self)
        result["top"] = [{"value": v, "count": c} for v, c in self.top]
        result["histogram"] = [{"low": lo, "high": hi, "count": c} for lo, hi, c in self.histogram]
        return result


@dataclasses.dataclass
class SplitStatistics:
    split: str
    examples: int
    features: list[FeatureSummary]

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "examples": self.examples, "features": [f.to_dict() for f in self.features]}


@dataclasses.dataclass
class Anomaly:
    split: str
    feature: str
    severity: str
    short: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def split_dirs(uri: str, file_name: str) -> dict[str, str]:
    """split name -> the path of `file_name` in its Split-<name> folder, for the splits that have one."""
    try:
        entries = sorted(os.listdir(uri))
    except OSError:
        return {}
    found = {}
    for entry in entries:
        path = os.path.join(uri, entry, file_name)
        if entry.startswith("Split-") and os.path.isfile(path):
            found[entry[len("Split-"):]] = path
    return found


def read_statistics(uri: str) -> list[SplitStatistics]:
    """Every split's per-feature summary from an ExampleStatistics artifact's folder ([] when it holds none).
    Raises ValueError when a file is there but is not a statistics proto."""
    result = []
    for split, path in split_dirs(uri, "FeatureStats.pb").items():
        stats_list = statistics_pb2.DatasetFeatureStatisticsList()
        try:
            with open(path, "rb") as f:
                stats_list.ParseFromString(f.read())
        except Exception as e:  # protobuf's DecodeError, or an unreadable file
            raise ValueError(f"{path} is not a readable statistics file: {e}") from None
        for dataset in stats_list.datasets:
            result.append(SplitStatistics(split=split, examples=int(dataset.num_examples),
                                          features=[_feature(f, dataset.num_examples) for f in dataset.features]))
    return result


def _feature(feature: Any, examples: int) -> FeatureSummary:
    name = ".".join(feature.path.step) if feature.HasField("path") else feature.name
    kind = statistics_pb2.FeatureNameStatistics.Type.Name(feature.type)
    if feature.HasField("num_stats"):
        num = feature.num_stats
        common = num.common_stats
        summary = FeatureSummary(name=name, type=kind, count=int(common.num_non_missing),
                                 missing=_missing_share(common, examples), mean=num.mean, std=num.std_dev,
                                 minimum=num.min, maximum=num.max)
        standard = [h for h in num.histograms if h.type == statistics_pb2.Histogram.STANDARD]
        if standard:
            summary.histogram = [(b.low_value, b.high_value, b.sample_count) for b in standard[0].buckets]
        return summary
    if feature.HasField("string_stats"):
        strings = feature.string_stats
        common = strings.common_stats
        return FeatureSummary(name=name, type=kind, count=int(common.num_non_missing),
                              missing=_missing_share(common, examples), unique=int(strings.unique),
                              top=[(v.value, v.frequency) for v in strings.top_values[:5]])
    return FeatureSummary(name=name, type=kind, count=0, missing=1.0 if examples else 0.0)


def _missing_share(common: Any, examples: int) -> float:
    total = common.num_non_missing + common.num_missing
    return float(common.num_missing) / total if total else (1.0 if examples else 0.0)


def read_anomalies(uri: str) -> list[Anomaly]:
    """ExampleValidator's anomalies from an ExampleAnomalies artifact's folder, every split ([] when none)."""
    found = []
    for split, path in split_dirs(uri, "SchemaDiff.pb").items():
        anomalies = anomalies_pb2.Anomalies()
        try:
            with open(path, "rb") as f:
                anomalies.ParseFromString(f.read())
        except Exception as e:
            raise ValueError(f"{path} is not a readable anomalies file: {e}") from None
        for feature, info in sorted(anomalies.anomaly_info.items()):
            found.append(Anomaly(split=split, feature=feature,
                                 severity=anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
                                 short=info.short_description, description=info.description))
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            found.append(Anomaly(split=split, feature="(dataset)",
                                 severity=anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
                                 short=info.short_description, description=info.description))
    return found
