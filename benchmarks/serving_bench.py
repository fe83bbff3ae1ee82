"""Serving benchmark: the raw in-process signature call versus the embedded server over gRPC and REST.

One run measures, on each model (TF Serving's half_plus_two, where a request's cost is almost all
RPC handling; "dense", a 4 x 2048 ReLU network whose own compute dominates a request, which is where
batching pays; and any SavedModel given with --model_dir): the raw signature call in-process (eager
``signatures[...]`` and the TF1 session path
the server uses); gRPC Predict and REST predict at batch 1 and 64, concurrency 1 and 32; the same
with --enable_batching; 64 concurrent batch-1 clients with and without batching; and the time from
starting the server process to a version being AVAILABLE. It prints a table, checks the targets
of issue 3 (reported, not asserted) and writes everything as JSON with --out.

SavedModel versus TF Lite (issue 19): one small dense network (64 inputs, two ReLU layers of 256 units,
one output) exported both ways, the TF Lite one by ``tf.lite.TFLiteConverter`` with the SavedModel's
signature embedded (``tflite_servable.with_signature_defs``) so the same requests serve both. For each:
the raw in-process call (the server's TF1 session path for the SavedModel, ``tf.lite.Interpreter``
set_tensor/invoke/get_tensor for TF Lite), and gRPC and REST predict at batch 1 with 1 client (p50) and
32 clients (throughput) on a server of its own (``--prefer_tflite_model`` for TF Lite), the two servers'
cells interleaved. ``--suite tflite`` runs only this part.

Request logging (issue 17): half_plus_two on three servers, without request logging and logging at rate 0.1 and
1.0 (logging_config in the model config); gRPC and REST batch-1 predict, p50 with one client and throughput with
32, the servers' cells interleaved over ``--rounds`` (the median kept). ``--suite logging`` runs only this part.

Before and after (issue 12), ``--baseline REF``: the server of commit REF (``git archive REF serving``, run
from its own directory) and this checkout's, side by side on half_plus_two, their cells interleaved and
repeated (``--rounds``, the median kept), so that whatever else the machine does weighs on both alike:
small requests (gRPC and REST, batch 1, 1 and 32 clients: throughput and p50), large requests (a 16 MB
REST body; a 16 MB gRPC tensor as tensor_content and as typed float_val: latency, one client), and
head-of-line blocking: status-call latency from this process while another process has a 64 MB REST
body or gRPC message in flight (``hol`` rows; the idle row is the same calls with nothing in flight).

The load generator runs in this process on one asyncio loop (grpc.aio, aiohttp) and sends
pre-serialized requests without decoding responses (each cell's first response is checked), so as
little as possible of the machine goes to the client. On a small machine the client and server
still share the cores; the JSON records the CPU count.

    python benchmarks/serving_bench.py --out serving_bench.json [--model_dir DIR [--instances_json FILE]]
    python benchmarks/serving_bench.py --suite tflite --out serving_bench_tflite.json
    python benchmarks/serving_bench.py --suite logging --rounds 3 --out serving_bench_logging.json
    python benchmarks/serving_bench.py --baseline main --out serving_bench_issue12.json
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiohttp
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving import half_plus_two, launcher, tensor_codec, tflite_servable
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
    mode: str  # raw-eager | raw-session | raw-interpreter | grpc | rest
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


def measure_raw_tflite(workload: Workload, batch: int, duration_s: float) -> Cell:
    """The bare interpreter call: set the input, invoke, read the output (what the TF Lite servable wraps)."""
    interpreter = tf.lite.Interpreter(model_path=os.path.join(workload.version_dir, tflite_servable.TFLITE_MODEL_FILE),
                                      num_threads=1)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    x = workload.make_inputs(batch)["x"]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()

    def call():
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    for _ in range(50):
        call()
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < duration_s:
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    return summarize(Cell(workload.name, "raw-interpreter", False, batch, 1), latencies, time.perf_counter() - start)


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
                 workdir: str, extra_args: tuple[str, ...] = ()) -> tuple[launcher.ServerHandle, float]:
    args = list(extra_args)
    if batching:
        parameters = os.path.join(workdir, "batching.config")
        with open(parameters, "w") as f:
            f.write(BATCHING_PARAMETERS)
        args += ["--enable_batching", f"--batching_parameters_file={parameters}"]
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


class SmallDense(tf.Module):
    """64 inputs, two ReLU layers of 256 units, one output: the SavedModel / TF Lite comparison."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(1)
        self.w1 = tf.Variable(rng.normal(0, 0.1, (64, 256)).astype(np.float32))
        self.w2 = tf.Variable(rng.normal(0, 0.1, (256, 256)).astype(np.float32))
        self.head = tf.Variable(rng.normal(0, 0.1, (256, 1)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
    def predict(self, x):
        return {"y": tf.nn.relu(tf.nn.relu(x @ self.w1) @ self.w2) @ self.head}


def small_dense_workloads(workdir: str) -> list[tuple[Workload, str]]:
    """The same SmallDense weights as a SavedModel and as a TF Lite model serving the same signature."""
    model = SmallDense()
    saved_base = os.path.join(workdir, "small_dense")
    saved_dir = os.path.join(saved_base, "1")
    tf.saved_model.save(model, saved_dir, signatures={"serving_default": model.predict})
    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.predict.get_concrete_function()], model)
    content = converter.convert()
    interpreter = tf.lite.Interpreter(model_content=content)
    x_name, y_name = interpreter.get_input_details()[0]["name"], interpreter.get_output_details()[0]["name"]
    signature = servable_lib.load("small_dense", 1, saved_dir).signatures["serving_default"].proto
    lite_signature = type(signature)()
    lite_signature.CopyFrom(signature)
    lite_signature.inputs["x"].name, lite_signature.outputs["y"].name = x_name, y_name
    lite_base = os.path.join(workdir, "small_dense_tflite")
    lite_dir = os.path.join(lite_base, "1")
    os.makedirs(lite_dir)
    with open(os.path.join(lite_dir, tflite_servable.TFLITE_MODEL_FILE), "wb") as f:
        f.write(tflite_servable.with_signature_defs(content, {"serving_default": lite_signature}))

    def make_inputs(batch):
        return {"x": np.random.default_rng(batch).random((batch, 64)).astype(np.float32)}

    return [(Workload("small_dense", saved_dir, "serving_default", make_inputs), saved_base),
            (Workload("small_dense_tflite", lite_dir, "serving_default", make_inputs), lite_base)]


