"""Where the Trainer trains: in its own process, in a fresh process, or in a local cluster of processes.

`run_training(fn_args, "module:function")` is what the Trainer's run_fn calls; the function it names trains in the
process that calls it (pipeline/modules/trainer.py's train_and_export). It is named, not passed, so that every
process of a cluster imports the same code by the same name (and this package imports nothing of modules/).
Which processes take part:

* A strategy without process-level set-up (default, one_device, tpu), or whose set-up this process can still do:
  this process.
* A strategy that must set TensorFlow up before its first op (logical CPU devices for mirrored and central_storage;
  collective ops or a cluster connection for multi_worker_mirrored and parameter_server) when this process's
  TensorFlow runtime already runs -- in `tfxsp run`, Transform ran TensorFlow in the same process: the same
  run_training in one fresh child process.
* multi_worker_mirrored with TF_CONFIG set (a TFJob, Vertex AI, a hand-made cluster): as is, this process is the
  task that TF_CONFIG names. Without TF_CONFIG, a local cluster of `workers` workers on loopback: this process is
  worker 0, the chief (TF_CONFIG is set only while it trains, then restored), and `workers`-1 child processes run the
  same training, each with its own TF_CONFIG.
* parameter_server with TF_CONFIG: the chief coordinates (ClusterCoordinator); a worker or ps task runs a
  tf.distribute.Server until the cluster kills it. Without TF_CONFIG: `workers` worker and `parameter_servers` ps
  processes, each a tf.distribute.Server on loopback, and this process coordinates as the chief.

A local cluster runs in a loopback-only network namespace where Linux allows it (network.py): the chief is this
process only if it already is in such a namespace; otherwise a fresh child starts the cluster inside one. Where
isolation is not possible the cluster's addresses are the host's loopback ones (TensorFlow's servers still listen on
every interface: it lets a caller choose their port, not their address), a warning says so in the log, and the
record network.MARKER in model_run_dir (isolated or not, why, the cluster's addresses) lets `tfxsp run` say so on
the terminal.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

from absl import logging

from pipeline.training import network, tf_config
from pipeline.training.cluster import LocalCluster, TrainFn

FINISH_TIMEOUT_S = 600  # how long the other workers may still run after the chief finished
# How long multi_worker_mirrored's workers wait for each other to join (they are all up by then).
REGISTER_TIMEOUT_S = 180


def run_training(fn_args: Any, train_fn: str) -> None:
    """Runs the function `train_fn` names ("package.module:function") on `fn_args` in the processes that the
    configured strategy needs."""
    from pipeline.training import strategies  # imports TensorFlow, which the worker's `loopback` must not need
    hparams = dict(fn_args.custom_config)
    name = hparams["strategy"]
    config = tf_config.read()
    if name in strategies.CLUSTER_STRATEGIES and config.get("cluster"):
        task_type = config.get("task", {}).get("type")
        if name == "parameter_server" and task_type in ("worker", "ps"):
            run_server_task()  # a real cluster's worker or parameter server: never returns
        if strategies.runtime_initialized():
            _run_in_fresh_process(fn_args, train_fn, isolate=False)  # keeps TF_CONFIG
        else:
            resolve(train_fn)(fn_args)
        return
    if name in strategies.CLUSTER_STRATEGIES:
        if strategies.runtime_initialized() or _should_isolate(fn_args):
            logging.info("Starting the local %s cluster from a fresh process", name)
            _run_in_fresh_process(fn_args, train_fn, isolate=_can_isolate(fn_args), env={tf_config.ENV: None})
        elif name == "multi_worker_mirrored":
            _local_multi_worker(fn_args, train_fn, int(hparams["workers"]))
        else:
            _local_parameter_servers(fn_args, train_fn, int(hparams["workers"]), int(hparams["parameter_servers"]))
        return
    reason = strategies.needs_fresh_process(hparams)
    if reason:
        logging.info("Training in a fresh process: %s", reason)
        _run_in_fresh_process(fn_args, train_fn, isolate=False, env={tf_config.ENV: None})
        return
    resolve(train_fn)(fn_args)


def resolve(train_fn: str) -> TrainFn:
    """The function that "package.module:function" names."""
    module, _, name = train_fn.partition(":")
    return getattr(importlib.import_module(module), name)


def run_server_task(ready_file: str | None = None) -> None:
    """Runs the tf.distribute.Server of TF_CONFIG's task (a parameter_server worker or ps) until the process is
    killed."""
    import tensorflow as tf
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type, task_index=resolver.task_id,
                                  protocol=resolver.rpc_layer or "grpc", start=True)
    logging.info("%s %d serving at %s", resolver.task_type, resolver.task_id, server.target)
    if ready_file:
        open(ready_file, "w").close()
    server.join()


def _local_multi_worker(fn_args: Any, train_fn: str, workers: int) -> None:
    from pipeline.training import strategies
    cluster = {"worker": [f"{network.LOOPBACK}:{port}" for port in network.free_ports(workers)]}
    _record_network(fn_args, "multi_worker_mirrored", cluster)
    register = {strategies.REGISTER_TIMEOUT_ENV: str(REGISTER_TIMEOUT_S)}
    with LocalCluster(fn_args.model_run_dir, "multi_worker_mirrored") as local:
        args_file = local.write_fn_args(fn_args)
        others = [f"worker-{i}" for i in range(1, workers)]
        for i, task in enumerate(others, start=1):
            local.start(task, "task", ["train", "--fn-args", args_file, "--train-fn", train_fn],
                        {tf_config.ENV: tf_config.for_task(cluster, "worker", i), **register})
        # The chief starts its strategy once every other worker is up: a worker that died before joining would
        # leave it waiting for the cluster to form.
        local.wait_ready(others)
        local.run_chief("worker-0", resolve(train_fn), fn_args,
                        {tf_config.ENV: tf_config.for_task(cluster, "worker", 0), **register})
        local.wait_tasks(others, FINISH_TIMEOUT_S)


def _local_parameter_servers(fn_args: Any, train_fn: str, workers: int, parameter_servers: int) -> None:
    ports = network.free_ports(1 + workers + parameter_servers)
    cluster = {"chief": [f"{network.LOOPBACK}:{ports[0]}"],
               "worker": [f"{network.LOOPBACK}:{p}" for p in ports[1:1 + workers]],
               "ps": [f"{network.LOOPBACK}:{p}" for p in ports[1 + workers:]]}
    _record_network(fn_args, "parameter_server", cluster)
    # As TF's guide does: lets the coordinator see worker and PS failures.
    fail_fast = {"GRPC_FAIL_FAST": "use_caller"}
    with LocalCluster(fn_args.model_run_dir, "parameter_server") as local:
        servers = []
        for job, count in (("ps", parameter_servers), ("worker", workers)):
            for i in range(count):
                servers.append(f"{job}-{i}")
                local.start(servers[-1], "server", ["server"],
                            {tf_config.ENV: tf_config.for_task(cluster, job, i), **fail_fast})
        local.wait_ready(servers)
        local.run_chief("chief-0", resolve(train_fn), fn_args,
                        {tf_config.ENV: tf_config.for_task(cluster, "chief", 0), **fail_fast})


def _run_in_fresh_process(fn_args: Any, train_fn: str, isolate: bool,
                          env: dict[str, str | None] | None = None) -> None:
    """run_training again in a fresh child process (whose TensorFlow runtime has not started)."""
    with LocalCluster(fn_args.model_run_dir, fn_args.custom_config["strategy"]) as local:
        args_file = local.write_fn_args(fn_args)
        local.start("trainer", "task", ["run", "--fn-args", args_file, "--train-fn", train_fn], env or {},
                    isolate=isolate)
        local.wait_tasks(["trainer"], None)


def _remote_paths(fn_args: Any) -> bool:
    paths = [fn_args.model_run_dir, fn_args.serving_model_dir, fn_args.transform_output,
             *fn_args.train_files, *fn_args.eval_files]
    return any("://" in str(p) for p in paths if p)


def _can_isolate(fn_args: Any) -> bool:
    # A local cluster that reads or writes remote storage (gs://, s3://) needs the host network.
    return not _remote_paths(fn_args) and network.can_isolate()


def _should_isolate(fn_args: Any) -> bool:
    return os.environ.get(network.ISOLATED_ENV) != "1" and _can_isolate(fn_args)


def _record_network(fn_args: Any, strategy: str, cluster: dict[str, list[str]]) -> None:
    """Says, in the log and in network.MARKER under model_run_dir, whether the cluster about to start is isolated."""
    isolated = os.environ.get(network.ISOLATED_ENV) == "1"
    reason = None
    if not isolated:
        reason = ("the training reads or writes remote storage, which needs the host's network" if
                  _remote_paths(fn_args) else network.why_not_isolated() or "it was started outside a namespace")
        logging.warning(
            "%s: the local cluster runs on this host's network, not in a loopback-only namespace, because %s. Its "
            "TensorFlow servers (%s) listen on every interface of this host (TensorFlow binds them so, whatever "
            "address the cluster spec names) for as long as training lasts, and anyone who can reach this host can "
            "send them graphs to run. Train on a trusted network, or where user namespaces are allowed.",
            strategy, reason, ", ".join(address for tasks in cluster.values() for address in tasks))
    try:
        network.write_marker(fn_args.model_run_dir, {
            "strategy": strategy, "isolated": isolated, "reason": reason, "cluster": cluster,
            "ports": sorted(int(a.rsplit(":", 1)[1]) for tasks in cluster.values() for a in tasks)})
    except Exception as e:  # the record is for the summary; training goes on without it
        logging.warning("Could not record the training cluster's network in %s: %s", fn_args.model_run_dir, e)
