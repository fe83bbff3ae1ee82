"""Thin clients for any TF Serving (the real one or the embedded one): predict and status.

``RestClient`` speaks the REST API with the standard library only; ``GrpcClient`` uses the official
``tensorflow_serving.apis`` stubs, imported (with TensorFlow) only when a GrpcClient is made, so
REST-only callers stay light. Errors carry the server's status: ``RestError.status`` (HTTP) /
``grpc.RpcError.code()``.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any


class RestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class RestClient:
    def __init__(self, base_url: str, timeout_s: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def predict(self, model: str, instances: Any = None, inputs: Any = None, signature_name: str | None = None,
                version: int | None = None, label: str | None = None) -> dict:
        """POST ``:predict`` with exactly one of ``instances`` (row format) or ``inputs`` (columnar)."""
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances or inputs")
        body: dict[str, Any] = {"instances": instances} if instances is not None else {"inputs": inputs}
        if signature_name:
            body["signature_name"] = signature_name
        return self._call("POST", f"{self._model_path(model, version, label)}:predict", body)

    def status(self, model: str, version: int | None = None) -> dict:
        return self._call("GET", self._model_path(model, version, None))

    def metadata(self, model: str, version: int | None = None) -> dict:
        return self._call("GET", f"{self._model_path(model, version, None)}/metadata")

    def available_versions(self, model: str) -> list[int]:
        return sorted(int(s["version"]) for s in self.status(model)["model_version_status"]
                      if s["state"] == "AVAILABLE")

    def _model_path(self, model: str, version: int | None, label: str | None) -> str:
        path = f"/v1/models/{urllib.request.quote(model, safe='')}"
        if version is not None:
            path += f"/versions/{version}"
        elif label is not None:
            path += f"/labels/{urllib.request.quote(label, safe='')}"
        return path

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text
            raise RestError(e.code, message) from None


class GrpcClient:
    """gRPC Predict and GetModelStatus; use as a context manager or call ``close()``."""

    def __init__(self, target: str, timeout_s: float = 10.0):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 2**31 - 1),
                                                                ("grpc.max_receive_message_length", 2**31 - 1)])
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def predict(self, model: str, inputs: Mapping[str, Any], signature_name: str = "", version: int | None = None,
                label: str | None = None, output_filter: Sequence[str] = ()) -> tuple[dict, int]:
        """Returns the outputs as numpy arrays and the version that answered."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        request.model_spec.name = model
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = version
        elif label is not None:
            request.model_spec.version_label = label
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._predictions.Predict(request, timeout=self.timeout_s)
        outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
        return outputs, response.model_spec.version.value

    def status(self, model: str, version: int | None = None) -> dict[int, str]:
        """version -> state name (AVAILABLE, LOADING, END, ...)."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        response = self._models.GetModelStatus(request, timeout=self.timeout_s)
        names = get_model_status_pb2.ModelVersionStatus.State.Name
        return {s.version: names(s.state) for s in response.model_version_status}

    def signature_names(self, model: str, version: int | None = None) -> list[str]:
        """The signatures GetModelMetadata lists for the model (its newest version by default)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        response = self._predictions.GetModelMetadata(request, timeout=self.timeout_s)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return sorted(signatures.signature_def)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
