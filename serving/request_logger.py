"""Request logging, configured as TF Serving configures it: ``logging_config`` in a model's ``ModelConfig``.

    config {
      name: "penguin" base_path: "/models/penguin" model_platform: "tensorflow"
      logging_config {
        sampling_config { sampling_rate: 0.1 }
        log_collector_config { type: "tfrecord" filename_prefix: "/var/log/penguin/requests" }
      }
    }

Each sampled request and its response become one ``tensorflow.serving.PredictionLog`` (``classify_log``,
``regress_log``, ``predict_log`` or ``multi_inference_log``, with ``log_metadata``: the model spec that served it,
the sampling config, the SavedModel tags), as ``core/request_logger.cc`` builds it. Only answered requests are
logged (TF Serving logs after a successful run too). Logging happens in the dataplane (``serving.inference``), so
REST and gRPC requests are logged alike; a REST request is logged as the proto request it stands for.

The open-source TF Serving has no log collector (``LogCollector::Create`` finds no factory: NOT_FOUND
``Cannot find LogCollector::Factory for type: <type>``). This server has one, type ``tfrecord``: records go into
TFRecord files ``<filename_prefix>-<UTC start>-<pid>-<nnnnn>.tfrecord``, a new file once one holds
``--request_log_file_bytes`` (and at each start), readable with ``tf.data.TFRecordDataset`` and
``PredictionLog.FromString``. Models whose configs name the same collector share one writer (as the reference
shares a logger per identical ``LoggingConfig``).

The request never waits for its log's I/O: a sampled request's record is encoded on the event loop (a few tens of
microseconds; bytes, which the garbage collector does not track) into a bounded queue that the collector's own
thread writes every 50 ms, in one write(). A full queue, a full disk or a folder that cannot be written
never fails a request: the record is dropped and counted in ``tfxsp_serving_request_log_dropped_total`` (by model
and reason), and the first failure of a run of failures is logged, once.
"""
from __future__ import annotations

import collections
import datetime
import errno
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    logging_pb2,
    model_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from tensorflow_serving.config import logging_config_pb2, model_server_config_pb2

from serving import logging_config, tfrecords, wire
from serving.logging_config import FILE_SUFFIX

log = logging.getLogger("serving")

DEFAULT_FILE_BYTES = 64 << 20
QUEUE_RECORDS = 4096  # records waiting for the writer at most; more are dropped (counted)
DRAIN_INTERVAL_S = 0.05  # how often the writer takes what requests queued
RETRY_OPEN_S = 5.0  # after a failed write, the next file is tried this much later (records meanwhile dropped)

# What a queued item builds on the writer thread: the PredictionLog's log_type field and its message.
Build = Callable[[], tuple[str, object]]  # (the PredictionLog field, its message or its serialized bytes)
_LOG_METADATA = prediction_log_pb2.PredictionLog.DESCRIPTOR.fields_by_name["log_metadata"].number
_LOG_FIELDS = {field.name: field.number for field in prediction_log_pb2.PredictionLog.DESCRIPTOR.fields}


class _Counters:
    def __init__(self, registry: CollectorRegistry):
        # TF Serving's own counter of logged requests (core/request_logger.cc), and ours of records lost.
        self.logged = Counter(":tensorflow:serving:request_log_count", "The total number of requests logged.",
                              ["model_name", "status"], registry=registry)
        self.dropped = Counter("tfxsp_serving_request_log_dropped",
                               "Sampled requests whose log record was not written, by model and reason "
                               "(queue_full, write_error).", ["model_name", "reason"], registry=registry)


