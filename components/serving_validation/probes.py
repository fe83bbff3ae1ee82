"""The checks of the serving validation, over TF Serving's public REST and gRPC APIs only, so they
work the same against the real tensorflow_model_server and the embedded server.

Each check raises ProbeFailure naming the check, the version, the endpoint and what came back, and whose fault it
is: the model's (MODEL: wrong answers, missing signatures, a load that failed, over the latency budget), the
server's (SERVER: no answer, an overloaded or unavailable server, a version not loaded in time), or a newer push's
(SUPERSEDED: the server serves a newer version instead). Only a model's fault is a failed validation; the others
mean the version could not be validated.
"""
from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from serving.client import GrpcClient, RestClient, RestError

MODEL, SERVER, SUPERSEDED = "model", "server", "superseded"


class ProbeFailure(Exception):
    def __init__(self, check: str, version: int, endpoint: str, detail: str, fault: str = MODEL):
        self.check, self.version, self.endpoint, self.detail = check, version, endpoint, detail
        self.fault = fault
        super().__init__(f"{check} failed for version {version} at {endpoint}: {detail}")


@dataclasses.dataclass
class ProbeInput:
    """One signature's probe: the request inputs and the outputs the trained model gave for them."""
    signature: str
    inputs: dict[str, np.ndarray]  # input name -> batch of values (bytes for serialized examples)
    expected: dict[str, np.ndarray]  # output name -> batch of values
    binary: bool = False  # inputs are serialized tf.Examples: REST sends them as {"b64": ...}


class ServingClient:
    """TF Serving's REST and gRPC APIs for one model (through serving.client), timing each call."""

    def __init__(self, model_name: str, rest_url: str, grpc_target: str, timeout_s: float = 10.0):
        self.model_name = model_name
        self.rest_url = rest_url.rstrip("/")
        self.grpc_target = grpc_target
        self._rest = RestClient(self.rest_url, timeout_s)
        self._grpc = GrpcClient(grpc_target, timeout_s)

    def close(self) -> None:
        self._grpc.close()

    def model_url(self, version: int | None = None) -> str:
        suffix = f"/versions/{version}" if version is not None else ""
        return f"{self.rest_url}/v1/models/{self.model_name}{suffix}"

    def rest_status(self) -> dict[int, str]:
        """version -> state (AVAILABLE, LOADING, ...) from GET /v1/models/NAME."""
        return {version: state for version, (state, _) in self.rest_versions().items()}

    def rest_versions(self) -> dict[int, tuple[str, str]]:
        """version -> (state, error) from GET /v1/models/NAME; error is "" unless the version's status is not OK
        (a load that failed: END with the load's error). A model the server has no version of: {}."""
        try:
            body = self._rest.status(self.model_name)
        except RestError as e:
            if e.status == 404:  # "Could not find any versions of model NAME": an answer, no versions
                return {}
            raise
        versions = {}
        for s in body.get("model_version_status", []):
            status = s.get("status") or {}
            error = "" if status.get("error_code", "OK") == "OK" else \
                f"{status.get('error_code')}: {status.get('error_message', '')}"
            versions[int(s["version"])] = (s["state"], error)
        return versions

    def grpc_status(self) -> dict[int, str]:
        try:
            return self._grpc.status(self.model_name)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:  # no versions of the model (yet)
                return {}
            raise

    def grpc_signature_names(self, version: int) -> list[str]:
        return self._grpc.signature_names(self.model_name, version)

    def rest_predict(self, version: int, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """POST :predict with a row ("instances") or columnar ("inputs") body."""
        data = {"instances": body["instances"]} if "instances" in body else {"inputs": body["inputs"]}
        start = time.perf_counter()
        answer = self._rest.predict(self.model_name, signature_name=body["signature_name"],
                                    version=version, **data)
        return answer, time.perf_counter() - start

    def grpc_predict(self, version: int, signature: str, inputs: dict[str, np.ndarray]
                     ) -> tuple[dict[str, np.ndarray], float]:
        start = time.perf_counter()
        outputs, answered = self._grpc.predict(self.model_name, inputs, signature, version=version)
        elapsed = time.perf_counter() - start
        if answered != version:
            raise AnsweredByAnotherVersion(answered)
        return outputs, elapsed


class AnsweredByAnotherVersion(ValueError):
    def __init__(self, answered: int):
        super().__init__(f"the answer came from version {answered}")
        self.answered = answered


# What a call to the server can raise: an HTTP error status, no connection, a gRPC status.
CALL_ERRORS = (RestError, OSError, grpc.RpcError)
# Answers that say the server, not the model, could not answer: unavailable, overloaded, too slow, the version not
# (or no longer) loaded.
_SERVER_HTTP = {404, 408, 429, 499, 502, 503, 504}
_SERVER_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.CANCELLED, grpc.StatusCode.NOT_FOUND}