def compare_formats(workloads: list[tuple[Workload, str]], duration_s: float,
                    workdir: str) -> tuple[list[Cell], dict[str, float]]:
    """Raw call and server cells (batch 1; 1 and 32 clients) of the SavedModel and the TF Lite model."""
    cells: list[Cell] = []
    ready: dict[str, float] = {}
    saved, lite = workloads
    # Both raw calls first, then both servers, so each pair is measured close together.
    for workload, measure in ((saved[0], lambda w: measure_raw(w, 1, duration_s)),
                              (lite[0], lambda w: [measure_raw_tflite(w, 1, duration_s)])):
        for cell in measure(workload):
            cells.append(cell)
            print(_row(cell), flush=True)
    # Both servers run at once and each cell is measured on one, then at once on the other, so that the
    # load other work puts on a shared machine weighs on both alike.
    handles = []
    try:
        for (workload, base), extra in ((saved, ()), (lite, ("--prefer_tflite_model",))):
            handle, ready_s = start_server(workload, base, False, workdir, extra)
            handles.append((handle, workload))
            ready[f"{workload.name}/unbatched"] = ready_s
        for cell in [(mode, 1, concurrency) for mode in ("grpc", "rest") for concurrency in (1, 32)]:
            for handle, workload in handles:
                cells += asyncio.run(measure_server(handle, workload, False, [cell], duration_s))
    finally:
        for handle, _ in handles:
            handle.stop()
    return cells, ready


