"""Runs the pipeline on this machine with TFX's LocalDagRunner: binds config to create_pipeline."""
from tfx import v1 as tfx

from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline


def build_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    return create_pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        data_root=config.data_dir,
        serving_model_dir=config.serving_model_dir,
        train_steps=config.train_steps,
        eval_steps=config.eval_steps,
        custom_config=config.trainer_hparams(),
        min_accuracy=config.min_accuracy,
        max_accuracy_drop=config.max_accuracy_drop,
        beam_pipeline_args=config.beam_pipeline_args(),
        metadata_connection_config=config.metadata_connection_config(),
        serving_validation=config.serving_validation_args() if config.serving_validation else None)


def run(config: PipelineConfig) -> None:
    """Runs every component in order; raises the first component's error."""
    tfx.orchestration.LocalDagRunner().run(build_pipeline(config))