def fault_of(error: BaseException) -> str:
    """SERVER when a call's error says the server could not answer (see _SERVER_HTTP, _SERVER_GRPC; any error
    without an answer: refused, reset, timed out), else MODEL."""
    if isinstance(error, RestError):
        return SERVER if error.status in _SERVER_HTTP else MODEL
    if isinstance(error, grpc.RpcError):
        return SERVER if error.code() in _SERVER_GRPC else MODEL
    if isinstance(error, OSError):
        return SERVER
    return MODEL


# Statuses of a version the server saw before the Pusher had finished writing it (TFX's Pusher copies in place):
# its files were still changing, or saved_model.pb was not there yet. The next scan settles them, so they are waited
# on; at the deadline, files that still change are the server's to explain, a SavedModel still missing the model's.
_ARRIVING_CODES = ("UNAVAILABLE", "NOT_FOUND")


def _still_arriving(error: str) -> str:
    """The status code of `error` ("CODE: message") if it says the version is not yet complete, else ""."""
    code = error.split(":", 1)[0]
    return code if code in _ARRIVING_CODES else ""


# ---------------------------------------------------------------------- checks
def wait_until_served(client: ServingClient, version: int, deadline_s: float,
                      poll_s: float = 0.5) -> None:
    """Polls REST and gRPC status until `version` is AVAILABLE on both, or the deadline passes.

    A version whose load failed (END with an error status) fails at once (MODEL), unless the status says the
    version was seen while still being written (_still_arriving): that is waited on. At the deadline: an API that never
    answered is SERVER ("no answer"); a newer version AVAILABLE instead of this one is SUPERSEDED; a version still
    not AVAILABLE (not seen, or loading) is SERVER too: a slow load is no proof against the model.
    """
    give_up = time.monotonic() + deadline_s
    while True:
        seen: dict[str, tuple[dict[int, str] | None, str]] = {}
        try:
            versions = client.rest_versions()
            seen["REST"] = ({v: state for v, (state, _) in versions.items()}, client.model_url())
            state, error = versions.get(version, ("", ""))
            arriving = _still_arriving(error) if state == "END" and error else ""
            if state == "END" and error and (not arriving or time.monotonic() >= give_up):
                raise ProbeFailure("model status (REST)", version, client.model_url(),
                                   f"the server could not load version {version}: {error}",
                                   SERVER if arriving == "UNAVAILABLE" else MODEL)
        except CALL_ERRORS as e:
            seen["REST"] = (None, f"{client.model_url()} ({_short_error(e)})")
        try:
            seen["gRPC"] = (client.grpc_status(), client.grpc_target)
        except CALL_ERRORS as e:
            seen["gRPC"] = (None, f"{client.grpc_target} ({_short_error(e)})")
        if all(states and states.get(version) == "AVAILABLE" for states, _ in seen.values()):
            return
        if time.monotonic() >= give_up:
            api, (states, endpoint) = next(
                (api, s) for api, s in seen.items() if not (s[0] and s[0].get(version) == "AVAILABLE"))
            if states is None:
                raise ProbeFailure(f"model status ({api})", version, endpoint.split(" ")[0],
                                   f"no answer within {deadline_s:g} s: {endpoint}", SERVER)
            newer = [v for v, state in states.items() if v > version and state == "AVAILABLE"]
            detail = (f"version {version} is not AVAILABLE after {deadline_s:g} s; the server reports "
                      f"{_describe_states(states)}")
            raise ProbeFailure(f"model status ({api})", version, endpoint, detail, SUPERSEDED if newer else SERVER)
        time.sleep(poll_s)


def _describe_states(states: dict[int, str]) -> str:
    if not states:
        return "no versions"
    return ", ".join(f"version {v} {s}" for v, s in sorted(states.items()))


def _short_error(error: Exception) -> str:
    if isinstance(error, grpc.RpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error).split("\n")[0][:300]


def check_metadata(client: ServingClient, version: int, signatures: list[str]) -> None:
    try:
        served = client.grpc_signature_names(version)
    except grpc.RpcError as e:
        raise ProbeFailure("GetModelMetadata", version, client.grpc_target, _short_error(e), fault_of(e)) from None
    missing = sorted(set(signatures) - set(served))
    if missing:
        raise ProbeFailure("GetModelMetadata", version, client.grpc_target,
                           f"signatures {missing} are missing; the model has {served}")


def _rest_value(value: Any, binary: bool) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()} if binary else value.decode()
    return value


def rest_bodies(probe: ProbeInput) -> dict[str, dict[str, Any]]:
    """The same inputs in TF Serving's row ("instances") and columnar ("inputs") formats."""
    size = len(next(iter(probe.inputs.values())))
    rows = [{name: _rest_value(values[i], probe.binary) for name, values in probe.inputs.items()}
            for i in range(size)]
    columns = {name: [r[name] for r in rows] for name in probe.inputs}
    return {"row": {"signature_name": probe.signature, "instances": rows},
            "columnar": {"signature_name": probe.signature, "inputs": columns}}


