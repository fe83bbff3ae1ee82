"""The tf.distribute strategy the Trainer builds and compiles its model under, chosen by config.

  name                   replicas in the local form       set up before TensorFlow's first op
  default                1: no distribution               -
  one_device             1, on /gpu:0 (or /cpu:0)         -
  mirrored               every GPU, else `cpu_replicas`   logical CPU devices
                         logical CPUs
  central_storage        the same; variables on /cpu:0    logical CPU devices
  multi_worker_mirrored  one per worker (TF_CONFIG)       collective ops, gRPC server
  parameter_server       asynchronous workers; the        connection to the cluster
                         variables on the PSs
  tpu                    TPU cores (TPUClusterResolver)   TPU system
  model_parallel         a 1 x M DTensor mesh: kernels    B*M logical CPU devices
                         split over M devices (mesh.py)
  hybrid_parallel        a B x M mesh: batch split B      the same
                         ways, kernels M ways

Which processes exist is pipeline/training/launcher.py's business; this module only builds the
strategy inside the process that trains. What the last column sets up must happen before the TensorFlow
runtime starts, so `needs_fresh_process` says when this process can no longer host a strategy.
"""
import os
from typing import Any

import tensorflow as tf
from tensorflow.python.eager import context

from pipeline.training import mesh, tf_config

NAMES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "central_storage",
         "parameter_server", "tpu", *mesh.NAMES)
CLUSTER_STRATEGIES = ("multi_worker_mirrored", "parameter_server")

# Set by pipeline/training/launcher.py for its local clusters: how long the workers of
# multi_worker_mirrored wait for each other to join, so that one that died before it joined fails
# the others instead of leaving them waiting (TensorFlow's default is an hour).
REGISTER_TIMEOUT_ENV = "TFXSP_CLUSTER_REGISTER_TIMEOUT_S"


class NoTPUError(RuntimeError):
    """strategy=tpu on a machine from which no TPU can be reached."""


def runtime_initialized() -> bool:
    """True once this process's TensorFlow runtime has started (after its first op). From then on
    logical devices and collective ops can no longer be configured."""
    # TensorFlow has no public query for this; its public setters raise only once it is too late to choose a
    # fresh process instead.
    return context.context()._context_handle is not None


def _gpus() -> list[Any]:
    return tf.config.list_physical_devices("GPU")


def _logical_cpus(hparams: dict[str, Any]) -> int:
    """How many logical CPU devices the configured strategy splits the CPU into (1: none)."""
    if _gpus():
        return 1
    if hparams["strategy"] in ("mirrored", "central_storage"):
        return int(hparams.get("cpu_replicas", 1))
    shape = mesh.shape_of(hparams)
    return shape.devices if shape else 1


def needs_fresh_process(hparams: dict[str, Any]) -> str | None:
    """Why this process cannot build the configured strategy any more (None if it can).

    Logical CPU devices and collective ops must be set up before the first TensorFlow op runs; in
    `tfxsp run` the Transform component has long run TensorFlow in the same process by then.
    """
    name = hparams["strategy"]
    if not runtime_initialized():
        return None
    wanted = _logical_cpus(hparams)
    if wanted > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        configured = tf.config.get_logical_device_configuration(cpu) or []
        if len(configured) != wanted:
            return (f"{name} needs {wanted} logical CPU devices, and this "
                    "process's TensorFlow runtime is already running")
    if name in CLUSTER_STRATEGIES:
        return f"{name} must configure collective ops or a cluster before TensorFlow starts"
    return None


