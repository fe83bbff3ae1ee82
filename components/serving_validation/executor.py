"""ServingValidator's executor: probe, compare, measure, and roll back a version that fails.

A failed probe does not raise: TFX publishes no outputs of a failed execution, and the proof of the
failure (blessed = 0, the reason, the rollback) must be in ML Metadata. The run then fails on it,
as it does when the Evaluator does not bless. Errors in the component itself (no eval split, a
model without the configured signatures) do raise.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import Artifact, artifact_utils

from components.serving_validation import expected, probes
from components.serving_validation.artifact import FAILED, PASSED, REPORT_FILE, SKIPPED


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
           exec_properties: dict[str, Any]) -> None:
        pushed_model = artifact_utils.get_single_instance(input_dict["pushed_model"])
        validation = artifact_utils.get_single_instance(output_dict["validation"])
        if not pushed_model.get_int_custom_property("pushed"):
            _record(validation, {"outcome": SKIPPED, "reason": "skipped: not pushed"})
            logging.info("Serving validation skipped: Pusher did not push.")
            return

        version = int(pushed_model.get_string_custom_property("pushed_version"))
        destination = pushed_model.get_string_custom_property("pushed_destination")
        report = validate(
            version=version,
            model=artifact_utils.get_single_instance(input_dict["model"]),
            examples=artifact_utils.get_single_instance(input_dict["examples"]),
            params=exec_properties)
        if report["outcome"] == FAILED:
            logging.error("Serving validation FAILED: %s", report["reason"])
            if exec_properties["rollback"]:
                report["rollback"] = roll_back(destination, version, exec_properties)
        _record(validation, report)


def validate(version: int, model: Artifact, examples: Artifact,
             params: dict[str, Any]) -> dict[str, Any]:
    """Runs every check against the live server; returns the report (outcome passed or failed)."""
    client = probes.ServingClient(params["model_name"], params["rest_url"], params["grpc_target"])
    report: dict[str, Any] = {"probed_version": version, "model_name": params["model_name"],
                              "rest_url": params["rest_url"], "grpc_target": params["grpc_target"],
                              "checks": []}
    try:
        probe_inputs = expected.probe_inputs(model, examples, list(params["signature_names"]),
                                             params["num_examples"],
                                             json.loads(params.get("raw_input_features") or "{}"))
        probes.wait_until_served(client, version, params["load_deadline_s"])
        report["checks"].append({"check": "model status (REST and gRPC)", "ok": True})
        probes.check_metadata(client, version, list(params["signature_names"]))
        report["checks"].append({"check": "GetModelMetadata", "ok": True})
        for probe in probe_inputs:
            report["checks"] += probes.check_predictions(client, version, probe,
                                                         params["tolerance"])
        report["latency"] = _measure_latency(client, version, probe_inputs[0], params)
        report.update(outcome=PASSED, reason="all checks passed")
    except probes.ProbeFailure as failure:
        report["checks"].append({"check": failure.check, "endpoint": failure.endpoint,
                                 "ok": False, "detail": failure.detail})
        report.update(outcome=FAILED, reason=str(failure))
    finally:
        client.close()
    return report


def _measure_latency(client: probes.ServingClient, version: int, probe: probes.ProbeInput,
                     params: dict[str, Any]) -> dict[str, dict[str, float]]:
    try:
        latency = probes.measure_latency(client, version, probe, params["latency_requests"])
    except Exception as e:
        raise probes.ProbeFailure("latency", version, client.rest_url, str(e)[:300]) from None
    for api, figures in latency.items():
        for quantile, budget in (("p50_ms", params["max_p50_ms"]), ("p99_ms", params["max_p99_ms"])):
            if figures[quantile] > budget:
                endpoint = client.model_url(version) if api == "rest" else client.grpc_target
                raise probes.ProbeFailure(
                    f"latency ({api})", version, endpoint,
                    f"{quantile[:3]} {figures[quantile]:.1f} ms is over the budget of {budget:g} ms")
    return latency


def roll_back(destination: str, version: int, params: dict[str, Any]) -> dict[str, Any]:
    """Moves the failed version into `<model base path>.quarantine/` and waits until the server no
    longer serves it (and serves the previous version, when there is one)."""
    base_path = os.path.dirname(destination.rstrip("/"))
    quarantine = os.path.join(base_path + ".quarantine", os.path.basename(destination.rstrip("/")))
    if os.path.exists(quarantine):
        quarantine += f".{int(time.time())}"
    os.makedirs(os.path.dirname(quarantine), exist_ok=True)
    shutil.move(destination, quarantine)
    remaining = sorted(int(d) for d in os.listdir(base_path) if d.isdigit())
    previous = remaining[-1] if remaining else None
    logging.warning("Rolled back: moved version %d to %s; the server goes back to %s", version,
                    quarantine, f"version {previous}" if previous else "no version")
    result = {"quarantine_path": quarantine, "previous_version": previous}
    client = probes.ServingClient(params["model_name"], params["rest_url"], params["grpc_target"])
    give_up = time.monotonic() + params["load_deadline_s"]
    try:
        while True:
            try:
                states = client.rest_status()
            except Exception as e:
                states, result["status_error"] = None, str(e)[:300]
            back = states is not None and states.get(version) != "AVAILABLE" and (
                previous is None or states.get(previous) == "AVAILABLE")
            if back or time.monotonic() >= give_up:
                result["server_back_on_previous"] = back
                result["status_after"] = {str(v): s for v, s in (states or {}).items()}
                return result
            time.sleep(0.5)
    finally:
        client.close()


def _record(validation: Artifact, report: dict[str, Any]) -> None:
    """Writes report.json into the artifact's URI and the key figures into its properties."""
    os.makedirs(validation.uri, exist_ok=True)
    with open(os.path.join(validation.uri, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    validation.set_string_custom_property("outcome", report["outcome"])
    validation.set_int_custom_property("blessed", int(report["outcome"] == PASSED))
    validation.set_string_custom_property("reason", report["reason"])
    if "probed_version" in report:
        validation.set_int_custom_property("probed_version", report["probed_version"])
    for api, figures in report.get("latency", {}).items():
        validation.set_float_custom_property(f"{api}_p50_ms", figures["p50_ms"])
        validation.set_float_custom_property(f"{api}_p99_ms", figures["p99_ms"])
    rollback = report.get("rollback")
    validation.set_int_custom_property("rolled_back", int(bool(rollback)))
    if rollback:
        validation.set_string_custom_property("quarantine_path", rollback["quarantine_path"])
