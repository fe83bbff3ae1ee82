"""Server metrics in Prometheus text format (spec §6), on a private prometheus_client registry.

Metric and label names follow TF Serving's exporter: internal names such as
``/tensorflow/serving/request_count`` become ``:tensorflow:serving:request_count`` and latencies are
histograms in microseconds with buckets ``10 * 1.8**i`` (33 of them). One deviation is forced by
prometheus_client: counters are exposed with the Prometheus ``_total`` suffix
(``:tensorflow:serving:request_count_total``); TF Serving's own exporter prints the bare name.

Besides TF Serving's metrics the server counts ``tfxsp_serving_requests_total`` by model, API,
entrypoint (REST/GRPC) and status code, which TF Serving's ``request_count`` does not break down by API.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serving.errors import Code

_LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
_COUNT_BUCKETS = tuple(2.0**i for i in range(15))


class Metrics:
    def __init__(self, batch_thread_pool_name: str = "model_server_batch_threads"):
        self.registry = CollectorRegistry(auto_describe=True)
        self._batch_pool = batch_thread_pool_name
        self._children: dict[tuple, object] = {}
        r = self.registry
        self._request_count = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.", ["model_name", "status"], registry=r
        )
        self._requests_by_api = Counter(
            "tfxsp_serving_requests",
            "Requests by model, API, entrypoint and status code.",
            ["model_name", "API", "entrypoint", "status"],
            registry=r,
        )
        self._request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"],
            buckets=_LATENCY_BUCKETS_US,
            registry=r,
        )
        self._runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"],
            buckets=_LATENCY_BUCKETS_US,
            registry=r,
        )
        self._example_counts = Histogram(
            ":tensorflow:serving:request_example_counts",
            "The number of tensorflow.Examples per request.",
            ["model"],
            buckets=_COUNT_BUCKETS,
            registry=r,
        )
        self._example_total = Counter(
            ":tensorflow:serving:request_example_count_total",
            "The total number of tensorflow.Examples.",
            ["model"],
            registry=r,
        )
        self._load_attempts = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ["model_path", "status"],
            registry=r,
        )
        self._load_latency = Counter(
            ":tensorflow:cc:saved_model:load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ["model_path"],
            registry=r,
        )
        self._batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Tracks the batch size distribution on processing.",
            ["thread_pool_name"],
            buckets=_COUNT_BUCKETS,
            registry=r,
        )
        self._queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Tracks the latency (in microseconds) batch tasks spend in the queue.",
            ["thread_pool_name"],
            buckets=_LATENCY_BUCKETS_US,
            registry=r,
        )

    def request(self, model_name: str, api: str, entrypoint: str, code: Code, seconds: float,
                tf_counted: bool = True) -> None:
        """One finished REST /v1 request or gRPC call.

        ``tf_counted``: whether TF Serving's own request metrics cover this call (every REST request,
        gRPC Predict/Classify/Regress); its latency is recorded for successes only.
        """
        self._child(self._requests_by_api, model_name, api, entrypoint, code.name).inc()
        if not tf_counted:
            return
        self._child(self._request_count, model_name, code.name).inc()
        if code == Code.OK:
            self._child(self._request_latency, model_name, api, entrypoint).observe(seconds * 1e6)

    def runtime(self, model_name: str, api: str, seconds: float) -> None:
        self._child(self._runtime_latency, model_name, api, "TF1").observe(seconds * 1e6)

    def examples(self, model_name: str, count: int) -> None:
        self._example_counts.labels(model_name).observe(count)
        self._example_total.labels(model_name).inc(count)

    def model_load(self, path: str, ok: bool, seconds: float) -> None:
        self._load_attempts.labels(path, "success" if ok else "fail").inc()
        if ok:
            self._load_latency.labels(path).inc(seconds * 1e6)

    def batch(self, size: int, queued_seconds: list[float]) -> None:
        self._batch_size.labels(self._batch_pool).observe(size)
        for seconds in queued_seconds:
            self._queuing_latency.labels(self._batch_pool).observe(seconds * 1e6)

    def _child(self, metric, *labels: str):
        # prometheus_client's labels() validates and locks on every call; requests repeat label sets.
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
