"""Compiles the pipeline for Kubeflow Pipelines (KFP 2) with TFX's KubeflowV2DagRunner.

The same create_pipeline(...) as the local runner, bound by the same helper
(runners/local.py's bind_pipeline); only the name, the paths, the module files and the runner differ:

* paths are the ones the pods see: `kubeflow_data_root` (default: the penguin data baked into the
  pipeline image), `kubeflow_serving_model_base` (default `<kubeflow_pipeline_root>/serving_model`);
* module files are referenced at their place inside the pipeline image (IMAGE_SOURCE_DIR, where the
  Dockerfile installs this repository), and TFX's packaging of module files into a wheel under the
  pipeline root is turned off for the compile: that wheel would be written at compile time to the
  compile-time pipeline root, which the run does not use (KFP takes the root at submission) and
  which TensorFlow's file system cannot write for s3:// or minio://;
* no metadata_connection_config: on Kubeflow each step records to KFP's own ML Metadata and KFP
  decides caching itself (its cache key includes the image, so tag a new image per code change).

The output is YAML (KFP 2's client rejects the Vertex-style JSON PipelineJob) in pipeline spec
schema 2.1.0, the form the open-source KFP 2 backend reads. Submitting runs: runners/kubeflow_submit.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator
from typing import Any

import yaml

from pipeline.config import ConfigError, PipelineConfig

# TFX (and TensorFlow) are imported only where a pipeline is built: `tfxsp kubeflow submit` of a
# compiled package does not need them.

# Where the Dockerfile puts this repository (and installs it from, in editable mode) in the image.
IMAGE_SOURCE_DIR = "/opt/tfx-serving-pipeline"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUTPUT = os.path.join("build", "pipeline.yaml")
# KFP's rule for pipeline names (TFX checks it when compiling).
_KFP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,127}$")
# Set while components are built, TFX leaves module_file as the path we give instead of packaging it.
_NO_PACKAGING_ENV = "UNSUPPORTED_DO_NOT_PACKAGE_USER_MODULES"


@dataclasses.dataclass
class CompiledPipeline:
    path: str
    pipeline: Any  # the tfx.dsl.Pipeline that was compiled
    image: str
    tasks: list[str]
    # Tasks whose executor open-source KFP 2 cannot run (Vertex AI Pipelines can): TFX's resolvers.
    vertex_only_tasks: list[str]


def kfp_pipeline_name(name: str) -> str:
    """KFP pipeline names allow [a-z0-9-] only: 'penguin_serving' becomes 'penguin-serving'."""
    kfp_name = name.strip().lower().replace("_", "-")
    if not _KFP_NAME.match(kfp_name):
        raise ConfigError(f"config 'pipeline_name' = {name!r}: Kubeflow Pipelines needs a name of "
                          "lowercase letters, digits, '-' and '_' (at most 128), starting with a "
                          "letter or digit")
    return kfp_name


def image_path(local_path: str) -> str:
    """Where a file of this repository lies inside the pipeline image."""
    relative = os.path.relpath(os.path.abspath(local_path), REPO_ROOT)
    if relative.startswith(".."):
        raise ValueError(f"{local_path} is not inside {REPO_ROOT}, so it is not in the image")
    return IMAGE_SOURCE_DIR + "/" + relative.replace(os.sep, "/")


def cluster_paths(config: PipelineConfig) -> dict:
    """The data and serving paths as the pods see them."""
    root = config.kubeflow_pipeline_root.rstrip("/")
    serving_base = config.kubeflow_serving_model_base.rstrip("/") or (
        f"{root}/serving_model" if root else "")
    if not serving_base:
        raise ConfigError("config 'kubeflow_serving_model_base' is empty: on Kubeflow, Pusher needs "
                          "a model base path that the pods can write and the model server reads, "
                          "e.g. --set kubeflow_serving_model_base=gs://BUCKET/serving_model (or set "
                          "kubeflow_pipeline_root, and <root>/serving_model is used)")
    data_root = config.kubeflow_data_root.rstrip("/")
    if not data_root:
        try:  # the data that the image carries (the Dockerfile copies data/ into it)
            data_root = image_path(config.data_dir)
        except ValueError:
            raise ConfigError(f"config 'kubeflow_data_root' is empty and data_root "
                              f"({config.data_dir}) is not in this repository, so not in the "
                              "image: set kubeflow_data_root to the CSV folder as the pods see it, "
                              "e.g. gs://BUCKET/data/penguins") from None
    return {"data_root": data_root,
            "serving_model_dir": f"{serving_base}/{config.model_name}"}


@contextlib.contextmanager
def _module_files_by_path() -> Iterator[None]:
    previous = os.environ.get(_NO_PACKAGING_ENV)
    os.environ[_NO_PACKAGING_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_NO_PACKAGING_ENV, None)
        else:
            os.environ[_NO_PACKAGING_ENV] = previous


def build_pipeline(config: PipelineConfig):
    """The shared pipeline (a tfx.dsl.Pipeline), bound with the cluster's name, paths and in-image
    module files."""
    from pipeline.pipeline import TRAINER_MODULE_FILE, TRANSFORM_MODULE_FILE
    from pipeline.runners import local
    with _module_files_by_path():
        return local.bind_pipeline(
            config,
            pipeline_name=kfp_pipeline_name(config.pipeline_name),
            # Not written into the YAML: KFP takes the root with each run (submit --pipeline-root).
            pipeline_root=config.kubeflow_pipeline_root or "kfp-pipeline-root-set-at-submission",
            transform_module_file=image_path(TRANSFORM_MODULE_FILE),
            trainer_module_file=image_path(TRAINER_MODULE_FILE),
            local_metadata=False,
            # Open-source KFP 2 cannot run TFX's resolver nodes; Vertex AI Pipelines can.
            baseline_model_resolver=config.kubeflow_backend == "vertex",
            # Its compiler translates only TFX's own resolver strategies (pipeline/baseline.py).
            baseline_excludes_candidate=False,
            **cluster_paths(config))


def compile_pipeline(config: PipelineConfig, output: str = DEFAULT_OUTPUT) -> CompiledPipeline:
    """Writes the KFP 2 pipeline spec (YAML) of the pipeline to `output`."""
    if not output.endswith((".yaml", ".yml")):
        raise ConfigError(f"--output {output!r}: the Kubeflow Pipelines 2 client takes a .yaml file")
    from tfx import v1 as tfx
    pipeline = build_pipeline(config)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=config.pipeline_image, use_pipeline_spec_2_1=True),
        output_dir=os.path.dirname(os.path.abspath(output)),
        output_filename=os.path.basename(output))
    try:
        runner.run(pipeline)
    except ValueError as e:
        if "custom artifact type name" not in str(e):
            raise
        raise ConfigError(
            f"{e}: KFP names a custom artifact type by its TYPE_NAME, which must look like "
            "'namespace.TypeName' (e.g. 'tfxsp.ServingValidation'); rename it in its component, "
            "or leave the component out (--set serving_validation=false)") from None
    with open(output) as f:
        spec = yaml.safe_load(f)
    executors = spec["deploymentSpec"]["executors"]
    components = spec["components"]
    tasks = spec["root"]["dag"]["tasks"]
    vertex_only = sorted(
        name for name, task in tasks.items()
        if "container" not in executors[components[task["componentRef"]["name"]]["executorLabel"]])
    return CompiledPipeline(path=os.path.abspath(output), pipeline=pipeline,
                            image=config.pipeline_image, tasks=sorted(tasks),
                            vertex_only_tasks=vertex_only)


def package_pipeline_name(path: str) -> str | None:
    """The pipeline name recorded in a compiled package, or None when it is not one."""
    try:
        with open(path) as f:
            return yaml.safe_load(f)["pipelineInfo"]["name"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
