"""``--ssl_config_file``: TLS for the gRPC port (as TF Serving) and for the REST port (unlike it).

The file is TF Serving's text-format ``tensorflow.serving.SSLConfig`` (``config/ssl_config.proto``;
the message is declared here, the serving-api wheel does not ship it). As there, its fields hold PEM
*contents*, not file names:

* ``server_key``, ``server_cert``: the server's private key and certificate chain (both required);
* ``custom_ca``: the certificates that sign client certificates;
* ``client_verify``: require and verify a client certificate (mutual TLS).

``model_servers/server.cc`` ``BuildServerCredentials`` turns it into gRPC SSL server credentials. Here the
same key pair also serves HTTPS on the REST port: the reference leaves REST in plaintext whatever the
flag says, which would silently expose what the flag was meant to protect. Everything is checked at
start-up, before TensorFlow is imported; a configuration that cannot be honoured exactly stops the
server (fail closed): an unreadable or unparsable file, a missing key or certificate, a key that does
not match the certificate, unparsable CA certificates, and ``client_verify`` without ``custom_ca``
(the reference would then verify clients against the public web PKI, which authenticates no one).
"""
from __future__ import annotations

import dataclasses
import os
import ssl
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from serving.errors import StartupError


def _ssl_config_message() -> type:
    pool = descriptor_pool.DescriptorPool()
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="tensorflow_serving/config/ssl_config.proto",
                                              package="tensorflow.serving", syntax="proto3")
    message = file.message_type.add(name="SSLConfig")
    for name, number, kind in [("server_key", 1, F.TYPE_STRING), ("server_cert", 2, F.TYPE_STRING),
                               ("custom_ca", 3, F.TYPE_STRING), ("client_verify", 4, F.TYPE_BOOL)]:
        message.field.add(name=name, number=number, type=kind, label=F.LABEL_OPTIONAL)
    pool.Add(file)
    return message_factory.MessageFactory(pool).GetPrototype(pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


SSLConfig = _ssl_config_message()


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    server_key: bytes
    server_cert: bytes
    custom_ca: bytes
    client_verify: bool

    def grpc_credentials(self):
        """``BuildServerCredentials``: SSL server credentials, requiring a verified client certificate if asked."""
        import grpc

        return grpc.ssl_server_credentials([(self.server_key, self.server_cert)],
                                           root_certificates=self.custom_ca or None,
                                           require_client_auth=self.client_verify)

    def rest_context(self) -> ssl.SSLContext:
        """The same key pair for HTTPS (TLS 1.2 or later), with the same client verification."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # ssl loads a key pair from files only: a private directory, removed at once.
        with tempfile.TemporaryDirectory(prefix="tfxsp-tls-") as directory:
            key, cert = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
            for path, data in ((key, self.server_key), (cert, self.server_cert)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                    f.write(data)
            context.load_cert_chain(cert, key)
        if self.custom_ca:
            context.load_verify_locations(cadata=self.custom_ca.decode("ascii", "replace"))
        context.verify_mode = ssl.CERT_REQUIRED if self.client_verify else ssl.CERT_NONE
        return context


def read_ssl_config(path: str) -> TlsConfig:
    """Reads and checks ``--ssl_config_file``. Raises StartupError naming the flag."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise StartupError(f"Cannot read --ssl_config_file {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        message = text_format.Parse(text, SSLConfig())
    except text_format.ParseError as e:
        raise StartupError(f"--ssl_config_file {path}: Error parsing text-format tensorflow.serving.SSLConfig: "
                           f"{e}") from None
    config = TlsConfig(message.server_key.encode(), message.server_cert.encode(), message.custom_ca.encode(),
                       message.client_verify)
    missing = [name for name in ("server_key", "server_cert") if not getattr(config, name).strip()]
    if missing:
        raise StartupError(f"--ssl_config_file {path}: {' and '.join(missing)} must be set (PEM contents)")
    if config.client_verify and not config.custom_ca.strip():
        raise StartupError(f"--ssl_config_file {path}: client_verify needs custom_ca, the certificates that sign "
                           "client certificates")
    try:
        config.rest_context()  # loads the key pair and the CA certificates: any mistake shows here
    except (ssl.SSLError, ValueError) as e:
        raise StartupError(f"--ssl_config_file {path}: the key, certificate or CA certificates are not usable: "
                           f"{e}") from None
    return config
