"""Server-side batching: merged model calls, results split back, BatchingParameters semantics."""
import asyncio
import concurrent.futures
import re
import shutil

import numpy as np
import pytest

from serving import servable as servable_lib
from serving.batching import BatchScheduler
from serving.config import parse_batching_parameters
from serving.errors import Code, ServingError
from serving.monitoring import Metrics
from tests.support.serving import export_batch_size, predict_request, start, stop, write_config

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory, saved_half_plus_two):
    root = tmp_path_factory.mktemp("batching")
    shutil.copytree(saved_half_plus_two[2.0], root / "default" / "1")
    export_batch_size(str(root / "rows"))
    config = write_config(root / "models.config", [{"name": "default", "base_path": root / "default"},
                                                   {"name": "rows", "base_path": root / "rows"}])
    (root / "batching.config").write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 50000 }\n"
        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 100 }\n")
    (root / "monitoring.config").write_text("prometheus_config { enable: true }")
    server = start("default", str(root / "default"), f"--model_config_file={config}", "--enable_batching",
                   f"--batching_parameters_file={root / 'batching.config'}",
                   f"--monitoring_config_file={root / 'monitoring.config'}")
    yield server
    stop(server)


def batch_metrics(server) -> tuple[float, float]:
    """(number of batches run, rows in them) from the Prometheus page."""
    text = server.rest.get("/monitoring/prometheus/metrics").body.decode()
    values = {}
    for suffix in ("count", "sum"):
        match = re.search(rf"^:tensorflow:serving:batching_session:processed_batch_size_{suffix}\{{[^}}]*\}} (\S+)$",
                          text, re.M)
        values[suffix] = float(match.group(1)) if match else 0.0
    return values["count"], values["sum"]


def test_concurrent_requests_share_model_calls_and_get_their_own_results(batching_server):
    batches_before, rows_before = batch_metrics(batching_server)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = {x: pool.submit(batching_server.predictions.Predict, predict_request(x=(float(x),)), timeout=30)
                   for x in range(16)}
        results = {x: list(f.result().outputs["y"].float_val) for x, f in futures.items()}
    assert results == {x: [0.5 * x + 2] for x in range(16)}
    batches, rows = batch_metrics(batching_server)
    assert rows - rows_before == 16
    assert batches - batches_before < 16  # several requests were merged into one model call


def test_the_model_sees_merged_batches(batching_server):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(batching_server.predictions.Predict, predict_request("rows"), timeout=30)
                   for _ in range(8)]
        rows_seen = [f.result().outputs["y"].float_val[0] for f in futures]
    assert max(rows_seen) > 1  # each request has one row; the model was called with several
    assert all(1 <= rows <= 8 for rows in rows_seen)  # never more than max_batch_size


def test_rest_and_examples_work_through_the_batcher(batching_server):
    assert batching_server.rest.post("/v1/models/default:predict", {"instances": [2.0, 4.0]}).json() == {
        "predictions": [3.0, 4.0]}
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]}
    assert batching_server.rest.post("/v1/models/default:regress", body).json() == {"results": [3.0, 4.0]}


def test_different_inner_shapes_at_once_all_succeed(batching_server):
    bodies = [{"instances": [[1.0] * n]} for n in (1, 2, 3, 1, 2, 3)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda b: batching_server.rest.post("/v1/models/default:predict", b), bodies))
    assert [r.json()["predictions"] for r in responses] == [[[2.5] * n] for n in (1, 2, 3, 1, 2, 3)]


@pytest.mark.parametrize("body, message", [
    ({"instances": [1.0] * 9}, "Task size 9 is larger than maximum input batch size 8"),
    ({"inputs": 2.0}, "Batching Run() input tensors must have at least one dimension"),
])
def test_batching_errors(batching_server, body, message):
    response = batching_server.rest.post("/v1/models/default:predict", body)
    assert response.status == 400 and response.json()["error"] == message
    assert batching_server.rest.post("/v1/models/default:predict", {"instances": [2.0]}).status == 200


