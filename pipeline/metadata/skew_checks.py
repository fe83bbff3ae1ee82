"""The skew checks `tfxsp monitor` recorded (pipeline/monitoring/record.py): one ServingSkewReport artifact per
check, its verdict, distances and counts in custom properties; read for the dashboard and `tfxsp models`."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from ml_metadata import errors, metadata_store

from pipeline.metadata.properties import SKEW_REPORT_TYPE, iso


@dataclasses.dataclass
class SkewCheck:
    report_id: int
    model_name: str
    version: str
    requests: int  # logged requests (examples) compared
    skewed: list[str]  # the features over their threshold
    distances: dict[str, float | None]
    thresholds: dict[str, float]
    logs: str  # the request-log prefix that was read
    report_dir: str
    checked_ms: int

    def to_dict(self) -> dict[str, Any]:
        result = dataclasses.asdict(self)
        result["checked"] = iso(result.pop("checked_ms"))
        return result


def skew_checks(store: metadata_store.MetadataStore, model_name: str, version: str | None = None) -> list[SkewCheck]:
    """The checks of `model_name` (of one version when given), newest first."""
    try:
        reports = store.get_artifacts_by_type(SKEW_REPORT_TYPE)
    except errors.NotFoundError:  # no check was ever recorded in this store
        return []
    checks = [_check(a) for a in reports]
    checks = [c for c in checks if c.model_name == model_name and (version is None or c.version == version)]
    return sorted(checks, key=lambda c: (c.checked_ms, c.report_id), reverse=True)


def latest_by_version(checks: list[SkewCheck]) -> dict[str, SkewCheck]:
    """version -> its newest check (`checks` newest first, as skew_checks returns them)."""
    latest: dict[str, SkewCheck] = {}
    for check in checks:
        latest.setdefault(check.version, check)
    return latest


def _check(artifact) -> SkewCheck:
    values = artifact.custom_properties

    def text(key: str) -> str:
        return values[key].string_value if key in values else ""

    def number(key: str) -> int:
        return values[key].int_value if key in values else 0

    return SkewCheck(report_id=artifact.id, model_name=text("model_name"), version=text("version"),
                     requests=number("requests"), skewed=[f for f in text("skewed_features").split(",") if f],
                     distances=json.loads(text("distances") or "{}"), thresholds=json.loads(text("thresholds") or "{}"),
                     logs=text("logs"), report_dir=artifact.uri, checked_ms=artifact.create_time_since_epoch)
