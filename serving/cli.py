"""Command line of the embedded model server: ``tensorflow_model_server``'s flags (spec §1.1).

``python -m serving`` (and ``tfxsp serve``) take the reference binary's flags with the same names,
defaults and meanings: ``--name=value``, booleans also as bare ``--name``; an unknown argument is
reported and ignored; a malformed value or ``--help`` prints the usage and exits with status 255,
as the reference does. Flags the embedded server cannot honour (GPU, TensorFlow thread pools, ...) are
accepted and reported as ignored when set, except security settings (``--use_alts_credentials``): set,
they stop the server (fail closed) rather than let it serve without them. ``--ssl_config_file`` is
honoured, for gRPC and REST (``serving.tls``).

Flags are added: ``--bind_address`` (default ``127.0.0.1``), the interface both ports listen on (the
reference always listens on every interface; a local tool should not, unless asked);
``--allow_remote_model_management`` (see ``grpc_api``: who may call HandleReloadConfigRequest);
``--drain_timeout_seconds`` (what SIGTERM waits for).
And limits: ``--rest_api_max_body_bytes`` (default 64 MiB) caps REST request bodies,
``--max_request_elements`` (default 2^27) the tensor elements of one request (see ``serving.limits``).

Everything that can be checked without TensorFlow is checked before it is imported (about two
seconds), so a wrong configuration fails at once with a clear message and exit status 255:
missing or unreadable base path or config files, a config that does not parse or validate,
``--batching_parameters_file`` without ``--enable_batching``, a port already in use.
"""
from __future__ import annotations

import dataclasses
import errno
import importlib.metadata
import logging
import os
import socket
import sys
import warnings
from typing import Any

from serving import config as config_lib
from serving import limits as limits_lib
from serving import logging_config as logging_config_lib
from serving import tls as tls_lib
from serving.errors import ServingError, StartupError
from serving.options import ManagerOptions, RestOptions, ServerOptions, TfLiteOptions

EXIT_FAILURE = 255
_SERVER_VERSION = "2.16.1"


@dataclasses.dataclass(frozen=True)
class Flag:
    name: str
    kind: type  # int, bool, str or float
    default: Any
    help: str
    supported: bool = True
    security: bool = False  # if set to anything but its default while unsupported, the server refuses to start


