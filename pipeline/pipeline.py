"""The pipeline definition: one plain create_pipeline(...) that every runner shares.

  CsvExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator
               \\-> Transform -> Trainer -> Evaluator (vs. the latest blessed model) -> Pusher
                                                                   -> ServingValidator
"""
from __future__ import annotations

import os
from typing import Any

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.csv_example_gen.component import csv_example_gen
from components.serving_validation import ServingValidator
from pipeline import baseline, code_fingerprint, evaluation
from pipeline.modules import features, tflite_export

MODULES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules")
TRANSFORM_MODULE_FILE = os.path.join(MODULES_DIR, "transform.py")
TRAINER_MODULE_FILE = os.path.join(MODULES_DIR, "trainer.py")


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    dataset: features.DatasetContract,
    blessing: evaluation.Blessing,
    train_steps: int,
    eval_steps: int,
    split_buckets: tuple[int, int] = (2, 1),
    custom_config: dict[str, Any],
    transform_module_file: str = TRANSFORM_MODULE_FILE,
    trainer_module_file: str = TRAINER_MODULE_FILE,
    beam_pipeline_args: list[str] | None = None,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    enable_cache: bool = True,
    serving_validation: dict[str, Any] | None = None,
    baseline_model_resolver: bool = True,
    baseline_excludes_candidate: bool = True,
) -> tfx.dsl.Pipeline:
    """Builds the TFX pipeline from CSV files in `data_root` to a model pushed to `serving_model_dir`.

    `dataset` is the contract decided from the data (what each column is, the task); Transform and Trainer get it
    in their custom_config. `blessing` holds the thresholds the Evaluator applies. `split_buckets`: CsvExampleGen's
    (train, eval) hash buckets (evaluation.split_buckets).

    `serving_validation` holds the ServingValidator's arguments (model_name, rest_url,
    grpc_target, ...); None leaves the probe out. `baseline_model_resolver=False` leaves out the
    Resolver (for open-source KFP 2, which cannot run TFX resolver nodes): the Evaluator then has
    no baseline, TFMA skips the change threshold, and the value threshold alone gates the push.
    `baseline_excludes_candidate` (pipeline/baseline.py): the baseline is never this run's own model, so that a
    re-run with nothing changed reuses the Evaluator and Pusher from the cache and pushes nothing; False keeps
    TFX's LatestBlessedModelStrategy (the only one Kubeflow's compiler translates).
    """
    # TFX's CsvExampleGen, with a batched encoder for its row-by-row conversion (components/csv_example_gen).
    example_gen = csv_example_gen(data_root, split_buckets,
                                  code_fingerprint.fingerprint(code_fingerprint.CSV_EXAMPLE_GEN_CODE))

    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])

    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)

    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])

    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        module_file=transform_module_file,
        # StatisticsGen has the raw data's statistics already; Transform's own pre- and post-transform statistics
        # (two more TFDV passes over every row, used by nothing here) were a third of its time at 1M rows.
        disable_statistics=True,
        custom_config={"dataset": dataset.to_dict()})

    trainer = tfx.components.Trainer(
        module_file=trainer_module_file,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=eval_steps),
        # The fingerprint puts the training launcher's code, which TFX does not hash, into the cache key.
        custom_config={**custom_config, "dataset": dataset.to_dict(),
                       "code_fingerprint": code_fingerprint.fingerprint(code_fingerprint.TRAINER_CODE)})

    # The baseline for the change threshold: the newest model that was blessed before (other than this run's).
    candidate = {baseline.CANDIDATE: trainer.outputs["model"]} if baseline_excludes_candidate else {}
    model_resolver = tfx.dsl.Resolver(
        strategy_class=(baseline.LatestBlessedOtherModelStrategy if baseline_excludes_candidate
                        else tfx.dsl.experimental.LatestBlessedModelStrategy),
        **{baseline.MODEL: tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
           baseline.MODEL_BLESSING: tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
           **candidate},
    ).with_id("latest_blessed_model_resolver") if baseline_model_resolver else None

    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs[baseline.MODEL] if model_resolver else None,
        eval_config=evaluation.eval_config(dataset, blessing))

    # Pushes only when the Evaluator blessed the model.
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))

    components = [example_gen, statistics_gen, schema_gen, example_validator, transform, trainer,
                  *([model_resolver] if model_resolver else []), evaluator, pusher]
    if serving_validation is not None:
        serving_validation = dict(serving_validation)
        # export_tflite: the server prefers model.tflite, which serves one signature (pipeline/modules/tflite_export.py)
        tflite_signatures = [tflite_export.SERVED_SIGNATURE] if serving_validation.pop("prefer_tflite_model", False) \
            else None
        # Proves the push live over REST and gRPC; rolls the version back when it fails.
        components.append(ServingValidator(
            pushed_model=pusher.outputs["pushed_model"],
            model=trainer.outputs["model"],
            examples=example_gen.outputs["examples"],
            signature_names=["serving_default", "serving_raw"],
            raw_input_features={c.name: c.key for c in dataset.features},
            tflite_signature_names=tflite_signatures,
            code_fingerprint=code_fingerprint.fingerprint(code_fingerprint.SERVING_VALIDATOR_CODE),
            **serving_validation))

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [])
