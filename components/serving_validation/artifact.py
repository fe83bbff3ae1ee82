"""The ServingValidation artifact: the proof (or disproof) that the model server serves a push."""
from tfx.types import artifact

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
REPORT_FILE = "report.json"


class ServingValidation(artifact.Artifact):
    """Result of probing the served model; the full report is `report.json` in its URI.

    `blessed` is 1 only when every check passed, like the blessing of the Evaluator and the
    InfraValidator; `outcome` says whether the probe passed, failed or was skipped (nothing pushed).
    """

    TYPE_NAME = "ServingValidation"
    PROPERTIES = {
        "blessed": artifact.Property(type=artifact.PropertyType.INT),
        "outcome": artifact.Property(type=artifact.PropertyType.STRING),
        "reason": artifact.Property(type=artifact.PropertyType.STRING),
        "probed_version": artifact.Property(type=artifact.PropertyType.INT),
        "rest_p50_ms": artifact.Property(type=artifact.PropertyType.FLOAT),
        "rest_p99_ms": artifact.Property(type=artifact.PropertyType.FLOAT),
        "grpc_p50_ms": artifact.Property(type=artifact.PropertyType.FLOAT),
        "grpc_p99_ms": artifact.Property(type=artifact.PropertyType.FLOAT),
        "rolled_back": artifact.Property(type=artifact.PropertyType.INT),
        "quarantine_path": artifact.Property(type=artifact.PropertyType.STRING),
    }
