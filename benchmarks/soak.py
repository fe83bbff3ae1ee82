"""Soak: minutes of mixed traffic against the embedded server on loopback, with hot swaps, then a report.

One server (half_plus_two, polled every 0.5 s) gets, from this process, a steady load of valid small
predictions over REST and gRPC and status calls (asyncio clients, each pausing 10 ms between requests),
first alone (``--baseline_s``), then for ``--abuse_s`` together with abusers in other processes:

* malformed REST bodies (garbage, truncated JSON, wrong types, JSON nested thousands of levels deep);
* oversized REST bodies: a declared Content-Length over the limit, and a chunked body that never ends;
* slow clients: connections that trickle their headers, and connections that trickle their bodies;
* malformed gRPC: undecodable bytes, tensors declaring huge shapes, wrong dtypes and model names;
* large valid requests now and then (an 8 MB REST body, a 16 MB gRPC tensor), as real clients send;

and five hot swaps (a new version published by rename, the old one unloaded) spread over the abuse.

The report: valid requests that failed (goal 0) and answers that were not what a served version computes,
5xx answers to anyone (goal 0; gRPC's server-side codes are listed too), peak RSS of the server, and the
p50/p99 latency of the valid requests before and during the abuse. ``--out`` writes it as JSON.

    python benchmarks/soak.py [--baseline_s 60] [--abuse_s 180] [--out soak.json]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import platform
import random
import shutil
import socket
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiohttp
import grpc
import numpy as np
import psutil

MODEL = "soak"
SWAPS = 5
# b of each published version (y = 0.5 x + b): version n+1 serves b = n + 2.
B_OF_VERSION = {version: float(version + 1) for version in range(1, SWAPS + 2)}
GRPC_OPTIONS = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
SERVER_ERROR_CODES = ("UNKNOWN", "INTERNAL", "DATA_LOSS", "UNAVAILABLE", "DEADLINE_EXCEEDED")


# ---------------------------------------------------------------------------------------- abusers (processes)


def _raw_http(host: str, port: int, data: bytes, timeout: float = 30.0) -> int:
    """Sends raw bytes, returns the answer's status (0: closed without one)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = b""
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except (TimeoutError, OSError):
        return 0
    try:
        return int(answer.split(b"\r\n", 1)[0].split()[1])
    except (IndexError, ValueError):
        return 0


def _post(host: str, port: int, path: str, body: bytes, timeout: float = 60.0) -> int:
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return _raw_http(host, port, head + body, timeout)


def malformed_rest(host, port, stop_at, results):
    rng = random.Random(1)
    bodies = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))),
        lambda: b'{"instances": [1.0, 2.0' + b"," * rng.randint(0, 3),
        lambda: json.dumps({"instances": [{"x": "s"}] * rng.randint(1, 9)}).encode(),
        lambda: b'{"instances": [' + b"[" * (d := rng.randint(40, 5000)) + b"1" + b"]" * d + b"]}",
        lambda: b'{"inputs": {"x": ' + b'{"a":' * (d := rng.randint(40, 3000)) + b"1" + b"}" * d + b"}}",
        lambda: json.dumps({"instances": [1.0], "inputs": [1.0]}).encode(),
        lambda: b'{"instances": [1e999999]}',
    ]
    while time.monotonic() < stop_at:
        results[_post(host, port, f"/v1/models/{MODEL}:predict", rng.choice(bodies)())] += 1
        time.sleep(0.02)


def oversized_rest(host, port, stop_at, results):
    while time.monotonic() < stop_at:
        # A declared body over the limit: refused before it is read.
        results[_raw_http(host, port, b"POST /v1/models/soak:predict HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Length: 999999999\r\n\r\n{")] += 1
        # A chunked body that goes on past the limit (64 MiB by default).
        try:
            with socket.create_connection((host, port), timeout=60) as sock:
                sock.sendall(b"POST /v1/models/soak:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n%s\r\n" % (1 << 20, b"1," * (1 << 19))
                status = 0
                for _ in range(80):
                    try:
                        sock.sendall(chunk)
                    except OSError:
                        break
                sock.settimeout(30)
                answer = sock.recv(4096)
                status = int(answer.split()[1]) if answer else 0
        except (OSError, ValueError, IndexError):
            status = 0
        results[status] += 1
        time.sleep(2.0)


def slow_clients(host, port, stop_at, results, count=40):
    """Half trickle their headers, half their bodies, one byte every 0.5 s; each reconnects when cut off."""
    def one(kind):
        while time.monotonic() < stop_at:
            try:
                with socket.create_connection((host, port), timeout=120) as sock:
                    if kind == "headers":
                        data = b"POST /v1/models/soak:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n"
                    else:
                        sock.sendall(b"POST /v1/models/soak:predict HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 5000\r\n\r\n")
                        data = b'{"instances": [' + b"1," * 3000
                    for byte in data:
                        if time.monotonic() >= stop_at:
                            break
                        sock.sendall(bytes([byte]))
                        time.sleep(0.5)
                    sock.settimeout(5)
                    answer = sock.recv(64)
                    results[f"{kind}:{answer.split()[1].decode() if answer else 'closed'}"] += 1
            except (OSError, IndexError):
                results[f"{kind}:closed"] += 1

    threads = [threading.Thread(target=one, args=("headers" if i % 2 else "body",)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def malformed_grpc(target, stop_at, results):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    rng = random.Random(2)
    channel = grpc.insecure_channel(target, options=GRPC_OPTIONS)
    predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")

    def huge_shape():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(1.0, shape=[rng.randint(1 << 22, 1 << 40)]))
        return request.SerializeToString()

    def wrong_type():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = rng.choice([MODEL, "nope"])
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(["a", "b"]))
        return request.SerializeToString()

    makers = [lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 100))), huge_shape, wrong_type]
    while time.monotonic() < stop_at:
        try:
            predict(rng.choice(makers)(), timeout=30)
            results["OK"] += 1
        except grpc.RpcError as e:
            results[e.code().name] += 1
        time.sleep(0.02)
    channel.close()


