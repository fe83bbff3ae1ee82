"""Text-format configuration files: model server config, batching parameters, monitoring config.

* ``--model_config_file``: a text-format ``tensorflow.serving.ModelServerConfig`` parsed with
  protobuf's own ``text_format`` (so every standard syntax is accepted: optional ``:`` before ``{``,
  ``,``/``;`` separators, single quotes, ``#`` comments; spec §5.6), validated with the checks and
  messages of ``model_servers/server_core.cc`` (spec §3.3 HandleReloadConfigRequest errors).
* ``--batching_parameters_file``: ``tensorflow.serving.BatchingParameters``
  (``servables/tensorflow/session_bundle_config.proto``) with the defaults of TensorFlow's
  ``SharedBatchScheduler::QueueOptions``.
* ``--monitoring_config_file``: ``tensorflow.serving.MonitoringConfig``
  (``config/monitoring_config.proto``, spec §6).

The ``tensorflow-serving-api`` wheel ships ``model_server_config_pb2`` but not the batching and
monitoring messages, so those two are declared here field-for-field (same names and numbers, so
the same files parse) in a private descriptor pool, which cannot clash with any other registration.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import Code, ServingError

TENSORFLOW_PLATFORM = "tensorflow"
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


class ConfigFileError(Exception):
    """A configuration file that cannot be read or parsed (a start-up error)."""


# --------------------------------------------------------------------------------------------
# ModelServerConfig


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """``FileSystemStoragePathSourceConfig.ServableVersionPolicy`` (spec §5.2)."""

    kind: str  # "latest" | "all" | "specific"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> set[int]:
        """The versions to serve among the numeric version directories found on disk."""
        if self.kind == "all":
            return set(available)
        if self.kind == "specific":
            return set(available) & set(self.versions)
        return set(sorted(available, reverse=True)[: self.num_versions])

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        if self.kind == "specific":
            return "specific " + ",".join(str(v) for v in self.versions)
        return "all"


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One ``ModelConfig`` entry, validated."""

    name: str
    base_path: str
    policy: VersionPolicy
    labels: Mapping[str, int]


def parse_model_server_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    return _parse_text(text, model_server_config_pb2.ModelServerConfig())


def read_model_server_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    return parse_model_server_config(_read(path, "--model_config_file"))


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """What ``--model_name``/``--model_base_path`` stand for (``BuildSingleModelConfig``)."""
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = name
    entry.base_path = base_path
    entry.model_platform = TENSORFLOW_PLATFORM
    return config


def model_entries(
    config: model_server_config_pb2.ModelServerConfig,
    previous: model_server_config_pb2.ModelServerConfig | None = None,
) -> list[ModelEntry]:
    """Validates a ModelServerConfig as ``ServerCore::ReloadConfig`` does and returns its models.

    Raises ServingError (INVALID_ARGUMENT) with the reference server's messages.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ServingError(
            Code.INVALID_ARGUMENT,
            "ServerModelConfig type not supported by HandleReloadConfigRequest. "
            "Only ModelConfigList is currently supported",
        )
    configs = list(config.model_config_list.config)
    seen: set[str] = set()
    for model in configs:
        if model.name in seen:
            raise ServingError(
                Code.INVALID_ARGUMENT, f"Illegal to list model {model.name} multiple times in config list"
            )
        seen.add(model.name)
    for model in configs:
        if not _is_absolute_path_or_uri(model.base_path):
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"Expected model {model.name} to have an absolute path or URI; got base_path()={model.base_path}",
            )
    old_platforms = {m.name: _platform(m) for m in previous.model_config_list.config} if previous else {}
    entries = []
    for model in configs:
        platform = _platform(model)
        if model.name in old_platforms and old_platforms[model.name] != platform:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"Illegal to change a model's platform. For model {model.name} platform was "
                f"{old_platforms[model.name]} and new platform requested is {platform}",
            )
        if platform != TENSORFLOW_PLATFORM:
            raise ServingError(Code.INVALID_ARGUMENT, f"Model {model.name} requests unsupported platform {platform}")
        if "://" in model.base_path:
            # The embedded server reads local directories only; say so instead of waiting forever.
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"Model {model.name} has base path {model.base_path}: the embedded server serves local "
                "file system paths only",
            )
        entries.append(
            ModelEntry(
                name=model.name,
                base_path=os.path.normpath(model.base_path),
                policy=_version_policy(model),
                labels=dict(model.version_labels),
            )
        )
    return entries


def _platform(model: model_server_config_pb2.ModelConfig) -> str:
    # server_core.cc GetPlatform
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {model.name}",
            )
        if model.model_type != model_server_config_pb2.TENSORFLOW:
            raise ServingError(
                Code.INVALID_ARGUMENT, f"ModelServerConfig::model_type choice {model.model_type} not supported."
            )
        return TENSORFLOW_PLATFORM
    if not model.model_platform:
        raise ServingError(
            Code.INVALID_ARGUMENT,
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {model.name}",
        )
    return model.model_platform


def _version_policy(model: model_server_config_pb2.ModelConfig) -> VersionPolicy:
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        return VersionPolicy("specific", versions=tuple(sorted(set(policy.specific.versions))))
    # latest{} is the default; num_versions defaults to and is at least 1.
    num_versions = policy.latest.num_versions if choice == "latest" else 1
    return VersionPolicy("latest", num_versions=max(1, num_versions))


def _is_absolute_path_or_uri(path: str) -> bool:
    return os.path.isabs(path) or "://" in path


# --------------------------------------------------------------------------------------------
# BatchingParameters and MonitoringConfig (declared here; see the module docstring)


def _build_private_messages() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    F = descriptor_pb2.FieldDescriptorProto
    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        dependency=["google/protobuf/wrappers.proto"],
        syntax="proto3",
    )
    params = batching.message_type.add(name="BatchingParameters")
    for name, number, type_name in [
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
        ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, ".google.protobuf.Int64Value"),
    ]:
        params.field.add(name=name, number=number, type=F.TYPE_MESSAGE, type_name=type_name, label=F.LABEL_OPTIONAL)
    params.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    params.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    pool.Add(batching)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    prometheus = monitoring.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    monitoring_config = monitoring.message_type.add(name="MonitoringConfig")
    monitoring_config.field.add(
        name="prometheus_config",
        number=1,
        type=F.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
        label=F.LABEL_OPTIONAL,
    )
    pool.Add(monitoring)

    factory = message_factory.MessageFactory(pool)
    return {
        name: factory.GetPrototype(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    }


_PRIVATE_MESSAGES = _build_private_messages()
BatchingParameters = _PRIVATE_MESSAGES["BatchingParameters"]
MonitoringConfig = _PRIVATE_MESSAGES["MonitoringConfig"]


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """Resolved batching parameters (unset fields take ``SharedBatchScheduler`` defaults)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 1000

    @property
    def execution_batch_limit(self) -> int:
        """The largest batch the model is called with."""
        return self.max_execution_batch_size if self.enable_large_batch_splitting else self.max_batch_size


