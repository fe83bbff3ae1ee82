"""All of the pipeline's configuration, in one place.

Precedence (lowest to highest): the defaults below, environment variables ``TFXSP_<KEY>`` (for
example ``TFXSP_EPOCHS=5``), then ``tfxsp run --set key=value``. Every value is checked before
anything runs; a bad one is a :class:`ConfigError` that names the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

from ml_metadata.proto import metadata_store_pb2

ENV_PREFIX = "TFXSP_"

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "central_storage",
              "parameter_server", "tpu")
BEAM_RUNNERS = ("direct", "direct-multiprocess", "flink", "spark", "dataflow")
# How a portable runner (flink, spark) starts the Python SDK workers; see beam_pipeline_args().
BEAM_ENVIRONMENT_TYPES = ("DOCKER", "EXTERNAL", "PROCESS", "LOOPBACK")
# Where a Kubeflow run's pipeline root may be (tfxsp kubeflow submit --pipeline-root).
KUBEFLOW_ROOT_SCHEMES = ("gs", "s3", "minio")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    # --- Identity and locations (relative paths are relative to the working directory) ---
    pipeline_name: str = "penguin_serving"
    tfx_root: str = "tfx_runs"
    data_root: str = "data/penguins"
    # Where Pusher writes <serving_model_base>/<model_name>/<version>/; empty = <tfx_root>/serving_model
    serving_model_base: str = ""
    model_name: str = "penguin"
    # ML Metadata: empty = SQLite at <pipeline_root>/metadata.db; or mysql://user:password@host:port/db
    # or grpc://host:port (the MLMD gRPC service)
    metadata_url: str = ""

    # --- Data processing (Beam): every Beam-powered component; mapped in beam_pipeline_args() ---
    # direct | direct-multiprocess | flink | spark | dataflow
    beam_runner: str = "direct"
    beam_direct_num_workers: int = 1  # direct: threads; direct-multiprocess: worker processes
    # flink, spark: Beam's PortableRunner submits to the runner's job service at host:port
    beam_job_endpoint: str = ""
    # flink, spark: how the Python SDK workers start. DOCKER (image: beam_environment_config, else
    # pipeline_image), EXTERNAL (beam_environment_config = worker pool host:port), PROCESS
    # (beam_environment_config = '{"command": "/opt/apache/beam/boot"}'), LOOPBACK (in this process)
    beam_environment_type: str = "DOCKER"
    beam_environment_config: str = ""
    # dataflow: the workers run pipeline_image (it must be in a registry Dataflow can pull)
    gcp_project: str = ""
    gcp_region: str = ""
    beam_temp_location: str = ""  # gs://bucket/path for Beam's temporary and staging files

    # --- Kubeflow Pipelines (tfxsp kubeflow compile / submit); paths as the pods see them ---
    pipeline_image: str = "tfx-serving-pipeline:latest"  # built by `make image`
    kubeflow_pipeline_root: str = ""  # gs://, s3:// or minio:// URI; the runs' pipeline root
    kubeflow_data_root: str = ""  # folder of CSV files, e.g. gs://bucket/data/penguins
    kubeflow_serving_model_base: str = ""  # Pusher writes <this>/<model_name>/<version>/
    # kfp: open-source Kubeflow Pipelines 2, which cannot run TFX's resolver nodes, so the compiled
    # pipeline has no baseline model (the Evaluator's change threshold is skipped); vertex: Vertex
    # AI Pipelines, which runs them.
    kubeflow_backend: str = "kfp"

    # --- Training ---
    strategy: str = "default"
    # Local forms of the distributed strategies (see docs/distributed-training.md):
    cpu_replicas: int = 2  # mirrored, central_storage on a machine without GPUs: logical CPUs
    workers: int = 2  # multi_worker_mirrored, parameter_server without TF_CONFIG: worker processes
    parameter_servers: int = 1  # parameter_server without TF_CONFIG: parameter server processes
    train_steps: int = 800
    eval_steps: int = 4
    epochs: int = 16
    batch_size: int = 32  # per replica; the global batch is this times the number of replicas
    learning_rate: float = 0.01
    hidden_units: int = 16
    embedding_dim: int = 4
    random_seed: int = 42
    tensorboard_update_freq: int = 10  # steps between per-step scalars; 0 = per epoch only
    histogram_freq: int = 1  # epochs between weight histograms; 0 = off

    # --- Evaluation (TFMA) ---
    min_accuracy: float = 0.9  # value threshold: the candidate must reach this eval accuracy
    max_accuracy_drop: float = 0.02  # change threshold: how much worse than the baseline is allowed

    # --- Serving, and the serving validation that probes it after every push ---
    serving_host: str = "127.0.0.1"
    grpc_port: int = 8500
    rest_port: int = 8501
    serving_validation: bool = True
    probe_examples: int = 16  # eval examples sent per signature and API
    probe_deadline_s: float = 60.0  # how long to wait for the pushed version to be AVAILABLE
    probe_tolerance: float = 1e-5  # max abs difference between served and in-process outputs
    probe_max_p50_ms: float = 100.0
    probe_max_p99_ms: float = 500.0
    probe_rollback: bool = True  # move a version that fails the probe out of the base path

    # ---------------------------------------------------------------- derived locations
    @property
    def pipeline_root(self) -> str:
        return os.path.abspath(os.path.join(self.tfx_root, "pipelines", self.pipeline_name))

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.pipeline_root, "metadata.db")

    @property
    def serving_model_dir(self) -> str:
        """The TF Serving model base path: versions are pushed into numbered folders under it."""
        base = self.serving_model_base or os.path.join(self.tfx_root, "serving_model")
        return os.path.abspath(os.path.join(base, self.model_name))

    @property
    def data_dir(self) -> str:
        return os.path.abspath(self.data_root)

    @property
    def rest_url(self) -> str:
        return f"http://{self.serving_host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.serving_host}:{self.grpc_port}"

    def beam_pipeline_args(self) -> list[str]:
        """Beam options for every Beam-powered component (ExampleGen, StatisticsGen, Transform, ...):
        the one place where `beam_runner` and its settings become Beam flags."""
        if self.beam_runner in ("direct", "direct-multiprocess"):
            mode = "in_memory" if self.beam_runner == "direct" else "multi_processing"
            return [f"--direct_running_mode={mode}",
                    f"--direct_num_workers={self.beam_direct_num_workers}"]
        if self.beam_runner in ("flink", "spark"):
            args = ["--runner=PortableRunner", f"--job_endpoint={self.beam_job_endpoint}",
                    f"--environment_type={self.beam_environment_type}"]
            environment = self.beam_environment_config or (
                self.pipeline_image if self.beam_environment_type == "DOCKER" else "")
            return args + ([f"--environment_config={environment}"] if environment else [])
        if self.beam_runner == "dataflow":
            return ["--runner=DataflowRunner", f"--project={self.gcp_project}",
                    f"--region={self.gcp_region}", f"--temp_location={self.beam_temp_location}",
                    f"--sdk_container_image={self.pipeline_image}"]
        raise ConfigError(f"config 'beam_runner' = {self.beam_runner!r}: no Beam options for it")

    def trainer_hparams(self) -> dict[str, Any]:
        """What run_fn receives as fn_args.custom_config."""
        keys = ("strategy", "cpu_replicas", "workers", "parameter_servers", "epochs",
                "batch_size", "learning_rate", "hidden_units", "embedding_dim", "random_seed",
                "tensorboard_update_freq", "histogram_freq")
        return {key: getattr(self, key) for key in keys}

    def serving_validation_args(self) -> dict[str, Any]:
        """The ServingValidator's arguments (see components/serving_validation)."""
        return {
            "model_name": self.model_name, "rest_url": self.rest_url,
            "grpc_target": self.grpc_target, "num_examples": self.probe_examples,
            "load_deadline_s": self.probe_deadline_s, "tolerance": self.probe_tolerance,
            "max_p50_ms": self.probe_max_p50_ms, "max_p99_ms": self.probe_max_p99_ms,
            "rollback": self.probe_rollback,
        }

    def metadata_connection_config(self) -> MetadataConnection:
        return metadata_connection_config(self.metadata_url, self.metadata_path)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---------------------------------------------------------------- checks
    def validate(self) -> PipelineConfig:
        def require(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"config '{key}' = {getattr(self, key)!r}: {why}")

        require(bool(self.pipeline_name.strip()), "pipeline_name", "must not be empty")
        require(self.model_name.strip() != "" and "/" not in self.model_name, "model_name",
                "must be a non-empty name without '/'")
        require(self.strategy in STRATEGIES, "strategy", f"must be one of {', '.join(STRATEGIES)}")
        require(1 <= self.cpu_replicas <= 64, "cpu_replicas",
                "must be between 1 and 64 (logical CPU devices for mirrored/central_storage)")
        require(1 <= self.workers <= 32, "workers",
                "must be between 1 and 32 (local worker processes for multi_worker_mirrored/"
                "parameter_server)")
        require(1 <= self.parameter_servers <= 8, "parameter_servers",
                "must be between 1 and 8 (local parameter server processes)")
        require(self.kubeflow_backend in ("kfp", "vertex"), "kubeflow_backend",
                "must be kfp (open-source Kubeflow Pipelines) or vertex (Vertex AI Pipelines)")
        require(self.beam_runner in BEAM_RUNNERS, "beam_runner",
                f"must be one of {', '.join(BEAM_RUNNERS)}")
        require(self.beam_direct_num_workers >= 1, "beam_direct_num_workers", "must be >= 1")
        self._validate_beam_runner(require)
        for key in ("train_steps", "eval_steps", "epochs", "batch_size", "hidden_units",
                    "embedding_dim"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        require(self.epochs <= self.train_steps, "epochs", "must not exceed train_steps")
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(self.tensorboard_update_freq >= 0, "tensorboard_update_freq", "must be >= 0")
        require(self.histogram_freq >= 0, "histogram_freq", "must be >= 0")
        require(0.0 <= self.min_accuracy <= 1.0, "min_accuracy", "must be between 0 and 1")
        require(0.0 <= self.max_accuracy_drop <= 1.0, "max_accuracy_drop",
                "must be between 0 and 1")
        for key in ("grpc_port", "rest_port"):
            require(0 < getattr(self, key) < 65536, key, "must be a TCP port (1-65535)")
        require(self.grpc_port != self.rest_port, "rest_port", "must differ from grpc_port")
        require(self.probe_examples >= 1, "probe_examples", "must be >= 1")
        for key in ("probe_deadline_s", "probe_max_p50_ms", "probe_max_p99_ms"):
            require(getattr(self, key) > 0, key, "must be > 0")
        require(self.probe_tolerance >= 0, "probe_tolerance", "must be >= 0")
        self.metadata_connection_config()  # raises ConfigError for a bad URL
        if self.kubeflow_pipeline_root:
            require(urllib.parse.urlparse(self.kubeflow_pipeline_root).scheme in KUBEFLOW_ROOT_SCHEMES
                    and bool(urllib.parse.urlparse(self.kubeflow_pipeline_root).netloc),
                    "kubeflow_pipeline_root", "must be a gs://, s3:// or minio:// URI with a bucket")
        return self

    def _validate_beam_runner(self, require) -> None:
        """The chosen runner's own settings, so a run never starts with a runner it cannot use."""
        runner = self.beam_runner
        if runner in ("flink", "spark"):
            host, _, port = self.beam_job_endpoint.rpartition(":")
            require(bool(host) and port.isdigit(), "beam_job_endpoint",
                    f"beam_runner={runner} needs the job service as host:port, e.g. "
                    "--set beam_job_endpoint=localhost:8099")
            require(self.beam_environment_type in BEAM_ENVIRONMENT_TYPES, "beam_environment_type",
                    f"must be one of {', '.join(BEAM_ENVIRONMENT_TYPES)}")
            require(self.beam_environment_type not in ("EXTERNAL", "PROCESS")
                    or bool(self.beam_environment_config), "beam_environment_config",
                    f"beam_environment_type={self.beam_environment_type} needs it: EXTERNAL takes "
                    "the worker pool's host:port, PROCESS a JSON {\"command\": ...}")
        elif runner == "dataflow":
            for key in ("gcp_project", "gcp_region"):
                require(bool(getattr(self, key).strip()), key, "beam_runner=dataflow needs it")
            require(self.beam_temp_location.startswith("gs://"), "beam_temp_location",
                    "beam_runner=dataflow needs a gs://bucket/path for temporary files")
            require("/" in self.pipeline_image, "pipeline_image",
                    "beam_runner=dataflow runs the workers from this image, so it must be a "
                    "registry path Dataflow can pull, e.g. gcr.io/PROJECT/tfx-serving-pipeline:TAG")


# What MetadataStore(...) takes: a direct connection (SQLite, MySQL) or an MLMD gRPC client's.
MetadataConnection = metadata_store_pb2.ConnectionConfig | metadata_store_pb2.MetadataStoreClientConfig


def metadata_connection_config(url: str, sqlite_path: str) -> MetadataConnection:
    """MLMD connection from a URL: '' or sqlite:///path (SQLite), mysql://user:pw@host:port/db, or
    grpc://host:port (the MLMD gRPC service; a MetadataStoreClientConfig)."""
    config = metadata_store_pb2.ConnectionConfig()
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "grpc":
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or not port:
            raise ConfigError(f"config 'metadata_url' = {url!r}: an MLMD gRPC URL needs a host and "
                              "a port: grpc://host:8080")
        return metadata_store_pb2.MetadataStoreClientConfig(host=parsed.hostname, port=port)
    if not url or parsed.scheme == "sqlite":
        config.sqlite.filename_uri = (parsed.path if url else sqlite_path) or sqlite_path
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        return config
    if parsed.scheme == "mysql":
        if not parsed.hostname or not parsed.path.strip("/"):
            raise ConfigError(f"config 'metadata_url' = {url!r}: a MySQL URL needs a host and a "
                              "database: mysql://user:password@host:3306/database")
        config.mysql.host = parsed.hostname
        config.mysql.port = parsed.port or 3306
        config.mysql.database = parsed.path.strip("/")
        config.mysql.user = urllib.parse.unquote(parsed.username or "")
        config.mysql.password = urllib.parse.unquote(parsed.password or "")
        return config
    raise ConfigError(f"config 'metadata_url' = {url!r}: use sqlite:///path/to/metadata.db, "
                      "mysql://user:password@host:port/database or grpc://host:port")


def _coerce(key: str, raw: str, default: Any) -> Any:
    """Parses a string from the environment or --set into the type of the field's default."""
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return raw
    except ValueError:
        raise ConfigError(f"config '{key}' = {raw!r}: expected a {type(default).__name__}") from None


def load_config(overrides: Mapping[str, str] | None = None,
                environ: Mapping[str, str] | None = None) -> PipelineConfig:
    """Builds the validated configuration from defaults, ``TFXSP_*`` variables and overrides."""
    environ = os.environ if environ is None else environ
    defaults = PipelineConfig()
    fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(PipelineConfig)}
    values: dict[str, Any] = {}
    for key, default in fields.items():
        if ENV_PREFIX + key.upper() in environ:
            values[key] = _coerce(key, environ[ENV_PREFIX + key.upper()], default)
    for key, raw in (overrides or {}).items():
        if key not in fields:
            raise ConfigError(f"unknown config key '{key}'. Known keys: {', '.join(fields)}")
        values[key] = _coerce(key, raw, fields[key])
    return dataclasses.replace(defaults, **values).validate()


def parse_set_options(items: list[str]) -> dict[str, str]:
    """Turns ['epochs=5', 'strategy=mirrored'] into a dict, rejecting items without '='."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, for example --set epochs=5")
        parsed[key.strip()] = value.strip()
    return parsed