def large_valid(host, port, target, stop_at, results):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    x = np.random.default_rng(3).random((40_000, 10)).astype(np.float32)
    body = json.dumps({"instances": x.tolist()}).encode()  # 8 MB
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.tile(x, (10, 1))))  # 16 MB
    payload = request.SerializeToString()
    channel = grpc.insecure_channel(target, options=GRPC_OPTIONS)
    predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    while time.monotonic() < stop_at:
        results[f"rest:{_post(host, port, f'/v1/models/{MODEL}:predict', body)}"] += 1
        try:
            predict(payload, timeout=60)
            results["grpc:OK"] += 1
        except grpc.RpcError as e:
            results[f"grpc:{e.code().name}"] += 1
        time.sleep(2.0)
    channel.close()


def _abuser(name, args, queue):
    results = collections.Counter()
    try:
        globals()[name](*args, results)
    finally:
        queue.put((name, {str(key): n for key, n in results.items()}))


# ---------------------------------------------------------------------------------------- valid load (this process)


class Valid:
    """Latencies and failures of the valid requests, by phase and protocol."""

    def __init__(self):
        self.latencies = collections.defaultdict(list)  # (phase, protocol) -> seconds
        self.failures = collections.Counter()  # (phase, protocol, what) -> count
        self.wrong = 0
        self.phase = "before"

    def ok(self, protocol, seconds):
        self.latencies[(self.phase, protocol)].append(seconds)

    def failed(self, protocol, what):
        self.failures[(self.phase, protocol, str(what))] += 1


async def valid_load(handle, valid: Valid, stop: asyncio.Event, clients: int):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].dtype = 1
    request.inputs["x"].tensor_shape.dim.add(size=1)
    request.inputs["x"].float_val.append(2.0)
    payload = request.SerializeToString()
    expected = {1.0 + b for b in B_OF_VERSION.values()}  # 0.5 * 2 + b, for whichever version answers
    body = json.dumps({"instances": [2.0]}).encode()
    url = f"{handle.rest_url}/v1/models/{MODEL}"

    async with grpc.aio.insecure_channel(handle.grpc_target, options=GRPC_OPTIONS) as channel, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                      response_deserializer=predict_pb2.PredictResponse.FromString)

        async def rest_client():
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    async with session.post(f"{url}:predict", data=body,
                                            timeout=aiohttp.ClientTimeout(total=30)) as response:
                        data = await response.read()
                    if response.status != 200:
                        valid.failed("rest", response.status)
                    elif json.loads(data)["predictions"][0] not in expected:
                        valid.wrong += 1
                    else:
                        valid.ok("rest", time.perf_counter() - start)
                except Exception as e:  # a connection error is a failure too
                    valid.failed("rest", type(e).__name__)
                await asyncio.sleep(0.01)

        async def grpc_client():
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    response = await predict(payload, timeout=30)
                    if response.outputs["y"].float_val[0] not in expected:
                        valid.wrong += 1
                    else:
                        valid.ok("grpc", time.perf_counter() - start)
                except grpc.RpcError as e:
                    valid.failed("grpc", e.code().name)
                await asyncio.sleep(0.01)

        async def status_client():
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as response:
                        await response.read()
                    if response.status != 200:
                        valid.failed("status", response.status)
                    else:
                        valid.ok("status", time.perf_counter() - start)
                except Exception as e:
                    valid.failed("status", type(e).__name__)
                await asyncio.sleep(0.05)

        await asyncio.gather(*(rest_client() for _ in range(clients)), *(grpc_client() for _ in range(clients)),
                             status_client())