class Collector:
    """One filename prefix: a bounded queue and the thread that writes its TFRecord files."""

    def __init__(self, prefix: str, counters: _Counters, file_bytes: int = DEFAULT_FILE_BYTES):
        self.prefix = prefix
        self._counters = counters
        self._file_bytes = file_bytes
        self._pending: collections.deque = collections.deque()
        self._closing = threading.Event()
        self._start = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        self._sequence = 0
        self._file = None
        self._written = 0
        self._failing_since: float | None = None
        self._thread = threading.Thread(target=self._write_forever, name="request-log", daemon=True)
        self._thread.start()

    def put(self, model_name: str, record: Callable[[], bytes]) -> None:
        """Called on the event loop: `record()` serializes the PredictionLog, which is framed as a TFRecord here
        (bytes, which the garbage collector does not track, so a queued record costs no collection) and appended
        to the deque, waking no thread: the writer drains the deque every DRAIN_INTERVAL_S in one write. A thread
        woken per record would take the GIL from the loop on every request."""
        if len(self._pending) >= QUEUE_RECORDS:
            self._counters.dropped.labels(model_name, "queue_full").inc()
            return
        try:
            data = tfrecords.encode(record())
        except Exception as e:  # a request the proto cannot hold: lose its record, not the request
            log.error("Request log %s: could not encode a %s request: %s", self.prefix, model_name, e)
            self._counters.dropped.labels(model_name, "encode_error").inc()
            return
        self._pending.append((model_name, data))

    def close(self, timeout_s: float = 5.0) -> None:
        """Writes what is queued (for at most ``timeout_s``), then closes the file."""
        self._closing.set()
        self._thread.join(timeout_s)

    def _write_forever(self) -> None:
        while True:
            closing = self._closing.wait(DRAIN_INTERVAL_S)
            batch = []
            while self._pending:
                batch.append(self._pending.popleft())
            while batch:  # one write() per file: a batch that fills this file goes on in the next
                n = self._records_for_this_file(batch)
                self._write(batch[:n])
                batch = batch[n:]
            if closing:
                break
        if self._file is not None:
            self._file.close()

    def _records_for_this_file(self, batch: list[tuple[str, bytes]]) -> int:
        """How many of the batch's records go into the file _write writes next (at least one): as many as fit
        in what that file has left of --request_log_file_bytes."""
        full = self._file is None or self._written >= self._file_bytes
        room = self._file_bytes - (0 if full else self._written)
        count, size = 1, len(batch[0][1])
        while count < len(batch) and size + len(batch[count][1]) <= room:
            size += len(batch[count][1])
            count += 1
        return count

    def _write(self, batch: list[tuple[str, bytes]]) -> None:
        """Writes the records in one write() (the next file first when this one is full); a record the disk had
        no room for, or any record while writing fails, is dropped and counted."""
        if self._failing_since is not None and time.monotonic() - self._failing_since < RETRY_OPEN_S:
            for model_name, _ in batch:
                self._counters.dropped.labels(model_name, "write_error").inc()
            return
        data = b"".join(record for _, record in batch)
        written = 0
        try:
            if self._file is None or self._written >= self._file_bytes:
                self._rotate()
            written = self._file.write(data) or 0
            if written != len(data):  # the disk filled up: the file ends in a partial record
                raise OSError(errno.ENOSPC, f"wrote {written} of {len(data)} bytes")
        except OSError as e:
            self._failed(e)
        self._written += written
        end = 0
        for model_name, record in batch:
            end += len(record)
            if end <= written:
                self._counters.logged.labels(model_name, "OK").inc()
            else:
                self._counters.dropped.labels(model_name, "write_error").inc()
        if self._failing_since is not None and written == len(data):
            log.info("Request log %s: writing again (%s)", self.prefix, self._file.name)
            self._failing_since = None

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        directory = os.path.dirname(self.prefix)
        if directory:
            os.makedirs(directory, exist_ok=True)
        path = f"{self.prefix}-{self._start}-{os.getpid()}-{self._sequence:05d}{FILE_SUFFIX}"
        self._sequence += 1
        # Exclusive: never append to (or truncate) another writer's file. Unbuffered: what write() took is on disk
        # (the page cache), the rest counted as dropped; nothing is lost later in a buffer.
        self._file = open(path, "xb", buffering=0)
        self._written = 0

    def _failed(self, error: OSError) -> None:
        if self._failing_since is None:  # once per run of failures, not once per request
            log.error("Request log %s: cannot write (%s); requests are still served, their log records are "
                      "dropped and counted in tfxsp_serving_request_log_dropped_total", self.prefix, error)
        self._failing_since = time.monotonic()
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


class _ModelLog:
    """What one model's sampled requests go to."""

    def __init__(self, config: logging_config_pb2.LoggingConfig, collector: Collector):
        self.rate = config.sampling_config.sampling_rate
        self.sampling_config = config.sampling_config
        self.collector = collector