FLAGS = [
    Flag("port", int, 8500, "TCP port to listen on for gRPC/HTTP API. Disabled if port set to zero."),
    Flag("grpc_socket_path", str, "", "If non-empty, listen to a UNIX socket for gRPC API on the given path."),
    Flag("rest_api_port", int, 0, "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will not be "
         "exported. This port must be different than the one specified in --port."),
    Flag("rest_api_num_threads", int, 0, "Number of threads for HTTP/REST API processing. (Embedded server: how many "
         "REST inference requests run at once; more wait in a bounded queue or get 503. 0: 4 per CPU.)"),
    Flag("rest_api_timeout_in_ms", int, 30000, "Timeout for HTTP/REST API calls."),
    Flag("rest_api_enable_cors_support", bool, False, "Enable CORS headers in response."),
    Flag("enable_batching", bool, False, "enable batching"),
    Flag("allow_version_labels_for_unavailable_models", bool, False,
         "If true, allows assigning unused version labels to models that are not available yet."),
    Flag("batching_parameters_file", str, "", "If non-empty, read an ascii BatchingParameters protobuf from the "
         "supplied file name and use the contained values instead of the defaults."),
    Flag("model_config_file", str, "", "If non-empty, read an ascii ModelServerConfig protobuf from the supplied "
         "file name, and serve the models in that file. (If used, --model_name and --model_base_path are ignored.)"),
    Flag("model_config_file_poll_wait_seconds", float, 0.0, "Interval in seconds between each poll of the filesystem "
         "for model_config_file. If unset or set to zero, poll will be done exactly once and not periodically."),
    Flag("model_name", str, "default", "name of model (ignored if --model_config_file flag is set)"),
    Flag("model_base_path", str, "", "path to export (ignored if --model_config_file flag is set, otherwise "
         "required)"),
    Flag("max_num_load_retries", int, 5, "maximum number of times it retries loading a model after the first "
         "failure, before giving up."),
    Flag("load_retry_interval_micros", int, 60 * 1000 * 1000, "The interval, in microseconds, between each servable "
         "load retry."),
    Flag("file_system_poll_wait_seconds", float, 1.0, "Interval in seconds between each poll of the filesystem for "
         "new model version. If set to zero poll will be exactly done once and not periodically. (The embedded "
         "server also accepts fractions of a second.)"),
    Flag("saved_model_tags", str, "serve", "Comma-separated set of tags corresponding to the meta graph def to "
         "load from SavedModel."),
    Flag("grpc_channel_arguments", str, "", "A comma separated list of arguments to be passed to the grpc server. "
         "(e.g. grpc.max_connection_age_ms=2000)"),
    Flag("enable_signature_method_name_check", bool, False, "Enable method_name check for SignatureDef."),
    Flag("enable_serialization_as_tensor_content", bool, False, "Enable serialization of predict response as "
         "tensor content."),
    Flag("monitoring_config_file", str, "", "If non-empty, read an ascii MonitoringConfig protobuf from the "
         "supplied file name"),
    Flag("version", bool, False, "Display version"),
    Flag("help", bool, False, "Display this help and exit"),
    # Ours.
    Flag("ssl_config_file", str, "", "If non-empty, read an ascii SSLConfig protobuf from the supplied file name and "
         "set up a secure gRPC channel. (Embedded server: the REST port serves HTTPS with it too.)"),
    Flag("allow_remote_model_management", bool, False, "Accept HandleReloadConfigRequest from any client that can "
         "reach the gRPC port. Without it, only loopback and UNIX-socket clients, and clients with a verified TLS "
         "certificate (--ssl_config_file with client_verify), may change the served models (embedded server "
         "only)."),
    Flag("bind_address", str, "127.0.0.1", "Interface the gRPC and REST ports listen on (embedded server only; "
         "the reference listens on all interfaces). Use 0.0.0.0 to accept remote clients."),
    Flag("rest_api_max_body_bytes", int, 64 * 1024 * 1024, "Largest accepted REST request body (embedded server "
         "only)."),
    Flag("request_log_file_bytes", int, 64 << 20, "Request logging (logging_config in the model config): bytes a "
         "log file holds before the next one is started (embedded server only)."),
    Flag("drain_timeout_seconds", float, 20.0, "On SIGTERM/SIGINT, how long requests in flight may take to finish "
         "before the server exits (embedded server only)."),
    Flag("max_request_elements", int, limits_lib.DEFAULT_MAX_REQUEST_ELEMENTS, "Most tensor elements one request "
         "may hold, all inputs together; more is refused with RESOURCE_EXHAUSTED (REST: 413) before decoding "
         "(embedded server only)."),
    # Accepted for compatibility, no effect here.
    Flag("enable_model_warmup", bool, True, "Enables model warmup, which triggers lazy initializations (such as "
         "TF optimizations) at load time, to reduce first request latency."),
    Flag("enable_grpc_healthcheck_service", bool, False, "Enable the standard gRPC healthcheck service.",
         supported=False),
    Flag("enable_profiler", bool, True, "Enable profiler service."),
    Flag("enable_per_model_batching_parameters", bool, False, "Enables model specific batching params.",
         supported=False),
    Flag("num_load_threads", int, 0, "The number of threads in the thread-pool used to load servables.",
         supported=False),
    Flag("num_unload_threads", int, 0, "The number of threads in the thread-pool used to unload servables.",
         supported=False),
    Flag("grpc_max_threads", int, 0, "Max grpc server threads to handle grpc messages. (Embedded server: how many "
         "gRPC inference calls run at once; more wait in a bounded queue or get RESOURCE_EXHAUSTED. 0: 4 per CPU.)"),
    Flag("tensorflow_session_parallelism", int, 0, "Number of threads to use for running a Tensorflow session.",
         supported=False),
    Flag("tensorflow_intra_op_parallelism", int, 0, "Number of threads to use to parallelize the execution of an "
         "individual op.", supported=False),
    Flag("tensorflow_inter_op_parallelism", int, 0, "Controls the number of operators that can be executed "
         "simultaneously.", supported=False),
    Flag("per_process_gpu_memory_fraction", float, 0.0, "Fraction of GPU memory each process may use.",
         supported=False),
    Flag("use_alts_credentials", bool, False, "Use Google ALTS credentials", supported=False, security=True),
    Flag("platform_config_file", str, "", "If non-empty, read an ascii PlatformConfigMap protobuf.",
         supported=False),
    Flag("tensorflow_session_config_file", str, "", "If non-empty, read an ascii TensorFlow Session ConfigProto.",
         supported=False),
    Flag("thread_pool_factory_config_file", str, "", "If non-empty, read an ascii ThreadPoolConfig protobuf.",
         supported=False),
    Flag("flush_filesystem_caches", bool, True, "Flush filesystem caches after initial load.", supported=False),
    Flag("remove_unused_fields_from_bundle_metagraph", bool, True, "Removes unused fields from MetaGraphDef.",
         supported=False),
    Flag("prefer_tflite_model", bool, False, "Prefer TensorFlow Lite model from `model.tflite` file in SavedModel "
         "directory, instead of the TensorFlow model from `saved_model.pb` file. If no TensorFlow Lite model found, "
         "fallback to TensorFlow model."),
    Flag("num_tflite_pools", int, os.cpu_count() or 1, "Number of TFLite interpreters in the interpreter pool of "
         "each loaded TF Lite model (one run per interpreter at a time). If not set, the number of CPUs."),
    Flag("num_tflite_interpreters_per_pool", int, 1, "If more than 1, a TF Lite run of more rows than "
         "ceil(500 / N) (or the model's fixed batch size) is split across the pool's interpreters."),
    Flag("mixed_precision", str, "", "Mixed precision mode (bfloat16).", supported=False),
    Flag("xla_cpu_compilation_enabled", bool, False, "Enable XLA:CPU JIT.", supported=False),
]
_FLAGS = {flag.name: flag for flag in FLAGS}


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m serving`` and ``tfxsp serve``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        values, unknown = parse_flags(argv)
    except UsageError as e:
        print(f"{e}\n\n{usage()}", file=sys.stderr)
        return EXIT_FAILURE
    for arg in unknown:
        print(f"unknown argument: {arg}", file=sys.stderr)
    if values["help"]:
        print(usage())
        return EXIT_FAILURE
    if values["version"]:
        print(f"TensorFlow ModelServer: {_SERVER_VERSION} (tfx-serving-pipeline embedded server)")
        print(f"TensorFlow Library: {importlib.metadata.version('tensorflow')}")
        return 0
    _configure_logging()
    log = logging.getLogger("serving")
    for flag in FLAGS:
        if flag.supported or values[flag.name] == flag.default:
            continue
        if flag.security:  # fail closed: never serve without a security setting that was asked for
            print(f"Failed to start server. Error: --{flag.name} is not supported by the embedded server, and it is "
                  "a security setting: refusing to start without it", file=sys.stderr)
            return EXIT_FAILURE
        log.warning("--%s is not supported by the embedded server; ignored", flag.name)
    try:
        options = build_options(values)
    except StartupError as e:
        print(f"Failed to start server. Error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # google.api_core (pulled in with TensorFlow) warns about Python 3.10 on import.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core")
    from serving import server  # imports TensorFlow

    server.quiet_tensorflow()
    log.info("Starting the embedded TF Serving-compatible model server")
    return server.run(options)