# ---------------------------------------------------------------------------------------- the run


def publish(source: str, base: str, version: int) -> None:
    staging = os.path.join(base, f".staging-{version}")
    shutil.copytree(source, staging)
    os.rename(staging, os.path.join(base, str(version)))


def percentile_ms(values, q):
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline_s", type=float, default=60.0, help="valid traffic alone, seconds")
    parser.add_argument("--abuse_s", type=float, default=180.0, help="valid traffic with abuse and swaps, seconds")
    parser.add_argument("--clients", type=int, default=4, help="valid REST clients, and as many gRPC clients")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args()

    from serving import half_plus_two, launcher

    workdir = tempfile.mkdtemp(prefix="soak-")
    base = os.path.join(workdir, MODEL)
    sources = {v: half_plus_two.save(os.path.join(workdir, "versions", str(v)), b=b) for v, b in B_OF_VERSION.items()}
    publish(sources[1], base, 1)
    handle = launcher.start_server(MODEL, base, kind="embedded", poll_wait_s=0.5)
    server = psutil.Process(handle.process.pid)
    peak = {"before": server.memory_info().rss, "during": 0}
    valid = Valid()
    abuse_results: dict[str, dict] = {}
    swaps: list[dict] = []
    sampling = threading.Event()

    def sample_rss():
        while not sampling.is_set():
            try:
                rss = server.memory_info().rss
            except psutil.NoSuchProcess:
                return
            peak[valid.phase] = max(peak[valid.phase], rss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    load_before = os.getloadavg()
    try:
        async def run():
            stop = asyncio.Event()
            load = asyncio.get_running_loop().create_task(valid_load(handle, valid, stop, args.clients))
            await asyncio.sleep(args.baseline_s)
            valid.phase = "during"
            stop_at = time.monotonic() + args.abuse_s
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            host, port = handle.host, handle.rest_port
            abusers = [context.Process(target=_abuser, args=(name, arguments, queue)) for name, arguments in [
                ("malformed_rest", (host, port, stop_at)), ("oversized_rest", (host, port, stop_at)),
                ("slow_clients", (host, port, stop_at)), ("malformed_grpc", (handle.grpc_target, stop_at)),
                ("large_valid", (host, port, handle.grpc_target, stop_at))]]
            for process in abusers:
                process.start()
            began = time.monotonic()
            for swap in range(SWAPS):
                await asyncio.sleep(max(0.0, began + (swap + 0.5) * args.abuse_s / SWAPS - time.monotonic()))
                version = swap + 2
                publish(sources[version], base, version)
                swaps.append({"version": version, "published_at_s": round(time.monotonic() - began, 1)})
                print(f"published version {version}", flush=True)
            await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
            stop.set()
            await load
            for _ in abusers:
                name, results = await asyncio.get_running_loop().run_in_executor(None, queue.get, True, 120)
                abuse_results[name] = results
            for process in abusers:
                process.join(30)

        asyncio.run(run())
        status = json.loads(_get_json(handle.rest_url + f"/v1/models/{MODEL}"))
    finally:
        sampling.set()
        handle.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    rest_5xx = sum(n for results in abuse_results.values() for status_code, n in results.items()
                   if status_code.split(":")[-1].isdigit() and int(status_code.split(":")[-1]) >= 500)
    rest_5xx += sum(n for (_, protocol, what), n in valid.failures.items()
                    if protocol in ("rest", "status") and what.isdigit() and int(what) >= 500)
    grpc_server_codes = {name: n for results in abuse_results.values() for name, n in results.items()
                         if name.split(":")[-1] in SERVER_ERROR_CODES}
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": {"before": load_before, "after": os.getloadavg()}},
        "seconds": {"baseline": args.baseline_s, "abuse": args.abuse_s},
        "valid_requests": {phase: {protocol: len(valid.latencies[(phase, protocol)])
                                   for protocol in ("rest", "grpc", "status")} for phase in ("before", "during")},
        "valid_failed": {f"{phase}/{protocol}/{what}": n for (phase, protocol, what), n in valid.failures.items()},
        "valid_wrong_answers": valid.wrong,
        "http_5xx": rest_5xx,
        "grpc_server_error_codes": grpc_server_codes,
        "peak_rss_mb": {phase: round(rss / 2**20) for phase, rss in peak.items()},
        "latency_ms": {phase: {protocol: {"p50": percentile_ms(valid.latencies[(phase, protocol)], 50),
                                          "p99": percentile_ms(valid.latencies[(phase, protocol)], 99)}
                               for protocol in ("rest", "grpc", "status")} for phase in ("before", "during")},
        "swaps": swaps,
        "final_status": status,
        "abusers": abuse_results,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


def _get_json(url: str):
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


if __name__ == "__main__":
    main()