def format_comparison(cells: list[Cell]) -> list[dict]:
    def find(model, mode, concurrency=1):
        return next(c for c in cells if (c.model, c.mode, c.batch, c.concurrency) == (model, mode, 1, concurrency))

    rows = []
    for model, raw_mode in (("small_dense", "raw-session"), ("small_dense_tflite", "raw-interpreter")):
        raw = find(model, raw_mode)
        rows.append({
            "model": model, "raw_p50_ms": round(raw.p50_ms, 3), "raw_calls_per_s": round(raw.requests_per_s),
            "grpc_p50_ms": round(find(model, "grpc").p50_ms, 3), "rest_p50_ms": round(find(model, "rest").p50_ms, 3),
            "grpc_req_per_s_32": round(find(model, "grpc", 32).requests_per_s),
            "rest_req_per_s_32": round(find(model, "rest", 32).requests_per_s)})
    return rows


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


# ---------------------------------------------------------------------------------------- before and after


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSIONS = ("before", "after")
HOL_SENDER = r"""
import http.client, sys
import grpc, numpy as np, orjson
from tensorflow_serving.apis import predict_pb2

kind, host, rest_port, grpc_target, model, rows = sys.argv[1:7]
x = np.random.default_rng(0).random((int(rows), 10)).astype(np.float32)
if kind == "rest":
    payload = orjson.dumps({"instances": x.tolist()})
else:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    tensor = request.inputs["x"]
    tensor.dtype = 1
    for size in x.shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.float_val.extend(x.ravel().tolist())
    payload = request.SerializeToString()
print(len(payload), flush=True)
sys.stdin.readline()
if kind == "rest":
    connection = http.client.HTTPConnection(host, int(rest_port), timeout=600)
    connection.request("POST", f"/v1/models/{model}:predict", payload)
    status = connection.getresponse().status
else:
    options = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
    predict = grpc.insecure_channel(grpc_target, options=options).unary_unary(
        "/tensorflow.serving.PredictionService/Predict")
    predict(payload, timeout=600)
    status = 200
print(status, flush=True)
"""


def baseline_checkout(ref: str, workdir: str) -> str:
    """``serving/`` as of ``ref``, in a directory of its own (``python -m serving`` run from there imports it)."""
    directory = os.path.join(workdir, "baseline")
    os.makedirs(directory)
    archive = subprocess.run(["git", "-C", REPOSITORY, "archive", ref, "serving"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory)
    return directory


@contextlib.contextmanager
def _working_directory(path: str):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def start_versions(workload: Workload, base: str, baseline_dir: str, args=()) -> dict[str, launcher.ServerHandle]:
    handles = {}
    try:
        with _working_directory(baseline_dir):  # sys.path[0] of `python -m serving` is its working directory
            handles["before"] = launcher.start_server(workload.name, base, kind="embedded", extra_args=args,
                                                      wait_for_model=False, env={"PYTHONPATH": baseline_dir})
        handles["after"] = launcher.start_server(workload.name, base, kind="embedded", extra_args=args,
                                                 wait_for_model=False)
        for handle in handles.values():
            handle.wait_ready(180)
    except BaseException:
        for handle in handles.values():
            handle.stop()
        raise
    return handles


def _median_cell(cells: list[Cell]) -> Cell:
    cell = dataclasses.replace(cells[0])
    cell.requests = sum(c.requests for c in cells)
    cell.errors = sum(c.errors for c in cells)
    for field in ("p50_ms", "p99_ms", "requests_per_s", "rows_per_s"):
        setattr(cell, field, statistics.median(getattr(c, field) for c in cells))
    return cell


async def _measure_large(handle: launcher.ServerHandle, workload: Workload, kind: str, duration_s: float) -> Cell:
    """Latency of 16 MB requests, one client: a REST body, or a gRPC tensor in tensor_content or float_val."""
    x = np.random.default_rng(1).random((400_000, 10)).astype(np.float32)
    options = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
    async with grpc.aio.insecure_channel(handle.grpc_target, options=options) as channel, \
            aiohttp.ClientSession() as session:
        if kind == "rest":
            body = json.dumps({"instances": x[:80_000].tolist()}).encode()  # 16 MB of JSON

            async def send():
                async with session.post(f"{handle.rest_url}/v1/models/{workload.name}:predict", data=body) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(r.status)
        else:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = workload.name
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))  # 16 MB of tensor_content
            if kind == "grpc-float_val":
                proto = request.inputs["x"]
                proto.ClearField("tensor_content")
                proto.float_val.extend(x.ravel().tolist())
            payload = request.SerializeToString()
            predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")

            async def send():
                await predict(payload, timeout=120)

        latencies, errors, elapsed = await drive(send, 1, duration_s, warmup=2)
    cell = summarize(Cell(workload.name, f"large-{kind}", False, 1, 1), latencies, elapsed)
    cell.errors = errors
    return cell


