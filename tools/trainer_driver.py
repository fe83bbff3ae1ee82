"""Runs the real pipeline code for the training tests and benchmarks, in a process of its own:

  python -m tools.trainer_driver pipeline --tfx-root DIR --to-node Trainer [--set key=value ...]
      The real pipeline (pipeline/runners/local.py's bind_pipeline) with TFX's LocalDagRunner, as
      a partial run up to and including --to-node.

  python -m tools.trainer_driver train --pipeline-root DIR --out DIR --strategies a,b [--set ...]
      TFX's own Trainer executor (GenericExecutor.Do, which builds FnArgs with
      fn_args_utils.get_common_fn_args and calls run_fn from pipeline/modules/trainer.py as a module
      file, as the Trainer component does) on the Transform outputs recorded in that pipeline
      root's ML Metadata; once per strategy, into <out>/<strategy>/{model,model_run}.

The process sets PR_SET_PDEATHSIG, so it (and with it every worker it starts) dies with pytest.
"""
import argparse
import json
import os
import sys
import time
import traceback

import pipeline  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow
from pipeline.config import load_config, parse_set_options
from pipeline.training.worker import die_with_parent


def _pipeline(args) -> None:
    from tfx import v1 as tfx
    from tfx.orchestration import pipeline as pipeline_py

    from pipeline.runners import local
    config = load_config({"tfx_root": args.tfx_root, **parse_set_options(args.set)}, environ={})
    tfx.orchestration.LocalDagRunner().run(
        local.bind_pipeline(config),
        run_options=pipeline_py.RunOptions(to_nodes=[args.to_node]))


def _latest(store, type_name: str, uri_part: str):
    """The newest artifact of `type_name` whose URI contains `uri_part`, as a TFX Artifact."""
    from tfx.types import artifact_utils
    candidates = [a for a in store.get_artifacts_by_type(type_name) if uri_part in a.uri]
    if not candidates:
        raise SystemExit(f"no {type_name} artifact under .../{uri_part} in ML Metadata")
    newest = max(candidates, key=lambda a: a.id)
    [artifact_type] = store.get_artifact_types_by_id([newest.type_id])
    return artifact_utils.deserialize_artifact(artifact_type, newest)


def _transform_contract(store) -> dict:
    executions = [e for e in store.get_executions() if e.type.endswith(".Transform")]
    if not executions:
        raise SystemExit("no Transform execution in ML Metadata: run the pipeline up to Transform first")
    newest = max(executions, key=lambda e: e.id)
    value = newest.properties.get("custom_config") or newest.custom_properties["custom_config"]
    return json.loads(value.string_value)["dataset"]


def run_trainer_executor(pipeline_root: str, out: str, strategy: str,
                         overrides: dict[str, str]) -> None:
    """TFX's Trainer executor with run_fn from pipeline/modules/trainer.py (as a module file), on
    the newest Transform outputs in `pipeline_root`'s ML Metadata, into <out>/<strategy>/."""
    from google.protobuf import json_format
    from ml_metadata import metadata_store
    from tfx import v1 as tfx
    from tfx.components.trainer import executor as trainer_executor
    from tfx.types import standard_artifacts

    from pipeline.pipeline import TRAINER_MODULE_FILE
    store = metadata_store.MetadataStore(_sqlite(pipeline_root))
    input_dict = {
        "examples": [_latest(store, "Examples", "/Transform/transformed_examples/")],
        "transform_graph": [_latest(store, "TransformGraph", "/Transform/transform_graph/")],
        "schema": [_latest(store, "Schema", "/SchemaGen/schema/")],
    }
    config = load_config({**overrides, "strategy": strategy}, environ={})
    model, model_run = standard_artifacts.Model(), standard_artifacts.ModelRun()
    model.uri = os.path.join(out, strategy, "model")
    model_run.uri = os.path.join(out, strategy, "model_run")
    exec_properties = {
        "module_file": TRAINER_MODULE_FILE,
        "train_args": json_format.MessageToJson(tfx.proto.TrainArgs(num_steps=config.train_steps)),
        "eval_args": json_format.MessageToJson(tfx.proto.EvalArgs(num_steps=config.eval_steps)),
        # The contract the Transform outputs were made with, from the Transform execution's custom_config.
        "custom_config": json.dumps({**config.trainer_hparams(), "dataset": _transform_contract(store)}),
    }
    trainer_executor.GenericExecutor().Do(
        input_dict, {"model": [model], "model_run": [model_run]}, exec_properties)


def _train(args) -> None:
    for strategy in args.strategies.split(","):
        start = time.monotonic()
        run_trainer_executor(args.pipeline_root, args.out, strategy, parse_set_options(args.set))
        print(f"trained {strategy} in {time.monotonic() - start:.1f}s", flush=True)


def _sqlite(pipeline_root: str):
    from ml_metadata.proto import metadata_store_pb2
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = os.path.join(pipeline_root, "metadata.db")
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return config


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.trainer_driver")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pipeline")
    p.add_argument("--tfx-root", required=True)
    p.add_argument("--to-node", default="Transform")
    p.add_argument("--set", action="append", default=[])
    t = sub.add_parser("train")
    t.add_argument("--pipeline-root", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--strategies", required=True)
    t.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    die_with_parent()
    {"pipeline": _pipeline, "train": _train}[args.command](args)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown (TensorFlow 2.16's noisy function destructors)