def outputs_from_rest(answer: dict[str, Any], fmt: str, output_names: list[str]
                      ) -> dict[str, np.ndarray]:
    """Per-output arrays from a REST predict answer (row: "predictions", columnar: "outputs")."""
    if fmt == "row":
        predictions = answer["predictions"]
        if len(output_names) == 1 and not isinstance(predictions[0], dict):
            return {output_names[0]: np.array(predictions)}
        return {name: np.array([p[name] for p in predictions]) for name in output_names}
    outputs = answer["outputs"]
    if len(output_names) == 1 and not isinstance(outputs, dict):
        return {output_names[0]: np.array(outputs)}
    return {name: np.array(outputs[name]) for name in output_names}


def compare_outputs(expected: dict[str, np.ndarray], served: dict[str, np.ndarray],
                    tolerance: float) -> str | None:
    """None when the served outputs equal the expected ones; else what differs, briefly."""
    for name, want in expected.items():
        if name not in served:
            return f"output '{name}' is missing; got {sorted(served)}"
        got = served[name]
        if want.dtype.kind in "SOU":
            want_text = [v.decode() if isinstance(v, bytes) else str(v) for v in want.ravel()]
            got_text = [v.decode() if isinstance(v, bytes) else str(v) for v in got.ravel()]
            if want_text != got_text:
                i = next(i for i, (a, b) in enumerate(zip(want_text, got_text)) if a != b) \
                    if len(want_text) == len(got_text) else 0
                return (f"output '{name}' differs: expected {want_text[i:i + 3]}, "
                        f"got {got_text[i:i + 3]}")
            continue
        got = np.asarray(got, dtype=np.float64)
        if got.shape != want.shape:
            return f"output '{name}' has shape {got.shape}, expected {want.shape}"
        # The tolerance is relative beyond 1: float32 outputs on the label's scale (a regression's hundreds) carry
        # rounding differences of their magnitude times 1e-7 between the server and the process.
        want64 = want.astype(np.float64)
        error = np.abs(got - want64) / np.maximum(1.0, np.abs(want64))
        if error.max(initial=0.0) > tolerance:
            i = np.unravel_index(error.argmax(), error.shape)
            return (f"output '{name}' differs by {abs(got[i] - want64[i]):.3g} (relative {error.max():.3g}) > "
                    f"tolerance {tolerance:g} at {tuple(int(x) for x in i)}: expected {want[i]!r}, got {got[i]!r}")
    return None


def check_predictions(client: ServingClient, version: int, probe: ProbeInput,
                      tolerance: float) -> list[dict[str, Any]]:
    """REST row, REST columnar and gRPC Predict on `version`; each must match the expected."""
    results = []
    output_names = list(probe.expected)
    calls: list[tuple[str, str, Callable[[], dict[str, np.ndarray]]]] = []
    for fmt, body in rest_bodies(probe).items():
        calls.append((f"REST predict ({fmt})", client.model_url(version) + ":predict",
                      lambda body=body, fmt=fmt: outputs_from_rest(
                          client.rest_predict(version, body)[0], fmt, output_names)))
    calls.append(("gRPC Predict", client.grpc_target,
                  lambda: client.grpc_predict(version, probe.signature, probe.inputs)[0]))
    for check, endpoint, call in calls:
        name = f"{check} on '{probe.signature}'"
        try:
            served = call()
        except AnsweredByAnotherVersion as e:
            raise ProbeFailure(name, version, endpoint, str(e), SUPERSEDED if e.answered > version else SERVER) \
                from None
        except (*CALL_ERRORS, ValueError, KeyError, TypeError) as e:
            raise ProbeFailure(name, version, endpoint, _short_error(e), fault_of(e)) from None
        difference = compare_outputs(probe.expected, served, tolerance)
        if difference:
            raise ProbeFailure(name, version, endpoint, difference)
        results.append({"check": name, "endpoint": endpoint, "ok": True,
                        "examples": len(next(iter(probe.inputs.values())))})
    return results


def measure_latency(client: ServingClient, version: int, probe: ProbeInput, requests_n: int
                    ) -> dict[str, dict[str, float]]:
    """p50/p99 in ms of single-example REST and gRPC predicts, after one warm-up call each."""
    single = ProbeInput(probe.signature, {k: v[:1] for k, v in probe.inputs.items()}, {},
                        probe.binary)
    body = rest_bodies(single)["row"]
    timings: dict[str, list[float]] = {"rest": [], "grpc": []}
    for i in range(requests_n + 1):
        rest_s = client.rest_predict(version, body)[1]
        grpc_s = client.grpc_predict(version, single.signature, single.inputs)[1]
        if i:  # the first call of each warms connections up
            timings["rest"].append(rest_s * 1000)
            timings["grpc"].append(grpc_s * 1000)
    return {api: {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99))}
            for api, t in timings.items()}
