"""The ServingValidation artifact: the proof (or disproof) that the model server serves a push."""
from tfx.types import artifact

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
INCONCLUSIVE = "inconclusive"  # could not validate: the server, not the model, failed the probe
REPORT_FILE = "report.json"


class ServingValidation(artifact.Artifact):
    """Result of probing the served model; the full report is `report.json` in its URI.

    Its figures are custom properties, as the Evaluator's and InfraValidator's blessings have them
    (and as KFP requires of a custom artifact type): `blessed` (int, 1 only when every check passed),
    `outcome` (passed / failed / inconclusive, i.e. could not validate / skipped, i.e. nothing pushed),
    `reason`, `fault` (when inconclusive: server, superseded or another push), `probed_version`,
    `rest_p50_ms`, `rest_p99_ms`, `grpc_p50_ms`, `grpc_p99_ms`, `rolled_back` and `quarantine_path`.
    The namespaced TYPE_NAME is what KFP needs to compile a custom type.
    """

    TYPE_NAME = "tfxsp.ServingValidation"
