"""Runs the pipeline on this machine with TFX's LocalDagRunner: binds the configuration to create_pipeline, and
provides the model server that the serving validation probes."""
from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator

from tfx import v1 as tfx

from pipeline import evaluation
from pipeline.config import ConfigError, PipelineConfig
from pipeline.modules.features import DatasetContract
from pipeline.pipeline import TRAINER_MODULE_FILE, TRANSFORM_MODULE_FILE, create_pipeline


def bind_pipeline(config: PipelineConfig, *, contract: DatasetContract | None = None,
                  pipeline_name: str | None = None, pipeline_root: str | None = None,
                  data_root: str | None = None, serving_model_dir: str | None = None,
                  transform_module_file: str = TRANSFORM_MODULE_FILE, trainer_module_file: str = TRAINER_MODULE_FILE,
                  local_metadata: bool = True, baseline_model_resolver: bool = True,
                  baseline_excludes_candidate: bool = True) -> tfx.dsl.Pipeline:
    """The one binding of config to create_pipeline, shared by every runner. A runner that runs elsewhere (Kubeflow)
    overrides the name, paths and module files as its pods see them (None keeps the config's local value) and sets
    local_metadata=False to leave ML Metadata to the cluster. `contract`: the dataset contract (None: decided here
    from config.data_dir's CSV files, pipeline/dataset/analysis.py).
    A local binding gives the ServingValidator a run-unique `probe_run`, so that it probes on every run, also when
    nothing new was pushed; `baseline_excludes_candidate`: see create_pipeline."""
    if contract is None:
        from pipeline.dataset import analysis
        contract = analysis.analyze(config).contract
    return create_pipeline(
        pipeline_name=pipeline_name or config.pipeline_name,
        pipeline_root=pipeline_root or config.pipeline_root,
        data_root=data_root or config.data_dir,
        serving_model_dir=serving_model_dir or config.serving_model_dir,
        train_steps=config.train_steps,
        eval_steps=config.eval_steps,
        split_buckets=evaluation.split_buckets(contract.rows, config.eval_max_rows),
        dataset=contract,
        blessing=blessing(config, contract),
        custom_config=config.trainer_hparams(),
        transform_module_file=transform_module_file,
        trainer_module_file=trainer_module_file,
        beam_pipeline_args=config.beam_pipeline_args(),
        metadata_connection_config=config.metadata_connection_config() if local_metadata else None,
        serving_validation=_serving_validation(config, local_metadata),
        baseline_model_resolver=baseline_model_resolver,
        baseline_excludes_candidate=baseline_excludes_candidate)


def _serving_validation(config: PipelineConfig, local: bool) -> dict | None:
    if not config.serving_validation:
        return None
    return {**config.serving_validation_args(), **({"probe_run": uuid.uuid4().hex} if local else {})}


def blessing(config: PipelineConfig, contract: DatasetContract) -> evaluation.Blessing:
    """The thresholds the Evaluator applies, from the configuration and the data."""
    return evaluation.blessing(contract, config.min_accuracy, config.max_accuracy_drop, config.max_rmse,
                               config.max_rmse_increase, config.baseline_margin, config.bundled_example)


def run(config: PipelineConfig, contract: DatasetContract | None = None) -> None:
    """Runs every component in order; raises the first component's error."""
    if config.beam_runner == "dataflow":
        raise ConfigError("beam_runner=dataflow runs on Google Cloud workers, which cannot read this machine's "
                          "paths: run it from Kubeflow (tfxsp kubeflow compile, see docs/scale-out.md)")
    # TFX's Beam executors parse sys.argv + beam_pipeline_args as absl flags (tfx base_beam_executor.py, "Don't use
    # beam_pipeline_args to set ABSL flags", b/174174381), and take no argv of their own: our command line
    # (`tfxsp run ... -v`: absl's -v/--verbosity) would swallow the first Beam option.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        tfx.orchestration.LocalDagRunner().run(bind_pipeline(config, contract=contract))
    finally:
        sys.argv = argv


@contextlib.contextmanager
def probe_server(config: PipelineConfig, announce=print) -> Iterator[bool]:
    """A model server over the model base path for the serving validation: the TF Serving model server already
    answering on the configured REST port, or one started here through serving.launcher (stopped on exit, and dying
    with this process however it ends). Yields whether it started one."""
    if not config.serving_validation:
        yield False
        return
    from serving import launcher
    if launcher.probe_rest(config.serving_host, config.rest_port).kind == "model_server":
        announce(f"Using the model server already answering at {config.rest_url}")
        yield False
        return
    from pipeline.lifecycle import model_config
    # From the model config file, so that the labels and pin of tfxsp models hold for the run's server too.
    model_config.ensure(config.model_config_file, config.model_name, config.serving_model_dir)
    handle = launcher.start_server(
        model_name=config.model_name, model_base_path=config.serving_model_dir, grpc_port=config.grpc_port,
        rest_port=config.rest_port, host=config.serving_host, wait_for_model=False,
        extra_args=[f"--model_config_file={config.model_config_file}",
                    f"--model_config_file_poll_wait_seconds={config.model_config_poll_s}",
                    # At start-up the labelled versions are not loaded yet; TF Serving checks labels before.
                    "--allow_version_labels_for_unavailable_models",
                    # export_tflite: serve the model.tflite beside each SavedModel, so that the probe validates it.
                    *(["--prefer_tflite_model"] if config.export_tflite else [])])
    announce(f"Started a model server ({handle.kind}) for {config.serving_model_dir} on {config.rest_url} (REST) "
             f"and {config.grpc_target} (gRPC)")
    try:
        yield True
    finally:
        handle.stop()
