"""All of the pipeline's configuration, in one place.

Precedence (lowest to highest): the defaults below, a config file (``tfxsp.toml`` in the working directory, or
``--config FILE``; ``tfxsp init`` writes one), environment variables ``TFXSP_<KEY>`` (for example
``TFXSP_EPOCHS=5``), then ``--set key=value``. Every value is checked before anything runs; a bad one is a
:class:`ConfigError` that names the key (and the file) and what is allowed.

A list (ignore_columns, feature_columns, slice_by) is a TOML array in the file, and a comma-separated list or a
JSON array in the environment and --set; column_roles is a TOML table (the file's ``[columns]``) or a JSON object.
"""
from __future__ import annotations

import dataclasses
import os
import typing
import urllib.parse
from collections.abc import Mapping
from typing import Any

from pipeline import config_values, metadata_url

ENV_PREFIX = "TFXSP_"
# The password of a mysql:// metadata_url without one (pipeline/metadata_url.py): the variable's value, or the first
# line of the file it names.
METADATA_PASSWORD_ENV = "TFXSP_METADATA_PASSWORD"
METADATA_PASSWORD_FILE_ENV = "TFXSP_METADATA_PASSWORD_FILE"

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "central_storage",
              "parameter_server", "tpu", "model_parallel", "hybrid_parallel")
