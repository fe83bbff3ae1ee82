"""model_parallel and hybrid_parallel (DTensor meshes of logical CPUs), trained through TFX's Trainer executor and
run_fn (tests/support/training.py) on the real Transform output:

* distribution.json says each hidden kernel is split into parts on distinct devices, each 1/N of it, and every
  device's part (its sha256, taken from the live DTensor components at the end of training) is exactly that slice
  of the exported model's kernel;
* hybrid: both mesh axes are larger than 1, a global batch is split along "batch" (the live input DTensors' parts);
* the export is an ordinary SavedModel reaching 0.9 accuracy, which the embedded server answers over REST and gRPC.
"""
import base64
import hashlib
import os
import shutil

import numpy as np
import pytest

from tests.support import serving
from tests.support import training as fixtures

# The training pipeline run of tests/support/training.py, shared with test_strategies and test_tensorboard.
pytestmark = [pytest.mark.timeout(1200), pytest.mark.xdist_group("training")]


@pytest.fixture(scope="module")
def model_parallel(tmp_path_factory):
    return fixtures.train(tmp_path_factory, ["model_parallel"], {"model_parallel_devices": "2"})["model_parallel"]


@pytest.fixture(scope="module")
def hybrid_parallel(tmp_path_factory):
    return fixtures.train(tmp_path_factory, ["hybrid_parallel"],
                          {"model_parallel_devices": "2", "data_parallel_replicas": "2"})["hybrid_parallel"]


def _exported_variables(serving_model_dir):
    import tensorflow as tf
    loaded = tf.saved_model.load(serving_model_dir)
    return {v.name: v.numpy() for v in loaded.variables}