def configure_cpu_replicas(n: int) -> list[str]:
    """Splits the CPU into `n` logical devices (before any op runs) and returns their names."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu) or []
    if n > 1 and len(current) != n:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
        except RuntimeError as e:
            raise RuntimeError(
                f"cannot create {n} logical CPU devices: this process's TensorFlow runtime is "
                f"already initialized ({e})") from None
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if n > 1 and len(devices) != n:
        raise RuntimeError(f"asked for {n} logical CPU devices, TensorFlow has {devices}")
    return devices


def replica_devices(hparams: dict[str, Any]) -> list[str]:
    """The devices that mirrored and central_storage replicate over: all GPUs, else logical CPUs."""
    gpus = tf.config.list_logical_devices("GPU") if _gpus() else []
    if gpus:
        return [d.name for d in gpus]
    return configure_cpu_replicas(int(hparams.get("cpu_replicas", 1)))


def mesh_devices(shape: mesh.MeshShape) -> list[str]:
    """The devices of a model_parallel / hybrid_parallel mesh: the first B*M GPUs, else B*M logical CPUs."""
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")] if _gpus() else []
    if gpus:
        if len(gpus) < shape.devices:
            raise mesh.MeshError(
                f"a {shape.batch} x {shape.model} mesh needs {shape.devices} GPUs and this machine has "
                f"{len(gpus)}: lower data_parallel_replicas or model_parallel_devices")
        return gpus[:shape.devices]
    return configure_cpu_replicas(shape.devices)


def _tpu_strategy() -> tf.distribute.Strategy:
    """TPUStrategy on the TPU named by $TPU_NAME (a Cloud TPU node), else this TPU VM's own TPU.
    Raises NoTPUError, before anything is trained, when there is none."""
    tpu = os.environ.get("TPU_NAME", "local")
    error = None
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        error = e
    if error is not None:  # raised here, not in `except`, so TensorFlow's error is not chained
        lines = str(error).strip().splitlines()
        detail = lines[0].split(" Failed in initialization")[0][:200] if lines else ""
        raise NoTPUError(
            f"strategy 'tpu': no TPU is reachable from this machine "
            f"(TPUClusterResolver(tpu={tpu!r}): {detail or type(error).__name__}). Nothing was "
            "trained. Run the Trainer on a Cloud TPU VM, or set TPU_NAME to a reachable TPU, or "
            "choose another strategy (--set strategy=mirrored).")
    return tf.distribute.TPUStrategy(resolver)


def _configure_coordination(resolver, register_timeout_s: float) -> None:
    """Configures the coordination service as MultiWorkerMirroredStrategy would (it skips its own
    when one is configured), with a registration timeout."""
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.tsl.protobuf import coordination_config_pb2
    if context.context().coordination_service is not None:
        return
    spec = multi_worker_util.normalize_cluster_spec(resolver.cluster_spec())
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        cluster_register_timeout_in_ms=int(register_timeout_s * 1000),
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job,
                                                                 num_tasks=spec.num_tasks(job))
                          for job in ("chief", "worker") if job in spec.jobs])


def make_strategy(hparams: dict[str, Any]) -> tf.distribute.Strategy:
    """Returns the strategy named by hparams['strategy'], built in this process.

    multi_worker_mirrored and parameter_server read the cluster from TF_CONFIG, which a cluster
    (TFJob, Vertex AI) or pipeline/training/launcher.py has set.
    """
    name = hparams["strategy"]
    if name == "default" or name in mesh.NAMES:  # DTensor: the mesh, not a tf.distribute strategy, distributes
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if _gpus() else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=replica_devices(hparams))
    if name == "central_storage":
        return tf.distribute.experimental.CentralStorageStrategy(
            compute_devices=replica_devices(hparams), parameter_device="/cpu:0")
    if name == "tpu":
        return _tpu_strategy()
    if name in CLUSTER_STRATEGIES and not tf_config.read().get("cluster"):
        raise RuntimeError(f"strategy {name!r} needs TF_CONFIG with a cluster; run it through "
                           "run_fn, which starts a local cluster when there is none")
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if name == "multi_worker_mirrored":
        if os.environ.get(REGISTER_TIMEOUT_ENV):
            _configure_coordination(resolver, float(os.environ[REGISTER_TIMEOUT_ENV]))
        # No CommunicationOptions(timeout_seconds=...): TensorFlow 2.16 starts a thread per
        # collective op that sleeps for the timeout, thousands within minutes. A worker that dies
        # is detected by the coordination service's heartbeats instead.
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if name == "parameter_server":
        num_ps = len(resolver.cluster_spec().as_dict().get("ps", []))
        # As TF's guide does: shard only variables of at least 256 KiB, over at most every PS.
        partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=256 << 10, max_shards=max(1, num_ps))
        return tf.distribute.experimental.ParameterServerStrategy(
            resolver, variable_partitioner=partitioner)
    raise ValueError(f"strategy {name!r} is not supported by this Trainer; one of {NAMES}")


def cluster_spec(strategy: tf.distribute.Strategy) -> dict[str, list[str]]:
    # ParameterServerStrategy keeps its resolver without exposing it as `cluster_resolver`.
    resolver = (getattr(strategy, "cluster_resolver", None)
                or getattr(strategy, "_cluster_resolver", None))
    return resolver.cluster_spec().as_dict() if resolver is not None else {}


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Worker processes taking part in training (1 without a cluster)."""
    spec = cluster_spec(strategy)
    if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        return len(spec.get("worker", []))
    return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def num_parameter_servers(strategy: tf.distribute.Strategy) -> int:
    return len(cluster_spec(strategy).get("ps", []))


def task_name(strategy: tf.distribute.Strategy) -> str:
    """'worker-1', 'chief-0', ...: this process's task in the cluster ('chief-0' without one)."""
    resolver = (getattr(strategy, "cluster_resolver", None)
                or getattr(strategy, "_cluster_resolver", None))
    if resolver is None or not cluster_spec(strategy) or resolver.task_type is None:
        return "chief-0"
    return f"{resolver.task_type}-{resolver.task_id or 0}"


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The one process that writes the model, TensorBoard logs and checkpoints."""
    return bool(strategy.extended.should_checkpoint)
