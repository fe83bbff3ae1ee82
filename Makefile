# tfx-serving-pipeline: every target sets itself up (venv + locked install) before it runs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
TFXSP  := $(VENV)/bin/tfxsp
STAMP  := $(VENV)/.installed
PIP_VERSION := 24.2

# TFX 1.16 supports Python 3.9-3.10 only. Take python3.10 from PATH when it really runs (a pyenv shim
# for a version that is not selected fails), else the newest pyenv 3.10 interpreter.
PYTHON310 ?= $(shell for p in python3.10 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10*/bin/python3.10 2>/dev/null | sort -V -r); do \
	if $$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then \
	  $$p -c 'import sys; print(sys.executable)'; break; fi; done)

# Extra options for `tfxsp run`, e.g. make run-local ARGS="--set epochs=5 -v"
ARGS ?=

# Kubeflow: the pipeline image (a new tag per commit, since KFP's cache keys include the image),
# the Kubeflow Pipelines address, and options for `tfxsp kubeflow submit`, e.g.
#   make kubeflow-submit KFP_HOST=http://localhost:8080 IMAGE=gcr.io/P/tfx-serving-pipeline:v1 \
#        ARGS="--set kubeflow_pipeline_root=gs://BUCKET/tfx" KFP_ARGS="--wait"
IMAGE ?= tfx-serving-pipeline:$(shell git describe --always --dirty 2>/dev/null || echo latest)
KFP_HOST ?=
KFP_ARGS ?=

.PHONY: help venv lint run-local serve ui test tensorboard bench bench-pipeline bench-serving bench-train bench-beam bench-lineage bench-quality bench-ui bench-predict bench-scale clean image kubeflow-compile kubeflow-submit metadata-server

help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

venv: $(STAMP) ## Create .venv with Python 3.10 and install the locked dependencies

$(STAMP): requirements/lock.txt setup.py
	@if [ -z "$(PYTHON310)" ]; then \
	  echo "error: no Python 3.10 interpreter found (TFX 1.16 needs 3.9-3.10). Put python3.10 on PATH," \
	       "install one with 'pyenv install 3.10', or pass PYTHON310=/path/to/python3.10." >&2; exit 2; fi
	@if [ -x "$(PY)" ] && ! $(PY) -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then \
	  echo "Removing $(VENV): it was not made with Python 3.10"; rm -rf $(VENV); fi
	@[ -x "$(PY)" ] || { echo "Creating $(VENV) with $(PYTHON310)"; $(PYTHON310) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --use-pep517 -e .
	$(PY) -m pip check
	@touch $@

run-local: $(STAMP) ## Run the whole pipeline locally (LocalDagRunner), CSV to pushed model
	$(TFXSP) run $(ARGS)

serve: $(STAMP) ## Serve the model base path in the foreground (Ctrl-C stops)
	$(TFXSP) serve $(ARGS)

metadata-server: $(STAMP) ## A private MariaDB server for ML Metadata (prints the metadata_url; Ctrl-C removes it)
	$(PY) -m tools.metadata_server serve $(ARGS)

ui: $(STAMP) ## The browser dashboard over the runs at http://127.0.0.1:8080/ (Ctrl-C stops)
	$(TFXSP) ui $(ARGS)

lint: $(STAMP) ## Lint the project with ruff (ruff.toml)
	$(VENV)/bin/ruff check .

# Two pytest-xdist workers, one per core: whole modules, and the modules sharing a pipeline run together
# (tests/conftest.py). TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

test: lint ## Lint, then run the test suite (on both cores)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(ARGS)

tensorboard: $(STAMP) ## Open TensorBoard over the Trainer's run logs
	$(TFXSP) tensorboard $(ARGS)

bench: bench-pipeline bench-serving bench-train bench-beam bench-lineage bench-quality bench-ui bench-predict bench-scale ## Run every benchmark (slow)

bench-pipeline: $(STAMP) ## tfxsp run cold/warm vs TFX's penguin example
	$(PY) benchmarks/pipeline_bench.py $(ARGS)

bench-serving: $(STAMP) ## The model server: gRPC/REST/batching vs the raw model call
	$(PY) benchmarks/serving_bench.py $(ARGS)

bench-train: $(STAMP) ## Training examples/s per tf.distribute strategy
	$(PY) benchmarks/train_bench.py $(ARGS)

bench-beam: $(STAMP) ## Beam direct vs direct-multiprocess on synthetic data
	$(PY) benchmarks/beam_bench.py $(ARGS)

bench-quality: $(STAMP) ## The served model's metric on real datasets beside a scikit-learn baseline
	$(PY) benchmarks/quality_bench.py $(ARGS)

bench-lineage: $(STAMP) ## Lineage queries on a 200-run ML Metadata store
	$(PY) benchmarks/lineage_bench.py $(ARGS)

bench-ui: $(STAMP) ## tfxsp ui: server time per page and time to ready on a 200-run store
	$(PY) benchmarks/ui_bench.py $(ARGS)

bench-predict: $(STAMP) ## tfxsp predict rows/s via local, gRPC, REST vs the raw signature call
	$(PY) benchmarks/predict_bench.py $(ARGS)

bench-scale: $(STAMP) ## tfxsp run end to end on 10k to 10M synthetic rows: per-component time, peak RSS per process
	$(PY) benchmarks/scale_bench.py $(ARGS)

image: $(STAMP) ## Build the pipeline image (IMAGE=name:tag) from the Dockerfile; needs a Docker engine
	docker build -t $(IMAGE) .

kubeflow-compile: $(STAMP) ## Compile the pipeline for Kubeflow Pipelines into build/pipeline.yaml
	$(TFXSP) kubeflow compile --set pipeline_image=$(IMAGE) $(ARGS)

kubeflow-submit: kubeflow-compile ## Submit a run to Kubeflow Pipelines: make kubeflow-submit KFP_HOST=URL
	@[ -n "$(KFP_HOST)" ] || { echo "error: set KFP_HOST, e.g. make kubeflow-submit KFP_HOST=http://localhost:8080" >&2; exit 2; }
	$(TFXSP) kubeflow submit --host $(KFP_HOST) --package build/pipeline.yaml --set pipeline_image=$(IMAGE) $(ARGS) $(KFP_ARGS)

clean: ## Remove the venv, pipeline outputs and caches
	rm -rf $(VENV) tfx_runs build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
