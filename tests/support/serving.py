"""Serving test helpers: test models built on the fly, real servers, plain clients, request builders.

Servers are the real thing: ``python -m serving`` started through ``serving.launcher`` on free loopback ports,
talked to with ``http.client`` and the official ``tensorflow_serving.apis`` stubs. Fixtures that use these live in
tests/serving/conftest.py.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import ssl
import stat
import sys
import textwrap
import time

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import launcher

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


def tflite_model(function: tf.types.experimental.ConcreteFunction, module: tf.Module | None = None,
                 select_tf_ops: bool = False) -> bytes:
    """``function`` converted by ``tf.lite.TFLiteConverter`` (with Flex ops, e.g. tf.io.parse_example, if asked)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    if select_tf_ops:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    return converter.convert()


def tflite_tensor_names(content: bytes) -> tuple[list[str], list[str]]:
    """The TF Lite tensor names of the model's inputs and outputs."""
    interpreter = tf.lite.Interpreter(model_content=content)
    return ([d["name"] for d in interpreter.get_input_details()],
            [d["name"] for d in interpreter.get_output_details()])


def write_tflite(base_path, version: int, content: bytes) -> str:
    """``base_path/<version>/model.tflite``; returns the version directory."""
    path = os.path.join(str(base_path), str(version))
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "model.tflite"), "wb") as f:
        f.write(content)
    return path


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
    """A plain HTTP client (http.client): any method, any raw path, any body; HTTPS with ``tls``."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None):
        self.host, self.port, self.tls = host, port, tls

    def request(self, method: str, path: str, body: bytes | str | dict | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        connection = (http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.tls)
                      if self.tls else http.client.HTTPConnection(self.host, self.port, timeout=timeout))
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


def start(model_name: str, base_path: str, *extra_args: str, ready_timeout_s: float = 60,
          tls: TlsClient | None = None, **kwargs) -> Server:
    """A real embedded server; with ``tls``, one started with ``tls.ssl_config`` and talked to over TLS."""
    if tls is not None:
        extra_args = (*extra_args, f"--ssl_config_file={tls.ssl_config}")
    handle = launcher.start_server(model_name, base_path, kind="embedded", poll_wait_s=kwargs.pop("poll_wait_s", 0.2),
                                   extra_args=extra_args, ready_timeout_s=ready_timeout_s,
                                   tls=tls.context() if tls else None, **kwargs)
    if tls is None:
        channel = grpc.insecure_channel(handle.grpc_target, options=GRPC_OPTIONS)
    else:
        channel = grpc.secure_channel(handle.grpc_target, tls.grpc_credentials(), options=GRPC_OPTIONS)
    return Server(handle, Rest(handle.host, handle.rest_port, tls.context() if tls else None), channel)


# ------------------------------------------------------------------------------------------ TLS


@dataclasses.dataclass
class Identity:
    key_pem: bytes
    cert_pem: bytes


@dataclasses.dataclass
class TlsClient:
    """A CA, a server identity signed by it (for 127.0.0.1 and localhost), a client identity signed by it, and a
    stranger: a client identity signed by another CA. ``ssl_config`` is the server's SSLConfig file."""

    directory: str
    ca_pem: bytes
    server: Identity
    client: Identity
    stranger: Identity
    ssl_config: str = ""
    identity: Identity | None = None  # what this client presents (None: no certificate)

    def as_(self, identity: Identity | None) -> TlsClient:
        return dataclasses.replace(self, identity=identity)

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        if self.identity is not None:
            name = "stranger" if self.identity is self.stranger else "client"
            cert, key = (os.path.join(self.directory, f"{name}.{part}.pem") for part in ("cert", "key"))
            context.load_cert_chain(cert, key)
        return context

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        if self.identity is None:
            return grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
        return grpc.ssl_channel_credentials(root_certificates=self.ca_pem, private_key=self.identity.key_pem,
                                            certificate_chain=self.identity.cert_pem)

    def write_ssl_config(self, path, client_verify: bool, **overrides) -> str:
        """TF Serving's SSLConfig text proto (PEM contents, not file names)."""
        from google.protobuf import text_format

        from serving.tls import SSLConfig

        fields = {"server_key": self.server.key_pem.decode(), "server_cert": self.server.cert_pem.decode(),
                  "custom_ca": self.ca_pem.decode(), "client_verify": client_verify, **overrides}
        with open(path, "w") as f:
            f.write(text_format.MessageToString(SSLConfig(**fields)))
        return str(path)


def make_tls(directory, client_verify: bool = False) -> TlsClient:
    """Keys and certificates made with ``cryptography`` (EC P-256), written under ``directory``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common_name):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def issue(subject, key, issuer, issuer_key, ca=False, server=False):
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        if not ca:
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def pem(key, cert):
        return Identity(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()), cert.public_bytes(serialization.Encoding.PEM))

    ca_key, other_ca_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = issue("test CA", ca_key, "test CA", ca_key, ca=True)
    keys = {role: ec.generate_private_key(ec.SECP256R1()) for role in ("server", "client", "stranger")}
    server = pem(keys["server"], issue("127.0.0.1", keys["server"], "test CA", ca_key, server=True))
    client = pem(keys["client"], issue("client", keys["client"], "test CA", ca_key))
    stranger = pem(keys["stranger"], issue("stranger", keys["stranger"], "other CA", other_ca_key))
    for role, identity in (("server", server), ("client", client), ("stranger", stranger)):
        for part, data in (("cert", identity.cert_pem), ("key", identity.key_pem)):
            with open(os.path.join(directory, f"{role}.{part}.pem"), "wb") as f:
                f.write(data)
    tls = TlsClient(str(directory), ca.public_bytes(serialization.Encoding.PEM), server, client, stranger)
    tls.ssl_config = tls.write_ssl_config(os.path.join(directory, "ssl.config"), client_verify)
    return tls.as_(client if client_verify else None)


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


def write_model_server_stand_in(directory) -> str:
    """``directory/tensorflow_model_server``: a script that runs the embedded server with the flags it gets.

    Put ``directory`` on PATH (or where a harness looks for the binary) to run tools and tests written for
    TF Serving's ``tensorflow_model_server`` against the embedded server.
    """
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(str(directory), "tensorflow_model_server")
    os.makedirs(str(directory), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(f"""\
            #!/bin/sh
            # Stand-in for TF Serving's tensorflow_model_server: the embedded server takes the same flags.
            PYTHONPATH="{repo}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" -m serving "$@"
            """))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# ---------------------------------------------------------------------------------------- requests


def predict_request(name="default", x=(2.0,), shape=(1,), **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(list(x), dtype=tf.float32, shape=list(shape)))
    return request


def example_input(request, *xs, feature="x"):
    for x in xs:
        request.input.example_list.examples.add().features.feature[feature].float_list.value.append(x)
    return request


def classification_request(name="default", signature="classify_x_to_y", xs=(2.0,)):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    return example_input(request, *xs)


def regression_request(name="default", signature="regress_x_to_y", xs=(2.0,)):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    return example_input(request, *xs)


# --------------------------------------------------------------------------------------- waiting


def wait_until(condition, timeout_s=30.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def statuses(server, model):
    response = server.rest.get(f"/v1/models/{model}")
    if response.status != 200:
        return {}
    return {int(s["version"]): (s["state"], s["status"]["error_code"], s["status"]["error_message"])
            for s in response.json()["model_version_status"]}


def predict_y(server, model, version=None):
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    response = server.rest.post(path, {"instances": [2.0]})
    return response.json()["predictions"][0] if response.status == 200 else response.status
