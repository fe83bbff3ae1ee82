"""Fixtures for the serving tests: test models built on the fly, real servers, plain clients.

Servers are the real thing: ``python -m serving`` started through ``serving.launcher`` on free
loopback ports, talked to with ``http.client`` and the official ``tensorflow_serving.apis`` stubs.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import shutil
import textwrap

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving import half_plus_two, launcher

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GRPC_OPTIONS = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]


# ------------------------------------------------------------------------------------------ models


class Spin(tf.Module):
    """A model that busy-waits ``x`` seconds (max over x) and returns ``x``: requests that time out."""

    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.float32, name="x")])
    def spin(self, x):
        start = tf.timestamp()
        seconds = tf.cast(tf.reduce_max(x), tf.float64)
        end = tf.while_loop(lambda t: t < start + seconds, lambda t: tf.timestamp(), [start])[0]
        return {"y": x + tf.cast(end - end, tf.float32)}


def export_spin(base_path: str, version: int = 1) -> str:
    model = Spin()
    path = os.path.join(base_path, str(version))
    tf.saved_model.save(model, path, signatures={"serving_default": model.spin})
    return path


class StaticShape(tf.Module):
    """half plus two with the official TF1 model's declared input shape [-1, 1]."""

    @tf.function(input_signature=[tf.TensorSpec(shape=[None, 1], dtype=tf.float32, name="x")])
    def predict(self, x):
        return {"y": 0.5 * x + 2.0}


def export_static_shape(base_path: str, version: int = 1) -> str:
    model = StaticShape()
    path = os.path.join(base_path, str(version))
    tf.saved_model.save(model, path, signatures={"serving_default": model.predict})
    return path


class BatchSize(tf.Module):
    """Answers, for every row of ``x``, how many rows the model was called with (shows batching)."""

    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.float32, name="x")])
    def rows(self, x):
        return {"y": tf.zeros_like(x) + tf.cast(tf.shape(x)[0], tf.float32)}


def export_batch_size(base_path: str, version: int = 1) -> str:
    model = BatchSize()
    path = os.path.join(base_path, str(version))
    tf.saved_model.save(model, path, signatures={"serving_default": model.rows})
    return path


@pytest.fixture(scope="session")
def saved_half_plus_two(tmp_path_factory) -> dict[float, str]:
    """Saved half_plus_two variants by ``b`` (copied into base paths by the tests that need them)."""
    root = tmp_path_factory.mktemp("saved")
    return {b: half_plus_two.save(str(root / f"b{b:g}"), b=b) for b in (1.0, 2.0, 3.0, 4.0, 5.0)}


# ------------------------------------------------------------------------------------------ clients


@dataclasses.dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self):
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return self.json()["error"]


class Rest:
    """A plain HTTP client (http.client): any method, any raw path, any body."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    def request(self, method: str, path: str, body: bytes | str | dict | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Response(response.status, response.read(), {k.lower(): v for k, v in response.getheaders()})
        finally:
            connection.close()

    def get(self, path: str, **kwargs) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body=None, **kwargs) -> Response:
        return self.request("POST", path, body, **kwargs)


@dataclasses.dataclass
class Server:
    handle: launcher.ServerHandle
    rest: Rest
    channel: grpc.Channel

    @property
    def predictions(self) -> prediction_service_pb2_grpc.PredictionServiceStub:
        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    @property
    def models(self) -> model_service_pb2_grpc.ModelServiceStub:
        return model_service_pb2_grpc.ModelServiceStub(self.channel)

    def raw_grpc(self, method: str):
        """A method taking and returning raw bytes (for requests the stubs cannot express)."""
        return self.channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def start(model_name: str, base_path: str, *extra_args: str, ready_timeout_s: float = 60, **kwargs) -> Server:
    handle = launcher.start_server(model_name, base_path, kind="embedded", poll_wait_s=kwargs.pop("poll_wait_s", 0.2),
                                   extra_args=extra_args, ready_timeout_s=ready_timeout_s, **kwargs)
    channel = grpc.insecure_channel(handle.grpc_target, options=GRPC_OPTIONS)
    return Server(handle, Rest(handle.host, handle.rest_port), channel)


def stop(server: Server) -> None:
    server.channel.close()
    assert server.handle.stop() == 0, server.handle.log_tail()


def write_config(path, models: list[dict]) -> str:
    """A text-format ModelServerConfig; each model: name, base_path, optional policy / labels text."""
    entries = []
    for model in models:
        extra = model.get("extra", "")
        entries.append(textwrap.dedent(f"""\
            config {{
              name: "{model['name']}"
              base_path: "{model['base_path']}"
              model_platform: "tensorflow"
              {extra}
            }}"""))
    text = "model_config_list {\n" + "\n".join(entries) + "\n}\n"
    with open(path, "w") as f:
        f.write(text)
    return str(path)


# ------------------------------------------------------------------------------------------ servers


@pytest.fixture(scope="session")
def conformance_server(tmp_path_factory, saved_half_plus_two):
    """The shared server of the conformance and fuzz tests (nothing may change its configuration).

    Models: ``default`` (half_plus_two, version 123, as in TF Serving's tests), ``two_versions``
    (123: half plus two, 124: half plus three; policy all; label ``stable`` -> 123), ``slow`` (Spin),
    ``static_shape`` (half plus two declaring its input [-1, 1]).
    REST timeout 2 s; REST bodies limited to 4 MiB; monitoring on.
    """
    root = tmp_path_factory.mktemp("conformance")
    shutil.copytree(saved_half_plus_two[2.0], root / "default" / "00000123")
    shutil.copytree(saved_half_plus_two[2.0], root / "two_versions" / "123")
    shutil.copytree(saved_half_plus_two[3.0], root / "two_versions" / "124")
    export_spin(str(root / "slow"))
    export_static_shape(str(root / "static_shape"))
    config = write_config(root / "models.config", [
        {"name": "default", "base_path": root / "default"},
        {"name": "two_versions", "base_path": root / "two_versions",
         "extra": 'model_version_policy { all {} } version_labels { key: "stable" value: 123 }'},
        {"name": "slow", "base_path": root / "slow"},
        {"name": "static_shape", "base_path": root / "static_shape"},
    ])
    monitoring = root / "monitoring.config"
    monitoring.write_text('prometheus_config: { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    server = start("default", str(root / "default"), f"--model_config_file={config}",
                   "--allow_version_labels_for_unavailable_models", "--rest_api_timeout_in_ms=2000",
                   f"--rest_api_max_body_bytes={4 << 20}", f"--monitoring_config_file={monitoring}")
    yield server
    stop(server)
