"""ServingValidator's executor: probe, compare, measure, and roll back a version that fails.

Three outcomes: passed; failed, when the model is at fault (wrong answers, missing signatures, a load that failed,
over the latency budget), and then the version is rolled back; inconclusive ("could not validate"), when the probe
proves nothing against the model: the server did not answer, was overloaded, did not load the version in time, or
the version was superseded by a newer push, or its folder holds another push of the same version number. An
inconclusive version stays where it is. A superseded version is never rolled back, even when it failed.

A failed or inconclusive probe does not raise: TFX publishes no outputs of a failed execution, and the proof (blessed
= 0, the reason, the rollback) must be in ML Metadata. The run then fails on it, as it does when the Evaluator does
not bless. Errors in the component itself (no eval split, a model without the configured signatures) do raise.
"""
from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import shutil
import time
from typing import Any

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import Artifact, artifact_utils
from tfx.utils import path_utils

from components.serving_validation import expected, probes
from components.serving_validation.artifact import FAILED, INCONCLUSIVE, PASSED, REPORT_FILE, SKIPPED

# Why a probe that did not pass proves nothing against the model, beyond probes.SERVER and probes.SUPERSEDED.
OTHER_PUSH = "another push"
# What the trainer writes beside the SavedModel with export_tflite (pipeline/modules/tflite_export.py), and what a
# model server started with --prefer_tflite_model serves instead of the SavedModel.
TFLITE_MODEL_FILE = "model.tflite"


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
            params=exec_properties, destination=destination)
        if report["outcome"] == FAILED:
            logging.error("Serving validation FAILED: %s", report["reason"])
            if exec_properties["rollback"]:
                newer = newer_versions(destination, version)
                if newer:
                    report["rollback_skipped"] = (f"version {version} was superseded by version {newer[-1]}, "
                                                  "which this run leaves to its own validation")
                    logging.warning("Not rolled back: %s", report["rollback_skipped"])
                else:
                    report["rollback"] = roll_back(destination, version, exec_properties)
        elif report["outcome"] == INCONCLUSIVE:
            logging.warning("Serving validation could not validate version %d, which stays where it is: %s",
                            version, report["reason"])
        _record(validation, report)


def validate(version: int, model: Artifact, examples: Artifact,
             params: dict[str, Any], destination: str = "") -> dict[str, Any]:
    """Runs every check against the live server; returns the report (outcome passed, failed or inconclusive, and
    for inconclusive the `fault`: probes.SERVER, probes.SUPERSEDED or OTHER_PUSH)."""
    client = probes.ServingClient(params["model_name"], params["rest_url"], params["grpc_target"])
    report: dict[str, Any] = {"probed_version": version, "model_name": params["model_name"],
                              "rest_url": params["rest_url"], "grpc_target": params["grpc_target"],
                              "checks": []}
    served_format, signature_names = probed_format(model, params)
    report["served_format"] = served_format
    try:
        probe_inputs = expected.probe_inputs(model, examples, signature_names,
                                             params["num_examples"],
                                             json.loads(params.get("raw_input_features") or "{}"))
        if destination:
            _check_pushed_folder(destination, version, model)
        probes.wait_until_served(client, version, params["load_deadline_s"])
        report["checks"].append({"check": "model status (REST and gRPC)", "ok": True})
        probes.check_metadata(client, version, signature_names)
        report["checks"].append({"check": "GetModelMetadata", "ok": True})
        for probe in probe_inputs:
            report["checks"] += probes.check_predictions(client, version, probe,
                                                         params["tolerance"])
        report["latency"] = _measure_latency(client, version, probe_inputs[0], params)
        report.update(outcome=PASSED, reason="all checks passed")
    except probes.ProbeFailure as failure:
        fault = failure.fault
        newer = newer_versions(destination, version) if destination else []
        if fault == probes.SERVER and newer:
            fault = probes.SUPERSEDED
        report["checks"].append({"check": failure.check, "endpoint": failure.endpoint,
                                 "ok": False, "detail": failure.detail, "fault": fault})
        if fault == probes.MODEL:
            report.update(outcome=FAILED, reason=str(failure))
        else:
            superseded = (f"version {version} was superseded by version {newer[-1]}; "
                          if fault == probes.SUPERSEDED and newer else "")
            report.update(outcome=INCONCLUSIVE, fault=fault,
                          reason=f"could not validate version {version}: {superseded}{failure}")
    finally:
        client.close()
    return report