def _assert_kernels_split(training, shards, replicas):
    distribution = training.distribution()
    exported = _exported_variables(training.serving_model_dir)
    kernels = [v for v in distribution["variables"] if v["name"].startswith("dense_") and "kernel" in v["name"]]
    assert len(kernels) == 2, [v["name"] for v in distribution["variables"]]
    devices = distribution["mesh"]["devices"]
    assert len(set(devices)) == shards * replicas
    for kernel in kernels:
        rows, columns = kernel["shape"]
        assert kernel["split"] == [None, {"mesh_axis": "model", "parts": shards}]
        assert len(kernel["parts"]) == shards
        holders = [d for part in kernel["parts"] for d in part["devices"]]
        assert len(holders) == len(set(holders)) == shards * replicas  # each device holds one part
        whole = exported[kernel["name"]]
        assert list(whole.shape) == [rows, columns]
        for part in kernel["parts"]:
            assert part["shape"] == [rows, columns // shards]  # 1/N of the kernel
            assert len(part["devices"]) == replicas  # replicated along the batch axis only
            (r0, r1), (c0, c1) = part["slices"]
            digest = hashlib.sha256(np.ascontiguousarray(whole[r0:r1, c0:c1]).tobytes()).hexdigest()
            assert set(part["sha256"]) == set(part["devices"])
            assert set(part["sha256"].values()) == {digest}, kernel["name"]
        # The parts tile the kernel's columns exactly.
        assert sorted(tuple(p["slices"][1]) for p in kernel["parts"]) == [
            (i * columns // shards, (i + 1) * columns // shards) for i in range(shards)]
        for device in devices:
            assert sum(p["bytes"] for p in kernel["parts"] if device in p["devices"]) == whole.nbytes // shards
    return distribution


def test_model_parallel_splits_the_kernels_over_two_devices(model_parallel, pipeline_run):
    distribution = _assert_kernels_split(model_parallel, shards=2, replicas=1)
    assert distribution["mesh"]["axes"] == {"batch": 1, "model": 2}
    summary = model_parallel.summaries()["chief-0"]
    assert summary["num_replicas_in_sync"] == 1 and summary["global_batch_size"] == 32
    assert summary["history"]["val_accuracy"][-1] >= 0.9, summary["history"]
    assert fixtures.eval_accuracy(model_parallel.serving_model_dir, pipeline_run.pipeline_root) >= 0.9


def test_hybrid_parallel_splits_the_batch_and_the_kernels(hybrid_parallel, pipeline_run):
    distribution = _assert_kernels_split(hybrid_parallel, shards=2, replicas=2)
    assert distribution["mesh"]["axes"] == {"batch": 2, "model": 2}
    batch = distribution["batch"]
    assert batch["global"] == 64 and batch["replicas"] == 2
    for name, value in batch["inputs"].items():
        assert value["shape"][0] == 64 and value["sharding"][0] == "batch", name
        # Four devices, each with half of the batch (the half of its place on the batch axis).
        assert len({device for device, _ in value["parts"]}) == 4
        assert [shape[0] for _, shape in value["parts"]] == [32] * 4, name
    summary = hybrid_parallel.summaries()["chief-0"]
    assert summary["num_replicas_in_sync"] == 2 and summary["examples"] == 64 * summary["steps"]
    assert fixtures.eval_accuracy(hybrid_parallel.serving_model_dir, pipeline_run.pipeline_root) >= 0.9


def test_the_model_parallel_export_answers_over_rest_and_grpc(model_parallel, pipeline_run, tmp_path):
    import tensorflow as tf
    base = tmp_path / "models" / "penguin"
    shutil.copytree(model_parallel.serving_model_dir, base / "1")  # as Pusher does: <base>/<name>/<version>
    records, labels = fixtures.eval_split(pipeline_run.pipeline_root)
    records, labels = records[:40], labels[:40]
    expected = tf.saved_model.load(str(base / "1")).signatures["serving_default"](
        examples=tf.constant(records))["classes"].numpy().tolist()
    server = serving.start("penguin", str(base.parent / "penguin"))
    try:
        rest = server.rest.post("/v1/models/penguin:predict", {
            "signature_name": "serving_default",
            "instances": [{"b64": base64.b64encode(r).decode()} for r in records]})
        assert rest.status == 200, rest.body[:500]
        rest_classes = [p["classes"] for p in rest.json()["predictions"]]
        assert rest_classes == [c.decode() for c in expected]
        from serving.client import GrpcClient
        with GrpcClient(server.handle.grpc_target) as client:
            outputs, version = client.predict("penguin", {"examples": np.array(records, dtype=object)},
                                              signature_name="serving_default")
        assert version == 1
        assert outputs["classes"].tolist() == expected
        assert sum(c.decode() == label for c, label in zip(expected, labels)) / len(labels) >= 0.9
    finally:
        serving.stop(server)


@pytest.mark.parametrize("overrides, message", [
    ({"strategy": "model_parallel", "model_parallel_devices": "3"},
     "'hidden_units' = 16: cannot be split over model_parallel_devices = 3"),
    ({"strategy": "model_parallel", "model_parallel_devices": "1"},
     "'model_parallel_devices' = 1: strategy=model_parallel splits the kernels over at least 2 devices"),
    ({"strategy": "hybrid_parallel", "data_parallel_replicas": "1"},
     "'data_parallel_replicas' = 1: strategy=hybrid_parallel splits the batch at least 2 ways"),
    ({"strategy": "hybrid_parallel", "data_parallel_replicas": "16", "model_parallel_devices": "8"},
     "data_parallel_replicas x model_parallel_devices = 128 devices; at most 64"),
    ({"model_parallel_devices": "0"}, "'model_parallel_devices' = 0: must be between 1 and 64"),
])
def test_mesh_settings_are_validated(overrides, message):
    from pipeline.config import ConfigError, load_config
    with pytest.raises(ConfigError) as error:
        load_config(overrides, environ={})
    assert message in str(error.value)


def test_mesh_settings_reach_run_fn():
    from pipeline.config import load_config
    hparams = load_config({"strategy": "hybrid_parallel", "data_parallel_replicas": "2",
                           "model_parallel_devices": "4"}, environ={}).trainer_hparams()
    assert (hparams["strategy"], hparams["data_parallel_replicas"], hparams["model_parallel_devices"]) == (
        "hybrid_parallel", 2, 4)


def test_a_mesh_with_too_few_devices_is_a_clear_error():
    """(With GPUs, strategies.mesh_devices says so before this, naming how many GPUs the machine has.)"""
    from pipeline.training import mesh
    with pytest.raises(mesh.MeshError, match=r"a 2 x 2 mesh needs 4 devices"):
        mesh.make_mesh(mesh.MeshShape(batch=2, model=2), ["CPU:0"])


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    return fixtures.pipeline_run(tmp_path_factory)



def test_model_parallel_tensorboard_logs(model_parallel):
    """Scalars, the graph, validation and histograms of the gathered weights, as for the other strategies."""
    from tensorboard.backend.event_processing import event_accumulator
    tags = {}
    for run in ("train", "validation"):
        accumulator = event_accumulator.EventAccumulator(os.path.join(model_parallel.model_run_dir, run),
                                                         size_guidance={"tensors": 0})
        accumulator.Reload()
        tags[run] = accumulator.Tags()
    assert {"epoch_loss", "epoch_accuracy", "batch_loss", "dense_0/kernel_0", "dense_1/kernel_0",
            "island_embedding/embeddings_0"} <= set(tags["train"]["tensors"])
    assert tags["train"]["graph"]
    assert {"epoch_loss", "epoch_accuracy"} <= set(tags["validation"]["tensors"])