BEAM_RUNNERS = ("direct", "direct-multiprocess", "flink", "spark", "dataflow")
# How a portable runner (flink, spark) starts the Python SDK workers; see beam_pipeline_args().
BEAM_ENVIRONMENT_TYPES = ("DOCKER", "EXTERNAL", "PROCESS", "LOOPBACK")
# Where a Kubeflow run's pipeline root may be (tfxsp kubeflow submit --pipeline-root).
KUBEFLOW_ROOT_SCHEMES = ("gs", "s3", "minio")
TASKS = ("auto", "classification", "regression")
COLUMN_ROLES = ("numeric", "categorical", "ignored")
CONFIG_FILE = "tfxsp.toml"
# The bundled example: the penguins the project ships, with the accuracy threshold of its first release.
BUNDLED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "penguins")


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
    # (or mysql://user@localhost/db?unix_socket=PATH; password also ?password_file=PATH or
    # $TFXSP_METADATA_PASSWORD[_FILE]) or grpc://host:port (the MLMD gRPC service)
    metadata_url: str = ""

    # --- The dataset: the label, and what to do with the other columns (docs/your-own-csv.md) ---
    label: str = "species"  # the label column's header
    task: str = "auto"  # auto | classification | regression
    ignore_columns: tuple[str, ...] = ()
    feature_columns: tuple[str, ...] = ()  # empty: every usable column
    slice_by: tuple[str, ...] | None = None  # columns the Evaluator slices by; unset: up to 3 categorical ones
    column_roles: Mapping[str, str] = dataclasses.field(default_factory=dict)  # header -> numeric|categorical|ignored

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
    # model_parallel, hybrid_parallel (a DTensor mesh of GPUs, else logical CPUs): the shards of each hidden kernel
    model_parallel_devices: int = 2
    data_parallel_replicas: int = 2  # hybrid_parallel: the mesh's batch axis (the batch is split this many ways)
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
    # Export the weights of the epoch with the lowest validation loss, not the last epoch's: on a small CSV a fixed
    # number of steps can overfit long before the end (not on a DTensor mesh, whose weights Keras cannot copy)
    keep_best_epoch: bool = True
    # Also write model.tflite beside the SavedModel (when TF Lite's converter can), and serve that one in the probe
    export_tflite: bool = False

    # --- Evaluation (TFMA): unset thresholds mean "beat the naive baseline by baseline_margin" ---
    min_accuracy: float | None = None  # classification: the candidate must reach this eval accuracy
    max_accuracy_drop: float = 0.02  # classification: at most this much below the last blessed model
    max_rmse: float | None = None  # regression: the candidate's eval RMSE must not exceed this
    max_rmse_increase: float = 0.05  # regression: at most this much (relative) above the last blessed model
    baseline_margin: float = 0.02  # accuracy above the majority class; relative RMSE below the mean predictor
    # CsvExampleGen splits 2:1 into train and eval, but the eval split gets about this many rows at most: on a large
    # CSV the rest train. 50,000 rows measure an accuracy to about +-0.005 (two standard errors), and TFMA
    # evaluates roughly 1,000 rows/s on a core (docs/large-data.md).
    eval_max_rows: int = 50_000

    # --- Serving, and the serving validation that probes it after every push ---
    serving_host: str = "127.0.0.1"
    grpc_port: int = 8500
    rest_port: int = 8501
    serving_validation: bool = True
    probe_examples: int = 16  # eval examples sent per signature and API
    probe_deadline_s: float = 60.0  # how long to wait for the pushed version to be AVAILABLE
    probe_tolerance: float = 1e-5  # max difference between served and in-process outputs (relative beyond 1)
    probe_max_p50_ms: float = 100.0
    probe_max_p99_ms: float = 500.0
    probe_rollback: bool = True  # move a version that fails the probe out of the base path
    # How often a model server that tfxsp starts re-reads the model config file (tfxsp models label/pin/...
    # write it): --model_config_file_poll_wait_seconds; whole seconds, as tensorflow_model_server takes them.
    model_config_poll_s: int = 2

    # --- Watching the served model: tfxsp monitor (docs/watching-a-served-model.md) ---
    # TFDV's skew comparison of the logged requests with the training data: a numeric feature whose Jensen-Shannon
    # divergence, or a categorical one whose L-infinity distance, is above its threshold is flagged.
    monitor_numeric_threshold: float = 0.3
    monitor_categorical_threshold: float = 0.3
    # header -> threshold, for the features that need another one (a TOML table, or a JSON object)
    monitor_feature_thresholds: Mapping[str, float] = dataclasses.field(default_factory=dict)

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
    def model_config_file(self) -> str:
        """TF Serving's model config file for this model (its version policy and labels), beside its base path."""
        return self.serving_model_dir + ".models.config"

    @property
    def data_dir(self) -> str:
        return os.path.abspath(self.data_root)

    @property
    def bundled_example(self) -> bool:
        """The bundled penguins with their own label: their example's thresholds apply (pipeline/evaluation.py)."""
        return os.path.realpath(self.data_dir) == os.path.realpath(BUNDLED_DATA) and self.label == "species"

    @property
    def dataset_cache_dir(self) -> str:
        """Where the statistics of the data (pipeline/dataset/statistics.py) are kept between runs."""
        return os.path.join(self.pipeline_root, "dataset")

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
        keys = ("strategy", "cpu_replicas", "workers", "parameter_servers", "model_parallel_devices",
                "data_parallel_replicas", "epochs",
                "batch_size", "learning_rate", "hidden_units", "embedding_dim", "random_seed",
                "tensorboard_update_freq", "histogram_freq", "keep_best_epoch", "export_tflite")
        return {key: getattr(self, key) for key in keys}

    def serving_validation_args(self) -> dict[str, Any]:
        """The ServingValidator's arguments (see components/serving_validation)."""
        return {
            "model_name": self.model_name, "rest_url": self.rest_url,
            "grpc_target": self.grpc_target, "num_examples": self.probe_examples,
            "load_deadline_s": self.probe_deadline_s, "tolerance": self.probe_tolerance,
            "max_p50_ms": self.probe_max_p50_ms, "max_p99_ms": self.probe_max_p99_ms,
            "rollback": self.probe_rollback,
            "prefer_tflite_model": self.export_tflite,
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
        self._validate_mesh(require)
        require(self.kubeflow_backend in ("kfp", "vertex"), "kubeflow_backend",
                "must be kfp (open-source Kubeflow Pipelines) or vertex (Vertex AI Pipelines)")
        require(self.beam_runner in BEAM_RUNNERS, "beam_runner",
                f"must be one of {', '.join(BEAM_RUNNERS)}")
        require(self.beam_direct_num_workers >= 1, "beam_direct_num_workers", "must be >= 1")
        require(self.eval_max_rows >= 1000, "eval_max_rows", "must be >= 1000 (a smaller eval split measures little)")
        self._validate_beam_runner(require)
        for key in ("train_steps", "eval_steps", "epochs", "batch_size", "hidden_units",
                    "embedding_dim"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        require(self.epochs <= self.train_steps, "epochs", "must not exceed train_steps")
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(self.tensorboard_update_freq >= 0, "tensorboard_update_freq", "must be >= 0")
        require(self.histogram_freq >= 0, "histogram_freq", "must be >= 0")
        require(self.min_accuracy is None or 0.0 <= self.min_accuracy <= 1.0, "min_accuracy",
                "must be between 0 and 1 (or unset: beat the majority class by baseline_margin)")
        require(self.max_rmse is None or self.max_rmse > 0, "max_rmse", "must be > 0 (or unset)")
        require(0.0 <= self.max_rmse_increase <= 10.0, "max_rmse_increase", "must be between 0 and 10 (relative)")
        require(0.0 <= self.baseline_margin < 1.0, "baseline_margin", "must be between 0 and 1")
        require(bool(self.label.strip()), "label", "must name the label column of the CSV files")
        require(self.task in TASKS, "task", f"must be one of {', '.join(TASKS)}")
        for name, role in self.column_roles.items():
            require(role in COLUMN_ROLES, "column_roles", f"{name!r}: a role is one of {', '.join(COLUMN_ROLES)}")
        require(0.0 <= self.max_accuracy_drop <= 1.0, "max_accuracy_drop",
                "must be between 0 and 1")
        for key in ("grpc_port", "rest_port"):
            require(0 < getattr(self, key) < 65536, key, "must be a TCP port (1-65535)")
        require(self.grpc_port != self.rest_port, "rest_port", "must differ from grpc_port")
        require(self.probe_examples >= 1, "probe_examples", "must be >= 1")
        for key in ("probe_deadline_s", "probe_max_p50_ms", "probe_max_p99_ms"):
            require(getattr(self, key) > 0, key, "must be > 0")
        require(self.probe_tolerance >= 0, "probe_tolerance", "must be >= 0")
        for key in ("monitor_numeric_threshold", "monitor_categorical_threshold"):
            require(0.0 <= getattr(self, key) <= 1.0, key, "must be between 0 and 1")
        for name, threshold in self.monitor_feature_thresholds.items():
            require(0.0 <= threshold <= 1.0, "monitor_feature_thresholds", f"{name!r}: must be between 0 and 1")
        require(self.model_config_poll_s >= 1, "model_config_poll_s", "must be >= 1 (seconds)")
        self.metadata_connection_config()  # raises ConfigError for a bad URL
        if self.kubeflow_pipeline_root:
            require(urllib.parse.urlparse(self.kubeflow_pipeline_root).scheme in KUBEFLOW_ROOT_SCHEMES
                    and bool(urllib.parse.urlparse(self.kubeflow_pipeline_root).netloc),
                    "kubeflow_pipeline_root", "must be a gs://, s3:// or minio:// URI with a bucket")
        return self

    def _validate_mesh(self, require) -> None:
        """model_parallel / hybrid_parallel: a mesh that can exist here and a model that splits evenly over it."""
        require(1 <= self.model_parallel_devices <= 64, "model_parallel_devices",
                "must be between 1 and 64 (the shards of each hidden kernel, model_parallel/hybrid_parallel)")
        require(1 <= self.data_parallel_replicas <= 64, "data_parallel_replicas",
                "must be between 1 and 64 (the batch axis of the hybrid_parallel mesh)")
        if self.strategy not in ("model_parallel", "hybrid_parallel"):
            return
        require(self.model_parallel_devices >= 2, "model_parallel_devices",
                f"strategy={self.strategy} splits the kernels over at least 2 devices")
        if self.strategy == "hybrid_parallel":
            require(self.data_parallel_replicas >= 2, "data_parallel_replicas",
                    "strategy=hybrid_parallel splits the batch at least 2 ways (with 1, use model_parallel)")
        devices = self.model_parallel_devices * (
            self.data_parallel_replicas if self.strategy == "hybrid_parallel" else 1)
        require(devices <= 64, "data_parallel_replicas",
                f"data_parallel_replicas x model_parallel_devices = {devices} devices; at most 64")
        require(self.hidden_units % self.model_parallel_devices == 0, "hidden_units",
                f"cannot be split over model_parallel_devices = {self.model_parallel_devices}: choose a width "
                "divisible by it")

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


MetadataConnection = metadata_url.MetadataConnection


def metadata_connection_config(url: str, sqlite_path: str) -> MetadataConnection:
    """MLMD connection from a URL (pipeline/metadata_url.py), the password also from the environment."""
    try:
        return metadata_url.connection_config(url, sqlite_path, os.environ.get(METADATA_PASSWORD_ENV, ""),
                                              os.environ.get(METADATA_PASSWORD_FILE_ENV, ""))
    except metadata_url.MetadataUrlError as e:
        raise ConfigError(str(e)) from None


_FIELD_TYPES = typing.get_type_hints(PipelineConfig)


def _coerce(key: str, raw: str, where: str = "") -> Any:
    """Parses a string from the environment or --set into the type of the field."""
    kind = _FIELD_TYPES[key]
    try:
        return config_values.parse(kind, raw)
    except (ValueError, TypeError):
        raise ConfigError(f"config '{key}' = {raw!r}{where}: expected {config_values.describe(kind)}") from None


def read_config_file(path: str) -> dict[str, Any]:
    """The settings in a TOML config file (`tfxsp init` writes one): top-level keys of PipelineConfig, and a
    [columns] table of header -> role (or {role = ..., ...}, as tfxsp init writes it)."""
    import tomli
    try:
        with open(path, "rb") as f:
            document = tomli.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    except tomli.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key == "columns":
            values["column_roles"] = _roles_from_table(path, value)
            continue
        if key not in _FIELD_TYPES:
            raise ConfigError(f"config file {path}: unknown key '{key}'. Known keys: {', '.join(_FIELD_TYPES)}, "
                              "and the [columns] table")
        values[key] = _from_toml(path, key, value)
    return values


def _roles_from_table(path: str, table: Any) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [columns] must be a table of header = role")
    roles = {}
    for name, entry in table.items():
        role = entry.get("role") if isinstance(entry, dict) else entry
        if role not in COLUMN_ROLES:
            raise ConfigError(f"config file {path}: [columns] {name!r} has role {role!r}; a role is one of "
                              f"{', '.join(COLUMN_ROLES)}")
        roles[name] = role
    return roles


def _from_toml(path: str, key: str, value: Any) -> Any:
    """A TOML value checked against the field's type (TOML has types of its own; strings are parsed as --set)."""
    if isinstance(value, str):
        return _coerce(key, value, f" in {path}")
    kind = _FIELD_TYPES[key]
    plain = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
    target = plain[0]
    if typing.get_origin(target) is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if target is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if target is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if target is bool and isinstance(value, bool):
        return value
    if typing.get_origin(kind) in (Mapping, dict) and isinstance(value, dict):
        try:
            return config_values.mapping(kind, value)
        except ValueError:
            pass
    raise ConfigError(f"config '{key}' = {value!r} in {path}: expected {config_values.describe(kind)}")


def load_config(overrides: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None,
                config_file: str | None = None) -> PipelineConfig:
    """The validated configuration from defaults, the config file, ``TFXSP_*`` variables and overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = dict(read_config_file(config_file)) if config_file else {}
    for key in _FIELD_TYPES:
        if ENV_PREFIX + key.upper() in environ:
            values[key] = _coerce(key, environ[ENV_PREFIX + key.upper()], f" (from ${ENV_PREFIX}{key.upper()})")
    for key, raw in (overrides or {}).items():
        if key not in _FIELD_TYPES:
            raise ConfigError(f"unknown config key '{key}'. Known keys: {', '.join(_FIELD_TYPES)}")
        values[key] = _coerce(key, raw)
    return dataclasses.replace(PipelineConfig(), **values).validate()


def default_config_file(cwd: str | None = None) -> str | None:
    """tfxsp.toml in the working directory, when there is one."""
    path = os.path.join(cwd or os.getcwd(), CONFIG_FILE)
    return path if os.path.isfile(path) else None


def parse_set_options(items: list[str]) -> dict[str, str]:
    """Turns ['epochs=5', 'strategy=mirrored'] into a dict, rejecting items without '='."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, for example --set epochs=5")
        parsed[key.strip()] = value.strip()
    return parsed
