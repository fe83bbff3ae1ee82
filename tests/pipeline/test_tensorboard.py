"""The Trainer's TensorBoard logs, read with TensorBoard's own loaders
(tensorboard.backend.event_processing), and `tfxsp tensorboard` serving them.

The logs are those of the Trainer component of a real pipeline run (tests/support/training.py):
scalars per epoch and every 10 steps (loss, accuracy, learning rate), the graphs, histograms of
every layer's weights and biases, and the projector's embeddings with their vocabulary labels.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins.projector import ProjectorConfig

from pipeline.modules import model
from pipeline.training import network
from tests.support import training as fixtures

# One training pipeline run (tests/support/training.py) serves both modules: one xdist worker runs them.
pytestmark = [pytest.mark.timeout(1200), pytest.mark.xdist_group("training")]

EPOCHS = int(fixtures.TRAINING["epochs"])
STEPS = int(fixtures.TRAINING["train_steps"])
UPDATE_FREQ = int(fixtures.TRAINING["tensorboard_update_freq"])
WEIGHTED_LAYERS = {"island_embedding": ["embeddings"], "sex_embedding": ["embeddings"],
                   "dense_0": ["kernel", "bias"], "dense_1": ["kernel", "bias"],
                   "logits": ["kernel", "bias"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return fixtures.pipeline_run(tmp_path_factory)


@pytest.fixture(scope="module")
def events(run):
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance={"tensors": 0, "scalars": 0, "histograms": 0})  # 0: keep every event
    multiplexer.AddRunsFromDirectory(run.trainer.model_run_dir)
    multiplexer.Reload()
    return multiplexer


def _values(events, run_name, tag):
    return {e.step: tf.make_ndarray(e.tensor_proto) for e in events.Tensors(run_name, tag)}


def test_runs_are_train_and_validation(events):
    assert sorted(events.Runs()) == ["train", "validation"]


def test_scalars_per_epoch_and_per_step(events):
    scalars = events.PluginRunToTagToContent("scalars")
    for name in ("loss", "accuracy", "learning_rate", "steps_per_second"):
        epochs = _values(events, "train", f"epoch_{name}")
        assert sorted(epochs) == list(range(EPOCHS)), name
        steps = _values(events, "train", f"batch_{name}")
        assert sorted(steps) == list(range(UPDATE_FREQ, STEPS + 1, UPDATE_FREQ)), name
    assert {"epoch_loss", "epoch_accuracy"} <= set(scalars["validation"])
    learning_rates = list(_values(events, "train", "epoch_learning_rate").values())
    assert np.allclose(learning_rates, 0.01)
    losses = _values(events, "train", "epoch_loss")
    assert losses[EPOCHS - 1] < losses[0]
    assert _values(events, "validation", "epoch_accuracy")[EPOCHS - 1] >= 0.9


def test_graphs(events):
    graph = events.Graph("train")  # the train step's op graph
    assert len(graph.node) > 50
    assert any("SparseSoftmaxCrossEntropyWithLogits" in n.op for n in graph.node)
    # The Keras model's conceptual graph, with every layer.
    [keras] = _values(events, "train", "keras").values()
    config = json.loads(keras.item())
    layers = {layer["config"]["name"] for layer in config["config"]["layers"]}
    assert set(WEIGHTED_LAYERS) <= layers


def test_histograms_of_every_weight_and_bias(events):
    histograms = events.PluginRunToTagToContent("histograms")["train"]
    expected = {f"{layer}/{weight}_0/histogram" for layer, weights in WEIGHTED_LAYERS.items()
                for weight in weights}
    assert expected <= set(histograms), sorted(histograms)
    for tag in expected:
        per_epoch = _values(events, "train", tag)
        assert sorted(per_epoch) == list(range(EPOCHS)), tag
        for buckets in per_epoch.values():  # rows of (left edge, right edge, count)
            assert buckets.ndim == 2 and buckets.shape[1] == 3 and buckets[:, 2].sum() > 0, tag


def _vocabulary(run, key):
    import tensorflow_transform as tft

    from pipeline.modules import features
    root = os.path.join(run.pipeline_root, "Transform", "transform_graph")
    [graph] = [os.path.join(root, d) for d in os.listdir(root)]
    labels = tft.TFTransformOutput(graph).vocabulary_by_name(f"{key}_vocab")
    return (["(missing)" if v.decode() == features.MISSING_CATEGORY else v.decode() for v in labels]
            + [f"[OOV {i}]" for i in range(features.NUM_OOV_BUCKETS)])


def test_projector_config_names_each_embedding_with_its_vocabulary(run):
    train_dir = os.path.join(run.trainer.model_run_dir, "train")
    config = text_format.Parse(
        open(os.path.join(train_dir, "projector_config.pbtxt")).read(), ProjectorConfig())
    checkpoint = tf.train.load_checkpoint(tf.train.latest_checkpoint(train_dir))
    shapes = checkpoint.get_variable_to_shape_map()
    assert {e.tensor_name for e in config.embeddings} == {
        f"{key}_embedding/.ATTRIBUTES/VARIABLE_VALUE" for key in ("island", "sex", "year")}
    for embedding in config.embeddings:
        key = embedding.tensor_name.split("_embedding/")[0]
        labels = open(os.path.join(train_dir, embedding.metadata_path)).read().splitlines()
        assert embedding.metadata_path == f"{key}_vocabulary.tsv"
        assert labels == _vocabulary(run, key)
        # One row of the embedding matrix per label, in the checkpoint the projector reads.
        assert shapes[embedding.tensor_name] == [len(labels), model.embedding_width(len(labels), most=4)]


def _get(base, path):
    with urllib.request.urlopen(base + path, timeout=60) as response:
        return response.read()


def test_tfxsp_tensorboard_serves_every_run_and_the_projector(run):
    [port] = network.free_ports(1)
    tfxsp = os.path.join(os.path.dirname(sys.executable), "tfxsp")
    process = subprocess.Popen(
        [tfxsp, "tensorboard", "--set", f"tfx_root={run.tfx_root}", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                runs = json.loads(_get(base, "/data/runs"))
                if runs:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "TensorBoard not up"
            time.sleep(1)
        [name] = {r.split("/")[0] for r in runs}
        assert name.startswith("trainer_") and sorted(runs) == [f"{name}/train",
                                                                f"{name}/validation"]
        tags = json.loads(_get(base, "/data/plugin/scalars/tags"))
        assert {"epoch_loss", "batch_loss", "epoch_learning_rate"} <= set(tags[f"{name}/train"])
        assert json.loads(_get(base, "/data/plugin/projector/runs")) == [f"{name}/train"]
        query = "run=" + urllib.parse.quote(f"{name}/train")
        info = json.loads(_get(base, "/data/plugin/projector/info?" + query))
        for embedding in info["embeddings"]:
            key = embedding["tensorName"].split("_embedding/")[0]
            tensor_query = f"{query}&name={urllib.parse.quote(embedding['tensorName'])}"
            metadata = _get(base, "/data/plugin/projector/metadata?" + tensor_query).decode()
            assert metadata.splitlines() == _vocabulary(run, key)
            tensor = _get(base, "/data/plugin/projector/tensor?" + tensor_query)
            rows = len(metadata.splitlines())  # float32 rows as wide as the model made them
            assert len(tensor) == 4 * rows * model.embedding_width(rows, most=4)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