class RequestLogger:
    """``ServerRequestLogger``: the logging configs of the served models, and their collectors."""

    def __init__(self, registry: CollectorRegistry, saved_model_tags: Sequence[str] = ("serve",),
                 file_bytes: int = DEFAULT_FILE_BYTES):
        self._counters = _Counters(registry)
        self._tags = list(saved_model_tags)
        self._file_bytes = file_bytes
        self._models: dict[str, _ModelLog] = {}
        self._collectors: dict[str, Collector] = {}
        self._random = random.random
        # (model, version, signature) -> the serialized log_metadata field of its records: the same for each one.
        self._metadata: dict[tuple[str, int, str], bytes] = {}

    @staticmethod
    def check(config: model_server_config_pb2.ModelServerConfig) -> None:
        """Raises ServingError for a logging config this server cannot honour (before any of the config applies)."""
        logging_config.check_all(config)

    def apply(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Applies a checked config's logging configs (``ServerRequestLogger::Update``); collectors no model
        names any more are closed."""
        checked = {m.name: logging_config.checked(m) for m in config.model_config_list.config}
        models, collectors = {}, {}
        for name, config_of_model in checked.items():
            if config_of_model is None:
                continue
            prefix = os.path.abspath(config_of_model.log_collector_config.filename_prefix)
            collector = collectors.get(prefix) or self._collectors.get(prefix)
            if collector is None:
                collector = Collector(prefix, self._counters, self._file_bytes)
                log.info("Logging requests of model %s (sampling rate %g) to %s-*%s", name,
                         config_of_model.sampling_config.sampling_rate, prefix, FILE_SUFFIX)
            collectors[prefix] = collector
            models[name] = _ModelLog(config_of_model, collector)
        retired = [c for prefix, c in self._collectors.items() if prefix not in collectors]
        self._models, self._collectors, self._metadata = models, collectors, {}
        for collector in retired:
            collector.close()

    def close(self) -> None:
        for collector in self._collectors.values():
            collector.close()
        self._models, self._collectors = {}, {}

    def _sampled(self, model_name: str) -> _ModelLog | None:
        model = self._models.get(model_name)
        if model is None or model.rate <= 0.0 or (model.rate < 1.0 and self._random() >= model.rate):
            return None
        return model

    def _put(self, model: _ModelLog, name: str, version: int, signature_name: str, build: Build) -> None:
        """Queues the PredictionLog of `build()`: (its log field's name, the log as a message or serialized)."""
        key = (name, version, signature_name)

        def record() -> bytes:
            metadata = self._metadata.get(key)
            if metadata is None:
                log_metadata = logging_pb2.LogMetadata(
                    model_spec=model_pb2.ModelSpec(name=name, signature_name=signature_name),
                    sampling_config=model.sampling_config, saved_model_tags=self._tags)
                log_metadata.model_spec.version.value = version
                metadata = self._metadata[key] = wire.len_field(_LOG_METADATA, log_metadata.SerializeToString())
            kind, entry = build()
            return metadata + wire.len_field(_LOG_FIELDS[kind], entry if isinstance(entry, bytes)
                                             else entry.SerializeToString())

        model.collector.put(name, record)

    # ------------------------------------------------------------------------ what the dataplane calls

    def predict(self, name: str, version: int, signature_name: str, inputs: dict, outputs: dict,
                output_filter: Sequence[str], serialize: Callable) -> None:
        """A predict request's input arrays and answer; ``serialize(array)`` gives an array's TensorProto as byte
        pieces (serving.tensor_codec.serialized_tensor_proto). The PredictLog is written at the wire level, its
        request and response never built as messages: most of logging's cost on a small request was theirs."""
        model = self._sampled(name)
        if model is None:
            return

        def build():
            spec = _spec(name, version, signature_name).SerializeToString()
            request = [wire.len_field(1, spec), *wire.tensor_map(2, {a: serialize(x) for a, x in inputs.items()}),
                       *(wire.len_field(3, alias.encode("utf-8")) for alias in output_filter)]
            response = [*wire.tensor_map(1, {a: serialize(x) for a, x in outputs.items()}), wire.len_field(2, spec)]
            return "predict_log", wire.len_field(1, b"".join(request)) + wire.len_field(2, b"".join(response))

        self._put(model, name, version, signature_name, build)

    def classify(self, name: str, version: int, signature_name: str, model_input, result) -> None:
        model = self._sampled(name)
        if model is not None:
            def build():
                spec = _spec(name, version, signature_name)
                return "classify_log", prediction_log_pb2.ClassifyLog(
                    request=classification_pb2.ClassificationRequest(model_spec=spec, input=model_input),
                    response=classification_pb2.ClassificationResponse(model_spec=spec, result=result))
            self._put(model, name, version, signature_name, build)

    def regress(self, name: str, version: int, signature_name: str, model_input, result) -> None:
        model = self._sampled(name)
        if model is not None:
            def build():
                spec = _spec(name, version, signature_name)
                return "regress_log", prediction_log_pb2.RegressLog(
                    request=regression_pb2.RegressionRequest(model_spec=spec, input=model_input),
                    response=regression_pb2.RegressionResponse(model_spec=spec, result=result))
            self._put(model, name, version, signature_name, build)

    def multi_inference(self, name: str, version: int, tasks: Sequence[tuple[str, str, str]], model_input,
                        results: Sequence) -> None:
        model = self._sampled(name)
        if model is None:
            return

        def build():
            request = inference_pb2.MultiInferenceRequest(input=model_input)
            response = inference_pb2.MultiInferenceResponse()
            for (task_model, signature_name, method), result in zip(tasks, results):
                request.tasks.add(model_spec=model_pb2.ModelSpec(name=task_model, signature_name=signature_name),
                                  method_name=method)
                entry = response.results.add(model_spec=_spec(task_model, version, result.signature_name))
                if result.classification is not None:
                    entry.classification_result.CopyFrom(result.classification)
                else:
                    entry.regression_result.CopyFrom(result.regression)
            return "multi_inference_log", prediction_log_pb2.MultiInferenceLog(request=request, response=response)

        self._put(model, name, version, "", build)


def _spec(name: str, version: int, signature_name: str) -> model_pb2.ModelSpec:
    # MakeModelSpec: an empty signature name is reported as the default one (serving.servable's, not imported:
    # this module is read before TensorFlow is, to check a config).
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name or "serving_default")
    spec.version.value = version
    return spec
