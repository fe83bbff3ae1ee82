"""Server options, kept free of TensorFlow imports so the command line can validate them quickly."""
from __future__ import annotations

import dataclasses
import os

from tensorflow_serving.config import model_server_config_pb2

from serving.config import BatchingOptions
from serving.limits import Limits
from serving.tls import TlsConfig


@dataclasses.dataclass(frozen=True)
class RestOptions:
    timeout_ms: int = 30000
    enable_cors: bool = False
    max_body_bytes: int = 64 * 1024 * 1024
    prometheus_path: str | None = None  # None: monitoring page disabled


@dataclasses.dataclass(frozen=True)
class TfLiteOptions:
    """``--prefer_tflite_model`` is set: versions with a ``model.tflite`` are served from it."""

    num_pools: int = os.cpu_count() or 1  # --num_tflite_pools: interpreters per loaded model
    num_interpreters_per_pool: int = 1  # --num_tflite_interpreters_per_pool: > 1 splits large runs


@dataclasses.dataclass(frozen=True)
class ManagerOptions:
    file_system_poll_wait_s: float = 1.0
    max_num_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    allow_version_labels_for_unavailable_models: bool = False
    saved_model_tags: tuple[str, ...] = ("serve",)
    tflite: TfLiteOptions | None = None  # None: SavedModels only


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    model_config: model_server_config_pb2.ModelServerConfig
    model_config_file: str = ""
    model_config_file_poll_wait_s: float = 0.0
    grpc_port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    bind_address: str = "127.0.0.1"
    rest: RestOptions = RestOptions()
    manager: ManagerOptions = ManagerOptions()
    batching: BatchingOptions | None = None
    grpc_channel_arguments: tuple[tuple[str, object], ...] = ()
    enable_signature_method_name_check: bool = False
    enable_serialization_as_tensor_content: bool = False
    enable_profiler: bool = True
    request_threads: int = max(8, 4 * (os.cpu_count() or 1))
    limits: Limits = Limits()
    rest_slots: int = 0  # --rest_api_num_threads (0: 4 per CPU, the reference's default)
    grpc_slots: int = 0  # --grpc_max_threads (likewise)
    drain_timeout_s: float = 20.0  # --drain_timeout_seconds
    tls: TlsConfig | None = None  # --ssl_config_file
    allow_remote_model_management: bool = False
    enable_model_warmup: bool = True  # --enable_model_warmup (serving.warmup)
    request_log_file_bytes: int = 64 << 20  # --request_log_file_bytes: a request log file's size before the next
