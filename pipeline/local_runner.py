"""Runs the pipeline on this machine with TFX's LocalDagRunner: binds config to create_pipeline."""
import sys

from tfx import v1 as tfx

from pipeline.config import ConfigError, PipelineConfig
from pipeline.pipeline import TRAINER_MODULE_FILE, TRANSFORM_MODULE_FILE, create_pipeline


def bind_pipeline(config: PipelineConfig, *, pipeline_name: str | None = None,
                  pipeline_root: str | None = None, data_root: str | None = None,
                  serving_model_dir: str | None = None,
                  transform_module_file: str = TRANSFORM_MODULE_FILE,
                  trainer_module_file: str = TRAINER_MODULE_FILE,
                  local_metadata: bool = True,
                  baseline_model_resolver: bool = True) -> tfx.dsl.Pipeline:
    """The one binding of config to create_pipeline, shared by every runner. A runner that runs
    elsewhere (Kubeflow) overrides the name, paths and module files as its pods see them (None keeps
    the config's local value) and sets local_metadata=False to leave ML Metadata to the cluster."""
    return create_pipeline(
        pipeline_name=pipeline_name or config.pipeline_name,
        pipeline_root=pipeline_root or config.pipeline_root,
        data_root=data_root or config.data_dir,
        serving_model_dir=serving_model_dir or config.serving_model_dir,
        train_steps=config.train_steps,
        eval_steps=config.eval_steps,
        custom_config=config.trainer_hparams(),
        min_accuracy=config.min_accuracy,
        max_accuracy_drop=config.max_accuracy_drop,
        transform_module_file=transform_module_file,
        trainer_module_file=trainer_module_file,
        beam_pipeline_args=config.beam_pipeline_args(),
        metadata_connection_config=config.metadata_connection_config() if local_metadata else None,
        serving_validation=config.serving_validation_args() if config.serving_validation else None,
        baseline_model_resolver=baseline_model_resolver)


def build_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    return bind_pipeline(config)


def run(config: PipelineConfig) -> None:
    """Runs every component in order; raises the first component's error."""
    if config.beam_runner == "dataflow":
        raise ConfigError("beam_runner=dataflow runs on Google Cloud workers, which cannot read "
                          "this machine's paths: run it from Kubeflow (tfxsp kubeflow compile, "
                          "see README 'Running at scale')")
    # TFX's Beam executors parse sys.argv + beam_pipeline_args as absl flags, so our own command
    # line (`tfxsp run ... -v`: absl's -v/--verbosity) would swallow the first Beam option.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        tfx.orchestration.LocalDagRunner().run(build_pipeline(config))
    finally:
        sys.argv = argv