def probed_format(model: Artifact, params: dict[str, Any]) -> tuple[str, list[str]]:
    """What the server serves of the pushed version, "tflite" or "saved_model", and the signatures to probe: with
    `tflite_signature_names` (the server prefers TF Lite) and a model.tflite beside the SavedModel, those that the
    TF Lite model serves; else the SavedModel's `signature_names`. Either way the served answers are compared with
    the in-process SavedModel's."""
    tflite_names = list(params.get("tflite_signature_names") or [])
    if tflite_names and os.path.isfile(os.path.join(path_utils.serving_model_path(model.uri), TFLITE_MODEL_FILE)):
        return "tflite", tflite_names
    return "saved_model", list(params["signature_names"])


def newer_versions(destination: str, version: int) -> list[int]:
    """The versions above `version` in the model base path of `destination` (pushed after it), in order."""
    base_path = os.path.dirname(destination.rstrip("/"))
    try:
        names = os.listdir(base_path)
    except OSError:
        return []
    return sorted(v for v in (int(d) for d in names if d.isdigit() and d.isascii()) if v > version)


def _check_pushed_folder(destination: str, version: int, model: Artifact) -> None:
    """The pushed folder must hold this run's model: TFX's Pusher names a version by the second it pushes, and
    when that folder exists already (another run pushed in the same second) it keeps the other model and still
    reports the push. Compared by the SavedModel's graph and its variables' index (which holds a checksum of
    every variable), files Pusher copies byte for byte."""
    import tensorflow as tf
    from tfx.utils import path_utils
    ours = path_utils.serving_model_path(model.uri)
    if not tf.io.gfile.exists(os.path.join(ours, "saved_model.pb")):
        return  # not a SavedModel (TF Lite): nothing to compare by
    if not tf.io.gfile.exists(os.path.join(destination, "saved_model.pb")):
        raise probes.ProbeFailure("pushed folder", version, destination,
                                  "the folder Pusher reported holds no saved_model.pb (it was removed or replaced)",
                                  OTHER_PUSH)
    if _identity(ours) != _identity(destination):
        raise probes.ProbeFailure("pushed folder", version, destination,
                                  "the folder holds another model than this run's: another push of the same "
                                  "version number (Pusher keeps the folder that exists)", OTHER_PUSH)


def _identity(saved_model_dir: str) -> list[str | None]:
    import tensorflow as tf
    digests = []
    for name in ("saved_model.pb", os.path.join("variables", "variables.index")):
        path = os.path.join(saved_model_dir, name)
        if not tf.io.gfile.exists(path):
            digests.append(None)
            continue
        with tf.io.gfile.GFile(path, "rb") as f:
            digests.append(hashlib.sha256(f.read()).hexdigest())
    return digests


def _measure_latency(client: probes.ServingClient, version: int, probe: probes.ProbeInput,
                     params: dict[str, Any]) -> dict[str, dict[str, float]]:
    try:
        latency = probes.measure_latency(client, version, probe, params["latency_requests"])
    except Exception as e:
        raise probes.ProbeFailure("latency", version, client.rest_url, str(e)[:300], probes.fault_of(e)) from None
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
    quarantine = _new_quarantine_folder(base_path, os.path.basename(destination.rstrip("/")))
    try:
        os.rename(destination, quarantine)  # replaces the empty folder, atomically
    except OSError as e:
        if e.errno != errno.EXDEV:
            os.rmdir(quarantine)
            raise
        shutil.copytree(destination, quarantine, dirs_exist_ok=True)  # another file system
        shutil.rmtree(destination)
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


def _new_quarantine_folder(base_path: str, name: str) -> str:
    """A new empty folder `<base_path>.quarantine/<name>`, or `<name>.1`, `<name>.2`, ... when that one exists.
    mkdir fails on a name that exists, so two rollbacks of the same version number, even at the same moment and
    from two processes, never get the same folder."""
    root = base_path + ".quarantine"
    os.makedirs(root, exist_ok=True)
    for n in itertools.count():
        candidate = os.path.join(root, name if n == 0 else f"{name}.{n}")
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


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
    if report.get("fault"):
        validation.set_string_custom_property("fault", report["fault"])
    rollback = report.get("rollback")
    validation.set_int_custom_property("rolled_back", int(bool(rollback)))
    if rollback:
        validation.set_string_custom_property("quarantine_path", rollback["quarantine_path"])
