"""Model warmup (``--enable_model_warmup``, default true as in TF Serving; ``servables/tensorflow/
saved_model_warmup{,_util}.cc``): before a loaded version becomes AVAILABLE, the requests recorded in its
``assets.extra/tf_serving_warmup_requests`` (TFRecords of ``tensorflow.serving.PredictionLog``) are replayed
through the same inference code as clients' requests, so the first real request does not pay for tracing and
first-run allocations.

As in the reference: a version without the file loads without warmup; at most 1000 records; each replayed once
(``num_request_iterations`` defaults to 1); predict, classify, regress and multi-inference logs are replayed, any
other log type fails the load (``Unsupported log_type for warmup: ...``), and so does a record that does not parse,
a file that is not TFRecords (DATA_LOSS) or a request that fails. Warmup requests are not request-logged and
not counted as requests.
"""
from __future__ import annotations

import logging
import os
import time

from tensorflow_serving.apis import prediction_log_pb2

from serving import tensor_codec, tfrecords
from serving.errors import Code, ServingError, invalid_argument
from serving.inference import Inference
from serving.servable import Servable

log = logging.getLogger("serving")

ASSETS_EXTRA = "assets.extra"
REQUESTS_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # WarmupConsts::kMaxNumRecords


def warmup_path(version_dir: str) -> str:
    return os.path.join(version_dir, ASSETS_EXTRA, REQUESTS_FILE)


def read_requests(path: str) -> list[prediction_log_pb2.PredictionLog]:
    """The warmup records of a file. Raises ServingError with the reference's codes."""
    records = []
    try:
        for data in tfrecords.read(path):
            if len(records) >= MAX_RECORDS:
                raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
            try:
                records.append(prediction_log_pb2.PredictionLog.FromString(data))
            except Exception:  # protobuf's DecodeError
                raise invalid_argument(f"Failed to parse warmup record from {path}") from None
    except tfrecords.RecordError as e:
        raise ServingError(Code.DATA_LOSS, f"{e}. Please verify your warmup data is in TFRecord format.") from None
    except OSError as e:
        raise ServingError(Code.UNKNOWN, f"Cannot read warmup data {path}: {e.strerror}") from None
    return records


class Warmup:
    """What the model manager runs on each loaded version (``ModelManager.warmup``)."""

    def __init__(self, inference: Inference):
        self._inference = inference  # one without a request logger

    async def __call__(self, servable: Servable) -> None:
        path = warmup_path(servable.path)
        if not os.path.isfile(path):
            return  # warmup data is optional
        start = time.perf_counter()
        records = read_requests(path)
        for record in records:
            await self._replay(servable, record)
        log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. Elapsed time "
                 "(microseconds): %d.", path, len(records), (time.perf_counter() - start) * 1e6)

    async def _replay(self, servable: Servable, record: prediction_log_pb2.PredictionLog) -> None:
        kind = record.WhichOneof("log_type")
        inference = self._inference
        if kind == "predict_log":
            request = record.predict_log.request
            signature = inference.predict_signature(servable, request.model_spec.signature_name)
            plan = inference.plan_predict(servable, signature, request.inputs.keys(), request.output_filter)
            inputs = {}
            for alias, proto in request.inputs.items():
                try:
                    inputs[alias] = tensor_codec.array_from_checked(proto, tensor_codec.check_proto(proto))
                except ValueError:
                    raise invalid_argument(f"tensor parsing error: {alias}") from None
            await inference.predict(servable, plan, inputs, None)
        elif kind == "classify_log":
            request = record.classify_log.request
            await inference.classify(servable, request.model_spec.signature_name, request.input, None)
        elif kind == "regress_log":
            request = record.regress_log.request
            await inference.regress(servable, request.model_spec.signature_name, request.input, None)
        elif kind == "multi_inference_log":
            request = record.multi_inference_log.request
            tasks = [(t.model_spec.name, t.model_spec.signature_name, t.method_name) for t in request.tasks]
            await inference.multi_inference(servable, tasks, request.input, None)
        else:
            raise invalid_argument(f"Unsupported log_type for warmup: {kind}")