def measure_head_of_line(handle: launcher.ServerHandle, workload: Workload, kind: str) -> Cell:
    """Status-call latency from this process while another one has a 64 MB request in flight (kind "idle": none)."""
    sender = None
    if kind != "idle":
        rows = 330_000 if kind == "rest" else 1_600_000
        sender = subprocess.Popen([sys.executable, "-c", HOL_SENDER, kind, handle.host, str(handle.rest_port),
                                   handle.grpc_target, workload.name, str(rows)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        sender.stdout.readline()  # built
    latencies: list[float] = []
    done = threading.Event()
    rest = f"{handle.rest_url}/v1/models/{workload.name}"

    def poll():
        import urllib.request

        while not done.is_set():
            start = time.perf_counter()
            with urllib.request.urlopen(rest, timeout=120) as response:
                response.read()
            latencies.append(time.perf_counter() - start)
            time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    began = time.perf_counter()
    try:
        if sender is None:
            time.sleep(3.0)
        else:
            sender.stdin.write("go\n")
            sender.stdin.flush()
            if sender.stdout.readline().strip() != "200":
                raise RuntimeError(f"the 64 MB {kind} request failed")
    finally:
        done.set()
        poller.join()
        if sender is not None:
            sender.kill()
            sender.wait()
    cell = summarize(Cell(workload.name, f"hol-{kind}", False, 1, 1), latencies, time.perf_counter() - began)
    cell.requests_per_s = max(latencies) * 1000 if latencies else 0.0  # reported as "max ms" for these rows
    return cell


def compare_versions(ref: str, duration_s: float, rounds: int, workdir: str, small_only: bool = False) -> list[dict]:
    """The small, large and head-of-line cells on REF's server and on this checkout's, interleaved. Each change
    is the median over the rounds of that round's after/before ratio (the two cells of a pair run back to back, so
    a slow stretch of the machine weighs on both), with the lowest and highest ratio beside it."""
    baseline_dir = baseline_checkout(ref, workdir)
    workload, base = half_plus_two_workload(workdir)
    handles = start_versions(workload, base, baseline_dir, (f"--rest_api_max_body_bytes={80 << 20}",))
    measured: dict[tuple[str, str], list[Cell]] = {}
    try:
        small = [(mode, 1, concurrency) for mode in ("grpc", "rest") for concurrency in (1, 32)]
        for round_index in range(rounds):
            order = VERSIONS if round_index % 2 == 0 else VERSIONS[::-1]  # neither always goes first
            for cell in small:
                for version in order:
                    result = asyncio.run(measure_server(handles[version], workload, False, [cell], duration_s))[0]
                    measured.setdefault((version, f"{cell[0]}/c{cell[2]}"), []).append(result)
            if small_only:
                continue
            for kind in ("rest", "grpc-tensor_content", "grpc-float_val"):
                for version in order:
                    result = asyncio.run(_measure_large(handles[version], workload, kind, duration_s))
                    print(f"{version:<7}{_row(result)}", flush=True)
                    measured.setdefault((version, f"large-{kind}"), []).append(result)
            for kind in ("idle", "rest", "grpc"):
                for version in order:
                    result = measure_head_of_line(handles[version], workload, kind)
                    print(f"{version:<7}{_row(result)}   (max {result.requests_per_s:.0f} ms)", flush=True)
                    measured.setdefault((version, f"hol-{kind}"), []).append(result)
    finally:
        for handle in handles.values():
            handle.stop()
    rows = []
    for name in dict.fromkeys(key[1] for key in measured):
        pairs = list(zip(*(measured[(version, name)] for version in VERSIONS)))
        before, after = (_median_cell(measured[(version, name)]) for version in VERSIONS)
        row = {"cell": name, "before": dataclasses.asdict(before), "after": dataclasses.asdict(after)}
        for field, key in (("requests_per_s", "req_per_s"), ("p50_ms", "p50")):
            if field == "requests_per_s" and name.startswith("hol-"):
                continue
            ratios = [getattr(a, field) / getattr(b, field) for b, a in pairs]
            row[f"{key}_change_pct"] = round(100 * (statistics.median(ratios) - 1), 1)
            row[f"{key}_change_range_pct"] = [round(100 * (min(ratios) - 1), 1), round(100 * (max(ratios) - 1), 1)]
        rows.append(row)
    return rows


def print_comparison(ref: str, rows: list[dict]) -> None:
    print(f"\nBefore ({ref}) and after (this checkout), half_plus_two, medians of the rounds (change: the median of "
          "the rounds' after/before ratios, [lowest, highest]):")
    print(f"  {'cell':<24}{'req/s before':>13}{'after':>9}{'change':>8}{'p50 ms before':>15}{'after':>9}"
          f"{'change':>8}{'p99 before':>12}{'after':>9}")
    for row in rows:
        before, after = row["before"], row["after"]
        if row["cell"].startswith("hol-"):
            rate = f"{'max ' + format(before['requests_per_s'], '.0f'):>13}{after['requests_per_s']:>9.0f}{'':>8}"
        else:
            rate = f"{before['requests_per_s']:>13.0f}{after['requests_per_s']:>9.0f}{row['req_per_s_change_pct']:>7}%"
        print(f"  {row['cell']:<24}{rate}{before['p50_ms']:>15.2f}{after['p50_ms']:>9.2f}{row['p50_change_pct']:>7}%"
              f"{before['p99_ms']:>12.2f}{after['p99_ms']:>9.2f}   req/s {row.get('req_per_s_change_range_pct', '')}"
              f" p50 {row['p50_change_range_pct']}")
    print("  (hol rows: status-call latency while a 64 MB request is in flight; 'max' is the longest wait, ms)")


# ---------------------------------------------------------------------------------------- report


HEADER = (f"{'model':<20}{'mode':<16}{'batching':<9}{'batch':>6}{'conc':>6}{'requests':>10}{'errors':>7}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'rows/s':>10}")


def _row(cell: Cell) -> str:
    return (f"{cell.model:<20}{cell.mode:<16}{'on' if cell.batching else 'off':<9}{cell.batch:>6}{cell.concurrency:>6}"
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


# ---------------------------------------------------------------------------------------- request logging (issue 17)

LOGGING_RATES = (None, 0.1, 1.0)  # None: no logging_config


def _rate_name(rate: float | None) -> str:
    return "off" if rate is None else f"rate {rate:g}"


def compare_logging(duration_s: float, rounds: int, workdir: str) -> list[dict]:
    """half_plus_two on three servers: no request logging, logging at rate 0.1 and at 1.0; gRPC and REST batch-1
    predict with 1 client (p50) and 32 (throughput), the servers' cells interleaved over rounds (median kept)."""
    workload, base = half_plus_two_workload(workdir)
    handles = {}
    try:
        for rate in LOGGING_RATES:
            extra = ""
            if rate is not None:
                prefix = os.path.join(workdir, "logs", f"rate{rate:g}", "requests")
                extra = (f"logging_config {{ sampling_config {{ sampling_rate: {rate} }} log_collector_config "
                         f"{{ type: \"tfrecord\" filename_prefix: \"{prefix}\" }} }}")
            config = os.path.join(workdir, f"logging-{_rate_name(rate).replace(' ', '')}.config")
            with open(config, "w") as f:
                f.write(f'model_config_list {{ config {{ name: "{workload.name}" base_path: "{base}" '
                        f'model_platform: "tensorflow" {extra} }} }}\n')
            handles[rate], _ = start_server(workload, base, False, workdir, (f"--model_config_file={config}",))
        matrix = [("grpc", 1, 1), ("grpc", 1, 32), ("rest", 1, 1), ("rest", 1, 32)]
        measured: dict[tuple, list[Cell]] = {}
        cpu_us: dict[tuple, float] = {}  # the server process's CPU time per cell: what logging costs it, whatever
        # else the machine does
        for round_index in range(rounds):
            # Each round starts with another server, so that no setting always runs first or last.
            order = LOGGING_RATES[round_index % 3:] + LOGGING_RATES[:round_index % 3]
            for cell_spec in matrix:
                for rate in order:
                    handle = handles[rate]
                    before = _process_cpu_s(handle.process.pid)
                    [cell] = asyncio.run(measure_server(handle, workload, False, [cell_spec], duration_s))
                    cpu_us[(rate, *cell_spec)] = cpu_us.get((rate, *cell_spec), 0.0) + (
                        _process_cpu_s(handle.process.pid) - before) * 1e6
                    cell.model = f"{workload.name} ({_rate_name(rate)})"
                    measured.setdefault((rate, *cell_spec), []).append(cell)
    finally:
        for handle in handles.values():
            handle.stop()
    logged = sum(1 for _ in _log_records(os.path.join(workdir, "logs")))
    rows = []
    for mode, batch, concurrency in matrix:
        off = _median_cell(measured[(None, mode, batch, concurrency)])
        for rate in LOGGING_RATES:
            cell = _median_cell(measured[(rate, mode, batch, concurrency)])
            rows.append({"logging": _rate_name(rate), "mode": mode, "batch": batch, "concurrency": concurrency,
                         "requests_per_s": round(cell.requests_per_s, 1), "p50_ms": round(cell.p50_ms, 3),
                         "p99_ms": round(cell.p99_ms, 3), "errors": cell.errors,
                         "server_cpu_us_per_request": round(cpu_us[(rate, mode, batch, concurrency)] / max(
                             1, sum(c.requests + 20 for c in measured[(rate, mode, batch, concurrency)])), 1),
                         "throughput_vs_off": round(cell.requests_per_s / off.requests_per_s - 1, 3)
                         if off.requests_per_s else None})
    rows.append({"records_logged": logged})
    return rows


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _log_records(folder: str):
    import glob
    for path in glob.glob(os.path.join(folder, "**", "*.tfrecord"), recursive=True):
        yield from tf.data.TFRecordDataset([path])


def print_logging(rows: list[dict]) -> None:
    print("\nRequest logging, half_plus_two batch 1 (median of rounds; goal: at rate 1.0 at most 10% lower "
          "throughput than off at 32 clients):")
    print(f"  {'logging':<10}{'mode':<6}{'clients':>8}{'req/s':>10}{'vs off':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'server CPU µs/req':>19}")
    for row in rows:
        if "records_logged" in row:
            print(f"  records written: {row['records_logged']}")
            continue
        change = row["throughput_vs_off"]
        print(f"  {row['logging']:<10}{row['mode']:<6}{row['concurrency']:>8}{row['requests_per_s']:>10.1f}"
              f"{'' if change is None else f'{change:+.1%}':>9}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}"
              f"{row['server_cpu_us_per_request']:>19.0f}")
    for row in rows:
        if row.get("logging") == "rate 1" and row["concurrency"] == 32:
            verdict = "met" if row["throughput_vs_off"] is not None and row["throughput_vs_off"] >= -0.10 else "MISSED"
            print(f"  [{verdict}] {row['mode']} throughput at rate 1.0: {row['throughput_vs_off']:+.1%} vs off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per cell")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--model_dir", help="also benchmark this SavedModel (a version directory)")
    parser.add_argument("--signature_name", default="serving_default")
    parser.add_argument("--instances_json", help="one REST row-format instance for --model_dir's signature")
    parser.add_argument("--suite", choices=("all", "tflite", "logging"), default="all",
                        help="tflite: only the SavedModel / TF Lite comparison; logging: only request logging "
                             "at rate 1.0 and 0.1 beside off")
    parser.add_argument("--baseline", metavar="REF", help="only compare the server of git commit REF with this one")
    parser.add_argument("--rounds", type=int, default=3, help="with --baseline: rounds of interleaved cells")
    parser.add_argument("--small_only", action="store_true",
                        help="with --baseline: only the small-request cells (more rounds in the same time)")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="serving-bench-")
    load_before = os.getloadavg()
    if args.baseline:
        try:
            print(f"{'':<7}{HEADER}", flush=True)
            rows = compare_versions(args.baseline, args.duration, args.rounds, workdir, args.small_only)
            print_comparison(args.baseline, rows)
            load = {"before": load_before, "after": os.getloadavg()}
            print(f"\nLoad average (1, 5, 15 min) before: {load['before']}, after: {load['after']} "
                  f"on {os.cpu_count()} CPUs")
            if args.out:
                with open(args.out, "w") as f:
                    json.dump({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "load_average": load},
                               "baseline": args.baseline, "duration_s_per_cell": args.duration,
                               "rounds": args.rounds, "comparison": rows}, f, indent=2)
                print(f"Wrote {args.out}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    if args.suite == "logging":
        try:
            print(HEADER, flush=True)
            rows = compare_logging(args.duration, args.rounds, workdir)
            print_logging(rows)
            load = {"before": load_before, "after": os.getloadavg()}
            print(f"\nLoad average (1, 5, 15 min) before: {load['before']}, after: {load['after']} "
                  f"on {os.cpu_count()} CPUs")
            if args.out:
                with open(args.out, "w") as f:
                    json.dump({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "load_average": load}, "duration_s_per_cell": args.duration,
                               "rounds": args.rounds, "request_logging": rows}, f, indent=2)
                print(f"Wrote {args.out}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    try:
        workloads = [half_plus_two_workload(workdir), dense_workload(workdir)] if args.suite == "all" else []
        if args.model_dir and args.suite == "all":
            workloads.append(saved_model_workload(args.model_dir, args.signature_name, args.instances_json, workdir))
        cells: list[Cell] = []
        ready: dict[str, float] = {}
        print(HEADER, flush=True)
        format_cells, format_ready = compare_formats(small_dense_workloads(workdir), args.duration, workdir)
        cells += format_cells
        ready.update(format_ready)
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
        logging_rows = compare_logging(args.duration, 1, workdir) if args.suite == "all" else []
        if logging_rows:
            print_logging(logging_rows)
        report = {workload.name: targets(cells, ready, workload.name) for workload, _ in workloads}
        comparison = format_comparison(cells)
        print("\nSavedModel vs TF Lite, the same small dense model (batch 1):")
        print(f"  {'model':<20}{'raw p50 ms':>11}{'gRPC p50':>10}{'REST p50':>10}{'gRPC req/s':>12}{'REST req/s':>12}"
              f"{'raw calls/s':>13}   (req/s with 32 clients)")
        for row in comparison:
            print(f"  {row['model']:<20}{row['raw_p50_ms']:>11.3f}{row['grpc_p50_ms']:>10.3f}"
                  f"{row['rest_p50_ms']:>10.3f}{row['grpc_req_per_s_32']:>12}{row['rest_req_per_s_32']:>12}"
                  f"{row['raw_calls_per_s']:>13}")
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
                    "savedmodel_vs_tflite": comparison,
                    "request_logging": logging_rows,
                }, f, indent=2)
            print(f"\nWrote {args.out}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
