# The pipeline image: TFX 1.16's own image plus this package, so that the Kubeflow pods (and the Beam
# workers of Dataflow, Flink or Spark) can import the custom components and the module files.
#
#   make image IMAGE=REGISTRY/tfx-serving-pipeline:TAG && docker push REGISTRY/tfx-serving-pipeline:TAG
#
# The base image's ENTRYPOINT (Beam's SDK harness boot) is kept, so the same image serves as the
# Beam SDK container; Kubeflow runs each step with its own command (TFX's KFP v2 entrypoint).
FROM tensorflow/tfx:1.16.0

# Keras 2 (tf-keras) in every process, before anything imports TensorFlow. pipeline/__init__.py does
# this for local runs, but in a pod TFX's entrypoint imports TensorFlow before it imports our code.
ENV TF_USE_LEGACY_KERAS=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Must equal IMAGE_SOURCE_DIR in pipeline/runners/kubeflow.py: the compiled pipeline names the module
# files (pipeline/modules/*.py) and the default data folder by their paths under it.
WORKDIR /opt/tfx-serving-pipeline

# The tested versions of requirements/lock.txt where the image's differ (pip leaves a package that
# is already at its pinned version alone); --no-deps because the lock is the whole resolution.
COPY requirements/lock.txt requirements/lock.txt
RUN python -m pip install --no-deps -r requirements/lock.txt

COPY setup.py ./
COPY pipeline pipeline
COPY components components
COPY serving serving
COPY data data
# Editable, so that the package is imported from the same files the pipeline names as module files.
RUN python -m pip install --no-deps --no-build-isolation -e . \
 && test -f pipeline/modules/transform.py && test -f pipeline/modules/trainer.py \
 && python -c "import pipeline.pipeline, components.serving_validation, \
tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