def parse_flags(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """tensorflow::Flags parsing: returns the flag values and the unknown arguments."""
    values = {flag.name: flag.default for flag in FLAGS}
    unknown = []
    for arg in argv:
        if not arg.startswith("--"):
            unknown.append(arg)
            continue
        name, has_value, text = arg[2:].partition("=")
        flag = _FLAGS.get(name)
        if flag is None:
            unknown.append(arg)
            continue
        values[name] = _flag_value(flag, text if has_value else None)
    return values, unknown


def _flag_value(flag: Flag, text: str | None) -> Any:
    if flag.kind is bool:
        if text is None:
            return True
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise UsageError(f"Illegal value for flag --{flag.name}: {text!r} (expected true or false)")
    if text is None:
        raise UsageError(f"Flag --{flag.name} needs a value: --{flag.name}=<{flag.kind.__name__}>")
    if flag.kind is str:
        return text
    try:
        return flag.kind(text)
    except ValueError:
        raise UsageError(f"Illegal value for flag --{flag.name}: {text!r} (expected {flag.kind.__name__})") from None


def usage() -> str:
    lines = ["usage: python -m serving [flags]   (flags of tensorflow_model_server)", "Flags:"]
    for flag in FLAGS:
        kind = {int: "int32", bool: "bool", str: "string", float: "float"}[flag.kind]
        note = ("" if flag.supported else "  [refused by the embedded server: it does not start with it]"
                if flag.security else "  [accepted, ignored by the embedded server]")
        lines.append(f"\t--{flag.name}={_show(flag.default)}\t{kind}\t{flag.help}{note}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def build_options(values: dict[str, Any]) -> ServerOptions:
    """Validates the flags and configuration files (no TensorFlow needed). Raises StartupError."""
    if values["batching_parameters_file"] and not values["enable_batching"]:
        raise StartupError("INVALID_ARGUMENT: server_options.batching_parameters_file is set without setting "
                         "server_options.enable_batching to true.")
    if not values["port"] and not values["grpc_socket_path"]:
        raise StartupError("INVALID_ARGUMENT: At least one of server_options.grpc_port or "
                         "server_options.grpc_socket_path must be set.")
    try:
        if values["model_config_file"]:
            model_config = config_lib.read_model_server_config(values["model_config_file"])
        elif values["model_base_path"]:
            model_config = config_lib.single_model_config(values["model_name"],
                                                          os.path.abspath(values["model_base_path"]))
        else:
            raise StartupError("INVALID_ARGUMENT: Both server_options.model_base_path and "
                             "server_options.model_config_file are empty!")
        entries = config_lib.model_entries(model_config)
        batching = None
        if values["enable_batching"]:
            batching = (config_lib.read_batching_parameters(values["batching_parameters_file"])
                        if values["batching_parameters_file"] else config_lib.BatchingOptions())
        monitoring = (config_lib.read_monitoring_config(values["monitoring_config_file"])
                      if values["monitoring_config_file"] else config_lib.MonitoringOptions())
    except config_lib.ConfigFileError as e:
        raise StartupError(str(e)) from None
    except ServingError as e:
        raise StartupError(str(e)) from None
    for entry in entries:
        # The reference would poll a missing base path forever; fail fast instead (see model_manager).
        if not os.path.isdir(entry.base_path):
            raise StartupError(f"NOT_FOUND: Could not find base path {entry.base_path} for servable {entry.name}: "
                             "no such directory")
    rest_port = values["rest_api_port"]
    if rest_port and rest_port == values["port"]:
        logging.getLogger("serving").error(
            "--rest_api_port cannot be the same as --port; the HTTP/REST API will not be exported")
        rest_port = 0
    if monitoring.prometheus_enabled and not rest_port:
        logging.getLogger("serving").warning("Prometheus monitoring needs --rest_api_port; it is not exported")
    try:  # request logging: a collector type or sampling rate it cannot honour stops the start (status 255)
        logging_config_lib.check_all(model_config)
    except ServingError as e:
        raise StartupError(str(e)) from None
    for name in ("rest_api_max_body_bytes", "max_request_elements", "request_log_file_bytes"):
        if values[name] <= 0:
            raise StartupError(f"INVALID_ARGUMENT: --{name} must be positive; got {values[name]}")
    for name in ("rest_api_num_threads", "grpc_max_threads", "drain_timeout_seconds"):
        if values[name] < 0:
            raise StartupError(f"INVALID_ARGUMENT: --{name} must not be negative; got {values[name]}")
    for port in (values["port"], rest_port):
        if port:
            check_port_free(values["bind_address"], port)
    return ServerOptions(
        model_config=model_config,
        model_config_file=values["model_config_file"],
        model_config_file_poll_wait_s=values["model_config_file_poll_wait_seconds"],
        grpc_port=values["port"],
        grpc_socket_path=values["grpc_socket_path"],
        rest_api_port=rest_port,
        bind_address=values["bind_address"],
        rest=RestOptions(
            timeout_ms=values["rest_api_timeout_in_ms"],
            enable_cors=values["rest_api_enable_cors_support"],
            max_body_bytes=values["rest_api_max_body_bytes"],
            prometheus_path=monitoring.prometheus_path if monitoring.prometheus_enabled else None,
        ),
        manager=ManagerOptions(
            file_system_poll_wait_s=values["file_system_poll_wait_seconds"],
            max_num_load_retries=max(0, values["max_num_load_retries"]),
            load_retry_interval_s=max(0, values["load_retry_interval_micros"]) / 1e6,
            allow_version_labels_for_unavailable_models=values["allow_version_labels_for_unavailable_models"],
            saved_model_tags=tuple(t.strip() for t in values["saved_model_tags"].split(",") if t.strip()),
            tflite=TfLiteOptions(num_pools=max(1, values["num_tflite_pools"]),
                                 num_interpreters_per_pool=max(1, values["num_tflite_interpreters_per_pool"]))
            if values["prefer_tflite_model"] else None,
        ),
        batching=batching,
        grpc_channel_arguments=_channel_arguments(values["grpc_channel_arguments"]),
        enable_signature_method_name_check=values["enable_signature_method_name_check"],
        enable_serialization_as_tensor_content=values["enable_serialization_as_tensor_content"],
        enable_profiler=values["enable_profiler"],
        limits=limits_lib.Limits(max_request_elements=values["max_request_elements"]),
        tls=tls_lib.read_ssl_config(values["ssl_config_file"]) if values["ssl_config_file"] else None,
        allow_remote_model_management=values["allow_remote_model_management"],
        rest_slots=values["rest_api_num_threads"],
        grpc_slots=values["grpc_max_threads"],
        drain_timeout_s=values["drain_timeout_seconds"],
        enable_model_warmup=values["enable_model_warmup"],
        request_log_file_bytes=values["request_log_file_bytes"],
    )


def check_port_free(host: str, port: int) -> None:
    """Fails fast on a port in use (the real bind happens after the models have loaded)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            reason = "it is already in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise StartupError(f"UNAVAILABLE: Cannot listen on {host}:{port}: {reason}") from None


def _channel_arguments(text: str) -> tuple[tuple[str, object], ...]:
    # "k=v,k=v"; integer values are passed as integers (main.cc).
    arguments = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        arguments.append((key.strip(), int(value) if value.strip().lstrip("-").isdigit() else value.strip()))
    return tuple(arguments)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname).1s serving] %(message)s",
                                           datefmt="%Y-%m-%d %H:%M:%S"))
    log = logging.getLogger("serving")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
