"""Serving benchmark: the raw in-process signature call versus the embedded server over gRPC and REST.

One run measures, on each model (TF Serving's half_plus_two, where a request's cost is almost all
RPC handling; "dense", a 4 x 2048 ReLU network whose own compute dominates a request, which is where
batching pays; and any SavedModel given with --model_dir): the raw signature call in-process (eager
``signatures[...]`` and the TF1 session path
the server uses); gRPC Predict and REST predict at batch 1 and 64, concurrency 1 and 32; the same
with --enable_batching; 64 concurrent batch-1 clients with and without batching; and the time from
starting the server process to a version being AVAILABLE. It prints a table, checks the targets
of issue 3 (reported, not asserted) and writes everything as JSON with --out.

The load generator runs in this process on one asyncio loop (grpc.aio, aiohttp) and sends
pre-serialized requests without decoding responses (each cell's first response is checked), so as
little as possible of the machine goes to the client. On a small machine the client and server
still share the cores; the JSON records the CPU count.

    python benchmarks/serving_bench.py --out serving_bench.json [--model_dir DIR [--instances_json FILE]]
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiohttp
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving import half_plus_two, launcher, tensor_codec
from serving import servable as servable_lib

BATCHING_PARAMETERS = (
    "max_batch_size { value: 64 }\n"
    "batch_timeout_micros { value: 0 }\n"  # batch whatever queued up while the batch threads were busy
    "num_batch_threads { value: 2 }\n"
    "max_enqueued_batches { value: 1000 }\n"
)


@dataclasses.dataclass
class Cell:
    model: str
    mode: str  # raw-eager | raw-session | grpc | rest
    batching: bool
    batch: int
    concurrency: int
    requests: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests_per_s: float = 0.0
    rows_per_s: float = 0.0


@dataclasses.dataclass
class Workload:
    """One model and how to build its requests."""

    name: str
    version_dir: str
    signature: str
    make_inputs: callable  # batch -> {alias: ndarray}


def summarize(cell: Cell, latencies: list[float], elapsed: float) -> Cell:
    cell.requests = len(latencies)
    if latencies:
        cell.p50_ms = float(np.percentile(latencies, 50) * 1000)
        cell.p99_ms = float(np.percentile(latencies, 99) * 1000)
        cell.requests_per_s = len(latencies) / elapsed
        cell.rows_per_s = cell.requests_per_s * cell.batch
    return cell


# ---------------------------------------------------------------------------------------- raw calls


def measure_raw(workload: Workload, batch: int, duration_s: float) -> list[Cell]:
    inputs = workload.make_inputs(batch)
    eager = tf.saved_model.load(workload.version_dir).signatures[workload.signature]
    tensors = {alias: tf.constant(value) for alias, value in inputs.items()}

    def eager_call():
        return {k: v.numpy() for k, v in eager(**tensors).items()}

    loaded = servable_lib.load(workload.name, 1, workload.version_dir)
    signature = loaded.signatures[workload.signature]
    feed_names = [spec.name for spec in signature.inputs.values()]
    feed_values = [inputs[alias] for alias in signature.inputs]
    fetch_names = [spec.name for spec in signature.outputs.values()]

    def session_call():
        return loaded.run(feed_names, feed_values, fetch_names, None)

    cells = []
    for mode, call in (("raw-eager", eager_call), ("raw-session", session_call)):
        for _ in range(50):
            call()
        latencies = []
        start = time.perf_counter()
        while time.perf_counter() - start < duration_s:
            t0 = time.perf_counter()
            call()
            latencies.append(time.perf_counter() - t0)
        cells.append(summarize(Cell(workload.name, mode, False, batch, 1), latencies, time.perf_counter() - start))
    loaded.close()
    return cells


# ---------------------------------------------------------------------------------------- server calls


async def drive(send, concurrency: int, duration_s: float, warmup: int) -> tuple[list[float], int, float]:
    """``concurrency`` loops calling ``send()`` for ``duration_s``; returns latencies, errors, elapsed."""
    for _ in range(warmup):
        await send()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s

    async def worker():
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                await send()
                latencies.append(time.perf_counter() - t0)
            except Exception:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


async def measure_server(handle: launcher.ServerHandle, workload: Workload, batching: bool,
                         cells: list[tuple[str, int, int]], duration_s: float) -> list[Cell]:
    results = []
    options = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
    async with grpc.aio.insecure_channel(handle.grpc_target, options=options) as channel, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                      request_serializer=None, response_deserializer=None)
        url = f"{handle.rest_url}/v1/models/{workload.name}:predict"
        for mode, batch, concurrency in cells:
            inputs = workload.make_inputs(batch)
            if mode == "grpc":
                request = predict_pb2.PredictRequest()
                request.model_spec.name = workload.name
                request.model_spec.signature_name = workload.signature
                for alias, value in inputs.items():
                    request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
                payload = request.SerializeToString()
                first = predict_pb2.PredictResponse.FromString(await predict(payload, timeout=30))
                assert first.outputs, first

                async def send(payload=payload):
                    await predict(payload, timeout=30)
            else:
                body = json.dumps({"signature_name": workload.signature,
                                   "instances": _instances(inputs)}).encode()
                async with session.post(url, data=body) as response:
                    assert response.status == 200, await response.text()

                async def send(body=body):
                    async with session.post(url, data=body) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError(response.status)

            latencies, errors, elapsed = await drive(send, concurrency, duration_s, warmup=20)
            cell = summarize(Cell(workload.name, mode, batching, batch, concurrency), latencies, elapsed)
            cell.errors = errors
            results.append(cell)
            print(_row(cell), flush=True)
    return results


def _instances(inputs: dict[str, np.ndarray]) -> list:
    if len(inputs) == 1:
        return _jsonable(next(iter(inputs.values())))
    batch = len(next(iter(inputs.values())))
    return [{alias: _jsonable(value[i]) for alias, value in inputs.items()} for i in range(batch)]


def _jsonable(value: np.ndarray):
    if value.dtype == object:
        return [{"b64": __import__("base64").b64encode(v).decode()} for v in value.ravel()]
    return value.tolist()


def start_server(workload: Workload, base_path: str, batching: bool,
                 workdir: str) -> tuple[launcher.ServerHandle, float]:
    args = []
    if batching:
        parameters = os.path.join(workdir, "batching.config")
        with open(parameters, "w") as f:
            f.write(BATCHING_PARAMETERS)
        args = ["--enable_batching", f"--batching_parameters_file={parameters}"]
    handle = launcher.start_server(workload.name, base_path, kind="embedded", extra_args=args, wait_for_model=False)
    try:
        ready_s = handle.wait_ready(120)
    except BaseException:
        handle.stop()
        raise
    return handle, ready_s


# ---------------------------------------------------------------------------------------- workloads


def half_plus_two_workload(workdir: str) -> tuple[Workload, str]:
    base = os.path.join(workdir, "half_plus_two")
    version_dir = half_plus_two.export(base, 1)
    return Workload("half_plus_two", version_dir, "serving_default",
                    lambda batch: {"x": np.full((batch, 1), 2.0, np.float32)}), base


class DenseNetwork(tf.Module):
    """64 inputs, four ReLU layers of 2048 units, one output: milliseconds per batch-1 call."""

    def __init__(self, width: int = 2048, depth: int = 4, inputs: int = 64):
        super().__init__()
        rng = np.random.default_rng(0)
        dims = [inputs] + [width] * depth
        self.layers = [tf.Variable(rng.normal(0, 0.05, (a, b)).astype(np.float32)) for a, b in zip(dims, dims[1:])]
        self.head = tf.Variable(rng.normal(0, 0.05, (width, 1)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
    def predict(self, x):
        for weights in self.layers:
            x = tf.nn.relu(x @ weights)
        return {"y": x @ self.head}


def dense_workload(workdir: str) -> tuple[Workload, str]:
    base = os.path.join(workdir, "dense")
    version_dir = os.path.join(base, "1")
    model = DenseNetwork()
    tf.saved_model.save(model, version_dir, signatures={"serving_default": model.predict})
    return Workload("dense", version_dir, "serving_default",
                    lambda batch: {"x": np.random.default_rng(batch).random((batch, 64)).astype(np.float32)}), base


def saved_model_workload(model_dir: str, signature: str, instances_json: str | None,
                         workdir: str) -> tuple[Workload, str]:
    base = os.path.join(workdir, "custom")
    shutil.copytree(model_dir, os.path.join(base, "1"))
    loaded = servable_lib.load("custom", 1, os.path.join(base, "1"))
    spec = loaded.signatures[signature]
    loaded.close()
    if instances_json:
        with open(instances_json) as f:
            instance = json.load(f)

        def make_inputs(batch):
            arrays, _ = tensor_codec.predict_inputs_from_json({"instances": [instance] * batch}, spec.input_dtypes)
            return arrays
    else:
        for alias, tensor in spec.inputs.items():
            if tensor.dtype == tf.string.as_datatype_enum:
                raise SystemExit(f"Input {alias} of {signature} takes strings: give an example with --instances_json")

        def make_inputs(batch):
            arrays = {}
            for alias, tensor in spec.inputs.items():
                dims = [d.size for d in tensor.shape.dim] if not tensor.shape.unknown_rank else [-1]
                shape = [batch] + [d if d > 0 else 1 for d in dims[1:]]
                np_dtype = tensor_codec.numpy_dtype(tensor.dtype)
                arrays[alias] = np.random.default_rng(0).random(shape).astype(np_dtype)
            return arrays
    return Workload("custom", os.path.join(base, "1"), signature, make_inputs), base


# ---------------------------------------------------------------------------------------- report


HEADER = (f"{'model':<14}{'mode':<12}{'batching':<9}{'batch':>6}{'conc':>6}{'requests':>10}{'errors':>7}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'rows/s':>10}")


def _row(cell: Cell) -> str:
    return (f"{cell.model:<14}{cell.mode:<12}{'on' if cell.batching else 'off':<9}{cell.batch:>6}{cell.concurrency:>6}"
            f"{cell.requests:>10}{cell.errors:>7}{cell.p50_ms:>9.3f}{cell.p99_ms:>9.3f}{cell.requests_per_s:>9.0f}"
            f"{cell.rows_per_s:>10.0f}")


def targets(cells: list[Cell], ready: dict[str, float], model: str) -> list[dict]:
    def find(mode, batching=False, batch=1, concurrency=1):
        return next(c for c in cells if (c.model, c.mode, c.batching, c.batch, c.concurrency) ==
                    (model, mode, batching, batch, concurrency))

    raw, grpc_1, rest_1 = find("raw-eager"), find("grpc"), find("rest")
    grpc_32 = find("grpc", concurrency=32)
    unbatched_64, batched_64 = find("grpc", concurrency=64), find("grpc", True, concurrency=64)
    rows = [
        ("gRPC p50 - raw p50 (batch 1, conc 1)", grpc_1.p50_ms - raw.p50_ms, "<= 1 ms",
         grpc_1.p50_ms - raw.p50_ms <= 1),
        ("REST p50 / gRPC p50 (batch 1, conc 1)", rest_1.p50_ms / grpc_1.p50_ms, "<= 1.5",
         rest_1.p50_ms / grpc_1.p50_ms <= 1.5),
        ("gRPC req/s with 32 in flight (batch 1)", grpc_32.requests_per_s, ">= 1000", grpc_32.requests_per_s >= 1000),
        ("batched / unbatched req/s (64 clients, batch 1)", batched_64.requests_per_s / unbatched_64.requests_per_s,
         ">= 2", batched_64.requests_per_s / unbatched_64.requests_per_s >= 2),
        ("start to ready, s (unbatched server)", ready[f"{model}/unbatched"], "<= 10",
         ready[f"{model}/unbatched"] <= 10),
    ]
    return [{"target": name, "measured": round(value, 3), "goal": goal, "met": met} for name, value, goal, met in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per cell")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--model_dir", help="also benchmark this SavedModel (a version directory)")
    parser.add_argument("--signature_name", default="serving_default")
    parser.add_argument("--instances_json", help="one REST row-format instance for --model_dir's signature")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="serving-bench-")
    load_before = os.getloadavg()
    try:
        workloads = [half_plus_two_workload(workdir), dense_workload(workdir)]
        if args.model_dir:
            workloads.append(saved_model_workload(args.model_dir, args.signature_name, args.instances_json, workdir))
        cells: list[Cell] = []
        ready: dict[str, float] = {}
        print(HEADER, flush=True)
        for workload, base in workloads:
            for batch in (1, 64):
                for cell in measure_raw(workload, batch, args.duration):
                    cells.append(cell)
                    print(_row(cell), flush=True)
            matrix = [(mode, batch, concurrency) for mode in ("grpc", "rest") for batch in (1, 64)
                      for concurrency in (1, 32)] + [("grpc", 1, 64), ("rest", 1, 64)]
            for batching in (False, True):
                handle, ready_s = start_server(workload, base, batching, workdir)
                ready[f"{workload.name}/{'batched' if batching else 'unbatched'}"] = ready_s
                try:
                    cells += asyncio.run(measure_server(handle, workload, batching, matrix, args.duration))
                finally:
                    handle.stop()
        print("\nStart to ready (process start to a version AVAILABLE over REST):")
        for name, seconds in ready.items():
            print(f"  {name:<28}{seconds:6.2f} s")
        report = {workload.name: targets(cells, ready, workload.name) for workload, _ in workloads}
        for name, rows in report.items():
            print(f"\nTargets, {name} (reported, not asserted):")
            for row in rows:
                verdict = "met" if row["met"] else "MISSED"
                print(f"  [{verdict}] {row['target']}: {row['measured']} (goal {row['goal']})")
        # Other work on the machine competes with the server and the client: record how busy it was.
        load = {"before": load_before, "after": os.getloadavg()}
        print(f"\nLoad average (1, 5, 15 min) before: {load['before']}, after: {load['after']} "
              f"on {os.cpu_count()} CPUs")
        if args.out:
            with open(args.out, "w") as f:
                json.dump({
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version(), "tensorflow": tf.__version__,
                                "load_average": load},
                    "duration_s_per_cell": args.duration,
                    "batching_parameters": BATCHING_PARAMETERS,
                    "ready_s": ready,
                    "cells": [dataclasses.asdict(c) for c in cells],
                    "targets": report,
                }, f, indent=2)
            print(f"\nWrote {args.out}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