def parse_batching_parameters(text: str) -> BatchingOptions:
    params = _parse_text(text, BatchingParameters())
    defaults = BatchingOptions()

    def value(field: str, default):
        return getattr(params, field).value if params.HasField(field) else default

    options = BatchingOptions(
        max_batch_size=value("max_batch_size", defaults.max_batch_size),
        batch_timeout_micros=value("batch_timeout_micros", defaults.batch_timeout_micros),
        max_enqueued_batches=value("max_enqueued_batches", defaults.max_enqueued_batches),
        num_batch_threads=value("num_batch_threads", defaults.num_batch_threads),
        allowed_batch_sizes=tuple(params.allowed_batch_sizes),
        pad_variable_length_inputs=params.pad_variable_length_inputs,
        enable_large_batch_splitting=value("enable_large_batch_splitting", False),
        max_execution_batch_size=value("max_execution_batch_size", value("max_batch_size", defaults.max_batch_size)),
    )
    _validate_batching(options)
    return options


def read_batching_parameters(path: str) -> BatchingOptions:
    return parse_batching_parameters(_read(path, "--batching_parameters_file"))


def _validate_batching(options: BatchingOptions) -> None:
    for field in ("max_batch_size", "num_batch_threads", "max_enqueued_batches", "max_execution_batch_size"):
        if getattr(options, field) < 1:
            raise ConfigFileError(f"Batching parameter {field} must be >= 1; got {getattr(options, field)}")
    if options.batch_timeout_micros < 0:
        raise ConfigFileError("Batching parameter batch_timeout_micros must be >= 0; "
                              f"got {options.batch_timeout_micros}")
    if options.enable_large_batch_splitting and options.max_execution_batch_size > options.max_batch_size:
        raise ConfigFileError("max_execution_batch_size must be <= max_batch_size "
                              "when enable_large_batch_splitting is set")
    sizes = options.allowed_batch_sizes
    if sizes:
        # bundle_factory_util.cc WrapSessionForBatching
        if list(sizes) != sorted(set(sizes)):
            raise ConfigFileError("allowed_batch_sizes entries must be in increasing order")
        if sizes[-1] != options.execution_batch_limit:
            raise ConfigFileError(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{sizes[-1]}; expected {options.execution_batch_limit}"
            )


@dataclasses.dataclass(frozen=True)
class MonitoringOptions:
    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


def parse_monitoring_config(text: str) -> MonitoringOptions:
    config = _parse_text(text, MonitoringConfig())
    prometheus = config.prometheus_config
    return MonitoringOptions(
        prometheus_enabled=prometheus.enable, prometheus_path=prometheus.path or DEFAULT_PROMETHEUS_PATH
    )


def read_monitoring_config(path: str) -> MonitoringOptions:
    return parse_monitoring_config(_read(path, "--monitoring_config_file"))


# --------------------------------------------------------------------------------------------


def _read(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigFileError(f"Cannot read {flag} {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigFileError(f"Cannot read {flag} {path}: not UTF-8 text ({e})") from e


def _parse_text(text: str, message):
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as e:
        # Same prefix the reference server's parser writes (spec §1.2 step 2, testBadModelConfig).
        raise ConfigFileError(f"Error parsing text-format {message.DESCRIPTOR.full_name}: {e}") from e