# ------------------------------------------------------------------------------------- the scheduler


@pytest.fixture(scope="module")
def servable(saved_half_plus_two):
    loaded = servable_lib.load("m", 1, saved_half_plus_two[2.0])
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def rows_servable(tmp_path_factory):
    loaded = servable_lib.load("rows", 1, export_batch_size(str(tmp_path_factory.mktemp("rows"))))
    yield loaded
    loaded.close()


def run_concurrently(servable, parameters: str, inputs: list[np.ndarray]):
    """Submits all inputs to one scheduler at once; returns each result (outputs or the error)."""
    signature = servable.signatures["serving_default"]
    feeds, fetches = [signature.inputs["x"].name], [signature.outputs["y"].name]

    async def main():
        with concurrent.futures.ThreadPoolExecutor(4) as executor:
            scheduler = BatchScheduler(parse_batching_parameters(parameters), executor, Metrics())
            calls = [scheduler.run(servable, feeds, [x], fetches, None) for x in inputs]
            return await asyncio.gather(*calls, return_exceptions=True)

    return [r if isinstance(r, Exception) else r[0] for r in asyncio.run(main())]


def test_pad_variable_length_inputs(servable):
    results = run_concurrently(servable, "pad_variable_length_inputs: true batch_timeout_micros { value: 100000 } "
                                         "num_batch_threads { value: 1 }",
                               [np.array([[1.0, 2.0]], np.float32), np.array([[4.0, 4.0, 6.0]], np.float32)])
    # The shorter input is padded with its own first element (batching_util.cc AddPadding).
    assert results[0].tolist() == [[2.5, 3.0, 2.5]]
    assert results[1].tolist() == [[4.0, 4.0, 5.0]]


ALLOWED_SIZES = ("max_batch_size { value: 4 } allowed_batch_sizes: 2 allowed_batch_sizes: 4 "
                 "batch_timeout_micros { value: 100000 } num_batch_threads { value: 1 }")


def test_allowed_batch_sizes_pad_the_batch_and_drop_the_padding(servable, rows_servable):
    xs = [np.array([x], np.float32) for x in (1.0, 2.0, 3.0)]
    assert [r.tolist() for r in run_concurrently(servable, ALLOWED_SIZES, xs)] == [[2.5], [3.0], [3.5]]
    # Three one-row tasks, one model call padded up to the allowed size 4.
    assert [r.tolist() for r in run_concurrently(rows_servable, ALLOWED_SIZES, xs)] == [[4.0], [4.0], [4.0]]


def test_large_batch_splitting(servable):
    x = np.arange(5, dtype=np.float32)
    results = run_concurrently(servable, "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
                                         "max_execution_batch_size { value: 2 }", [x])
    assert results[0].tolist() == (0.5 * x + 2).tolist()


def test_a_full_queue_is_unavailable(servable):
    results = run_concurrently(servable, "max_batch_size { value: 1 } max_enqueued_batches { value: 1 } "
                                         "num_batch_threads { value: 1 }",
                               [np.array([1.0], np.float32)] * 3)
    assert [r.tolist() for r in results[:2]] == [[2.5], [2.5]]
    assert isinstance(results[2], ServingError) and results[2].code == Code.UNAVAILABLE
    assert "The batch scheduling queue to which this task was submitted is full" in results[2].message


def test_unequal_dimension_zero_is_refused(servable):
    signature = servable.signatures["regress_x2_to_y3"]

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            scheduler = BatchScheduler(parse_batching_parameters(""), executor, Metrics())
            await scheduler.run(servable, ["a", "b"], [np.zeros(1), np.zeros(2)], [signature.outputs["outputs"].name],
                                None)

    with pytest.raises(ServingError, match="Batching Run\\(\\) input tensors must have equal 0th-dimension size"):
        asyncio.run(main())
