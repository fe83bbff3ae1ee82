"""The whole local pipeline with Beam's DirectRunner in multi-processing mode (2 worker processes)
blesses and pushes like the default in-memory runner does (tests/test_pipeline_e2e.py), and its
Beam components produce exactly what the default runner produces from the same data.

One real run through `tfxsp run` (about 3 minutes on 2 cores: every Beam pipeline starts two Python
worker processes that import TensorFlow), plus an in-process reference run of the data components
(ExampleGen, StatisticsGen, SchemaGen, Transform) with the default runner.
"""
import collections
import glob
import os
import sys

import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline.config import load_config
from pipeline.metadata.report import collect
from pipeline.metadata.runs import latest_run_id
from tests.support.paths import PENGUINS_DIR
from tests.support.processes import run_tfxsp

pytestmark = pytest.mark.timeout(900)

UPSTREAM = ["CsvExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform",
            "Trainer", "latest_blessed_model_resolver", "Evaluator", "Pusher"]


@pytest.fixture(scope="module")
def multiprocess(tmp_path_factory):
    root = tmp_path_factory.mktemp("beam_multiprocess")
    overrides = {"data_root": str(PENGUINS_DIR), "tfx_root": str(root / "runs"),
                 "beam_runner": "direct-multiprocess", "beam_direct_num_workers": "2",
                 # Serving is not what this test is about (tests/test_serving_validation.py is).
                 "serving_validation": "false"}
    args = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    result = run_tfxsp(["run", *args, "-v"], cwd=root, timeout=900)
    return result, load_config(overrides, environ={})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """ExampleGen -> StatisticsGen -> SchemaGen -> Transform with the default (in-memory) runner,
    in this process, on the same data and with the same module file."""
    from tfx import v1 as tfx

    from pipeline.dataset import analysis
    from pipeline.pipeline import TRANSFORM_MODULE_FILE
    root = str(tmp_path_factory.mktemp("beam_reference"))
    config = load_config({"data_root": str(PENGUINS_DIR), "tfx_root": root}, environ={})
    example_gen = tfx.components.CsvExampleGen(input_base=config.data_dir)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"],
                                          infer_feature_shape=True)
    transform = tfx.components.Transform(examples=example_gen.outputs["examples"],
                                         schema=schema_gen.outputs["schema"],
                                         module_file=TRANSFORM_MODULE_FILE,
                                         # the dataset contract, decided from the data as tfxsp run decides it
                                         custom_config={"dataset": analysis.analyze(config).contract.to_dict()},
                                         disable_statistics=True)  # not compared; saves time
    pipeline = tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name, pipeline_root=config.pipeline_root,
        components=[example_gen, statistics_gen, schema_gen, transform],
        metadata_connection_config=config.metadata_connection_config(),
        beam_pipeline_args=config.beam_pipeline_args())
    assert config.beam_pipeline_args()[0] == "--direct_running_mode=in_memory"
    argv, sys.argv = sys.argv, sys.argv[:1]  # TFX parses sys.argv as absl flags (pytest's too)
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    finally:
        sys.argv = argv
    return config


def _output(result):
    return (f"exit {result.returncode}\n--- stdout\n{result.stdout[-5000:]}\n"
            f"--- stderr\n{result.stderr[-5000:]}")


def test_blessed_and_pushed_like_the_default_runner(multiprocess):
    result, config = multiprocess
    assert result.returncode == 0, _output(result)
    store = metadata_store.MetadataStore(config.metadata_connection_config())
    report = collect(store, latest_run_id(store, config.pipeline_name))
    assert {n.node_id: n.state for n in report.nodes} == {n: "complete" for n in UPSTREAM}
    assert report.blessed is True
    assert report.gate_metric == "sparse_categorical_accuracy" and report.by_slice()["Overall"] >= 0.9
    assert report.pushed and report.pushed_version.isdigit()
    assert os.listdir(config.serving_model_dir) == [report.pushed_version]
    assert "Blessing: blessed" in result.stdout
    assert f"Pushed: version {report.pushed_version}" in result.stdout


def test_beam_ran_in_separate_worker_processes(multiprocess):
    result, _ = multiprocess
    logs = result.stdout + result.stderr
    # Each SDK worker process logs this when it starts; the in-memory runner starts none.
    assert logs.count("Python sdk harness starting") >= 2, _output(result)
    assert "--direct_running_mode=multi_processing" in logs


def _split_examples(config, pattern):
    """{split: [example as a sorted tuple of (feature, values)]} (map order in a serialized
    tf.Example is not stable between processes, so records are compared parsed)."""
    splits = {}
    for split in ("train", "eval"):
        files = sorted(glob.glob(os.path.join(config.pipeline_root, pattern, f"Split-{split}",
                                              "*.gz")))
        assert files, f"no {pattern} {split} files under {config.pipeline_root}"
        examples = []
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
            feature = tf.train.Example.FromString(record).features.feature
            examples.append(tuple(sorted(
                (key, tuple(f.bytes_list.value or f.float_list.value or f.int64_list.value))
                for key, f in feature.items())))
        splits[split] = sorted(examples)
    return splits


def _columns(examples):
    """{feature: sorted values}: transformed floats are compared per feature, with a tolerance
    (analyzers combine partial sums in a different order across workers)."""
    columns = collections.defaultdict(list)
    for example in examples:
        for key, values in example:
            columns[key].extend(values)
    return {key: sorted(values) for key, values in columns.items()}


def _num_examples(config):
    counts = {}
    for split in ("train", "eval"):
        path, = glob.glob(os.path.join(config.pipeline_root, "StatisticsGen", "statistics", "*",
                                       f"Split-{split}", "FeatureStats.pb"))
        with open(path, "rb") as f:
            stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
        counts[split] = stats.datasets[0].num_examples
    return counts


def _vocabularies(config):
    vocabularies = {}
    for key in ("island", "sex", "year", "species"):
        path, = glob.glob(os.path.join(config.pipeline_root, "Transform", "transform_graph", "*",
                                       "transform_fn", "assets", f"{key}_vocab"))
        with open(path) as f:
            vocabularies[key] = f.read().split()
    return vocabularies


def test_beam_components_produce_what_the_default_runner_produces(multiprocess, reference):
    result, config = multiprocess
    assert result.returncode == 0, _output(result)
    examples = _split_examples(config, "CsvExampleGen/examples/*")
    assert examples == _split_examples(reference, "CsvExampleGen/examples/*")
    with open(PENGUINS_DIR / "penguins.csv") as f:
        rows = sum(1 for line in f if line.strip()) - 1
    assert sum(len(e) for e in examples.values()) == rows
    assert _num_examples(config) == _num_examples(reference) == {
        split: len(e) for split, e in examples.items()}
    assert _vocabularies(config) == _vocabularies(reference)
    transformed = _split_examples(config, "Transform/transformed_examples/*")
    expected = _split_examples(reference, "Transform/transformed_examples/*")
    for split in ("train", "eval"):
        got, want = _columns(transformed[split]), _columns(expected[split])
        assert got.keys() == want.keys()
        for key in want:
            assert len(got[key]) == len(want[key]) == len(examples[split]), key
            assert max(abs(a - b) for a, b in zip(got[key], want[key])) < 1e-4, key
