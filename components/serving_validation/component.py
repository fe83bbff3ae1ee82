"""ServingValidator: after Pusher, prove that the model server serves the pushed version and that it
answers over REST and gRPC exactly as the trained model does in process."""

import json

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.serving_validation.artifact import ServingValidation
from components.serving_validation.executor import Executor


class ServingValidatorSpec(types.ComponentSpec):
    PARAMETERS = {
        "model_name": ExecutionParameter(type=str),
        "rest_url": ExecutionParameter(type=str),
        "grpc_target": ExecutionParameter(type=str),
        "signature_names": ExecutionParameter(type=list[str]),
        "num_examples": ExecutionParameter(type=int),
        "load_deadline_s": ExecutionParameter(type=float),
        "tolerance": ExecutionParameter(type=float),
        "latency_requests": ExecutionParameter(type=int),
        "max_p50_ms": ExecutionParameter(type=float),
        "max_p99_ms": ExecutionParameter(type=float),
        "rollback": ExecutionParameter(type=int),
        # A hash of the code the executor runs (pipeline/code_fingerprint.py), so that an edit to it re-runs it.
        "code_fingerprint": ExecutionParameter(type=str, optional=True),
        # JSON: a raw-feature signature's input name -> the example feature that feeds it (the dataset contract).
        "raw_input_features": ExecutionParameter(type=str, optional=True),
        # Unique to each run, so that TFX never reuses a probe from its cache: a re-run whose Pusher came from the
        # cache (nothing new pushed) still proves the version that serves the model live.
        "probe_run": ExecutionParameter(type=str, optional=True),
        # The signatures probed instead of signature_names when the server prefers TF Lite (--prefer_tflite_model)
        # and the model has a model.tflite; unset: the server serves the SavedModel.
        "tflite_signature_names": ExecutionParameter(type=list[str], optional=True),
    }
    INPUTS = {
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {"validation": ChannelParameter(type=ServingValidation)}


class ServingValidator(base_component.BaseComponent):
    """Probes the served model; records a ServingValidation artifact (blessed 1/0) in MLMD.

    A failed probe moves the pushed version out of the model base path (rollback) so the server
    returns to the previous version; the pipeline run then fails with the reason.
    """

    SPEC_CLASS = ServingValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self,
                 pushed_model: types.BaseChannel,
                 model: types.BaseChannel,
                 examples: types.BaseChannel,
                 model_name: str,
                 rest_url: str,
                 grpc_target: str,
                 signature_names: list[str] | None = None,
                 num_examples: int = 16,
                 load_deadline_s: float = 60.0,
                 tolerance: float = 1e-5,
                 latency_requests: int = 50,
                 max_p50_ms: float = 100.0,
                 max_p99_ms: float = 500.0,
                 rollback: bool = True,
                 code_fingerprint: str = "",
                 raw_input_features: dict[str, str] | None = None,
                 probe_run: str = "", tflite_signature_names: list[str] | None = None):
        spec = ServingValidatorSpec(
            pushed_model=pushed_model, model=model, examples=examples,
            model_name=model_name, rest_url=rest_url, grpc_target=grpc_target,
            signature_names=signature_names or ["serving_default"],
            num_examples=num_examples, load_deadline_s=load_deadline_s, tolerance=tolerance,
            latency_requests=latency_requests, max_p50_ms=max_p50_ms, max_p99_ms=max_p99_ms,
            rollback=int(rollback), code_fingerprint=code_fingerprint,
            raw_input_features=json.dumps(raw_input_features or {}, sort_keys=True), probe_run=probe_run,
            tflite_signature_names=tflite_signature_names or None,
            validation=types.Channel(type=ServingValidation))
        super().__init__(spec=spec)
