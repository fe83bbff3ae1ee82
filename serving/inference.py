"""Predict, Classify, Regress and MultiInference semantics, shared by the REST and gRPC front ends.

Ports the request processing of ``servables/tensorflow/{predict_util,classifier,regressor,
multi_inference,util}.cc`` and ``tensorflow/cc/saved_model/util.cc`` (spec §2.5, §2.6, §3.3):
signature selection and validation, input/output alias checks, tf.Example serialization, and
post-processing into ClassificationResult / RegressionResult, with the reference's status codes
and messages and in the reference's order of checks.

Model execution goes through a ``Runner``: ``DirectRunner`` runs each request in a thread pool (the
asyncio loop is never blocked by TensorFlow); ``batching.BatchScheduler`` merges concurrent runs.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving import tensor_codec
from serving.errors import Code, ServingError, failed_precondition, invalid_argument
from serving.monitoring import Metrics
from serving.request_logger import RequestLogger
from serving.servable import CLASSIFY_METHOD, DEFAULT_SIGNATURE, PREDICT_METHOD, REGRESS_METHOD, Servable, Signature

_MAX_PLANS = 1024


class Runner(Protocol):
    async def run(self, servable: Servable, feed_names: Sequence[str], feed_values: Sequence[np.ndarray],
                  fetch_names: Sequence[str], deadline: float | None) -> list[np.ndarray]: ...


class DirectRunner:
    """One session run per request, on a worker thread."""

    def __init__(self, executor: concurrent.futures.Executor):
        self._executor = executor

    async def run(self, servable: Servable, feed_names: Sequence[str], feed_values: Sequence[np.ndarray],
                  fetch_names: Sequence[str], deadline: float | None) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, servable.run, feed_names, feed_values, fetch_names, deadline)


@dataclasses.dataclass(frozen=True)
class PredictPlan:
    """A predict request validated against its signature, with the outputs to fetch."""

    signature: Signature
    output_aliases: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """One MultiInference task's outcome."""

    signature_name: str
    classification: classification_pb2.ClassificationResult | None = None
    regression: regression_pb2.RegressionResult | None = None


class Inference:
    def __init__(self, runner: Runner, metrics: Metrics, method_name_check: bool = False,
                 request_logger: RequestLogger | None = None):
        self._runner = runner
        self._metrics = metrics
        self._method_name_check = method_name_check
        # Answered requests are logged here, for REST and gRPC alike (None: no logging, e.g. warmup).
        self._request_logger = request_logger

    # ---------------------------------------------------------------------------- predict

    def predict_signature(self, servable: Servable, signature_name: str) -> Signature:
        signature = servable.signatures.get(signature_name or DEFAULT_SIGNATURE)
        if signature is None:
            raise failed_precondition(f'Serving signature key "{signature_name or DEFAULT_SIGNATURE}" not found.')
        return signature

    def plan_predict(self, servable: Servable, signature: Signature, request_aliases: Collection[str],
                     output_filter: Sequence[str] = ()) -> PredictPlan:
        """VerifySignature, VerifyRequestInputsSize, GetInputValues' alias checks, output filter.

        A valid plan is remembered per servable: clients repeat the same request shape.
        """
        key = (signature.key, frozenset(request_aliases), tuple(output_filter))
        plan = servable.plans.get(key)
        if plan is None:
            plan = self._plan_predict(signature, key[1], key[2])
            if len(servable.plans) >= _MAX_PLANS:
                servable.plans.clear()
            servable.plans[key] = plan
        return plan

    def _plan_predict(self, signature: Signature, requested: frozenset[str],
                      output_filter: tuple[str, ...]) -> PredictPlan:
        if self._method_name_check and signature.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingError(
                Code.INTERNAL,
                "Expected prediction signature method_name to be one of {"
                f"{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {signature.method_name}",
            )
        expected = set(signature.inputs)
        if len(requested) > len(expected) or (len(requested) < len(expected) and not signature.defaults):
            raise invalid_argument(
                f"input size does not match signature: {len(requested)}!={len(expected)} "
                f"len({{{_join(requested)}}}) != len({{{_join(expected)}}}). "
                f"Sent extra: {{{_join(requested - expected)}}}. "
                f"Missing but required: {{{_join(expected - requested)}}}."
            )
        for alias, spec in signature.inputs.items():
            if alias not in requested and alias not in signature.defaults:
                raise invalid_argument(
                    f"Signature input alias: {alias}(feed name: {spec.name}) not found in request and no default "
                    f"value provided. Inputs expected to be in the request {{{_join(requested)}}}, or default input "
                    f"alias set: {_join(signature.defaults)}"
                )
        used = requested & expected
        if requested and used != requested:
            raise invalid_argument(
                f"Inputs contains invalid name. Used request inputs: {_join(used)}, request input: {_join(requested)}"
            )
        seen: set[str] = set()
        for alias in output_filter:
            if alias not in signature.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{_join(signature.outputs)}}}."
                )
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return PredictPlan(signature, tuple(output_filter) or tuple(signature.outputs))

    async def predict(self, servable: Servable, plan: PredictPlan, inputs: Mapping[str, np.ndarray],
                      deadline: float | None) -> dict[str, np.ndarray]:
        signature = plan.signature
        feed_names, feed_values = [], []
        for index, (alias, spec) in enumerate(signature.inputs.items()):
            array = inputs[alias] if alias in inputs else signature.defaults[alias]
            provided = tensor_codec.dtype_of_array(array)
            if provided != spec.dtype:
                # What the session reports for a mistyped feed of a TF2 SavedModel (spec §2.5).
                raise invalid_argument(
                    f"Expects arg[{index}] to be {tensor_codec.dtype_string(spec.dtype)} but "
                    f"{tensor_codec.dtype_string(provided)} is provided"
                )
            feed_names.append(spec.name)
            feed_values.append(array)
        fetch_names = [signature.outputs[alias].name for alias in plan.output_aliases]
        outputs = await self._run(servable, "Predict", feed_names, feed_values, fetch_names, deadline)
        answer = dict(zip(plan.output_aliases, outputs))
        if self._request_logger is not None:
            output_filter = plan.output_aliases if plan.output_aliases != tuple(signature.outputs) else ()
            self._request_logger.predict(servable.model_name, servable.version, signature.key, inputs, answer,
                                         output_filter, tensor_codec.serialized_tensor_proto)
        return answer

    # ---------------------------------------------------------------------------- classify / regress

    async def classify(self, servable: Servable, signature_name: str, model_input: input_pb2.Input,
                       deadline: float | None) -> classification_pb2.ClassificationResult:
        return await self._run_examples(servable, "Classify", signature_name, model_input, deadline,
                                        CLASSIFY_METHOD, "classification", _classification_tensors,
                                        _classification_result)

    async def regress(self, servable: Servable, signature_name: str, model_input: input_pb2.Input,
                      deadline: float | None) -> regression_pb2.RegressionResult:
        return await self._run_examples(servable, "Regress", signature_name, model_input, deadline,
                                        REGRESS_METHOD, "regression", _regression_tensors,
                                        _regression_result)

    async def _run_examples(self, servable: Servable, api: str, signature_name: str,
                            model_input: input_pb2.Input, deadline: float | None, method: str,
                            kind: str, tensors, make_result):
        """Classify and Regress: tf.Examples in, the signature's tensors, a typed result out."""
        signature = self._lookup(servable, signature_name, "No signature was found with the name: ")
        if self._method_name_check:
            _check_method(signature, method, kind)
        input_name, output_names = tensors(signature)
        examples = serialized_examples(model_input)
        self._metrics.examples(servable.model_name, len(examples))
        outputs = await self._run(servable, api, [input_name], [_string_vector(examples)], output_names,
                                  deadline)
        result = make_result(signature, len(examples), dict(zip(output_names, outputs)))
        if self._request_logger is not None:
            record = self._request_logger.classify if api == "Classify" else self._request_logger.regress
            record(servable.model_name, servable.version, signature.key, model_input, result)
        return result

    async def multi_inference(self, servable: Servable, tasks: Sequence[tuple[str, str, str]],
                              model_input: input_pb2.Input, deadline: float | None) -> list[TaskResult]:
        """``tasks`` are (model name, signature name, method name) triples (multi_inference.cc)."""
        model_name = ""
        seen_signatures: set[str] = set()
        input_names: set[str] = set()
        output_names: set[str] = set()
        planned = []
        for task_model, signature_name, method in tasks:
            if not task_model:
                raise invalid_argument("Found ModelSpec with an empty model name.")
            if model_name and task_model != model_name:
                raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            model_name = task_model
            key = signature_name or DEFAULT_SIGNATURE
            if key in seen_signatures:
                raise invalid_argument(f"Duplicate evaluation of signature: {key}")
            seen_signatures.add(key)
            signature = self._lookup(servable, key, "Requested signature not found in model graph: ")
            if method == CLASSIFY_METHOD:
                input_name, outputs = _classification_tensors(signature)
            elif method == REGRESS_METHOD:
                input_name, outputs = _regression_tensors(signature)
            else:
                raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {method}")
            input_names.add(input_name)
            output_names.update(outputs)
            planned.append((signature, method))
        examples = serialized_examples(model_input)
        self._metrics.examples(servable.model_name, len(examples))
        fetches = sorted(output_names)
        feeds = sorted(input_names)
        vector = _string_vector(examples)
        results = await self._run(servable, "MultiInference", feeds, [vector] * len(feeds), fetches, deadline)
        by_name = dict(zip(fetches, results))
        task_results = []
        for signature, method in planned:
            if method == CLASSIFY_METHOD:
                task_results.append(
                    TaskResult(signature.key, classification=_classification_result(signature, len(examples), by_name))
                )
            else:
                task_results.append(
                    TaskResult(signature.key, regression=_regression_result(signature, len(examples), by_name))
                )
        if self._request_logger is not None:
            self._request_logger.multi_inference(servable.model_name, servable.version, tasks, model_input,
                                                 task_results)
        return task_results

    # ---------------------------------------------------------------------------- helpers

    def _lookup(self, servable: Servable, signature_name: str, missing_message: str) -> Signature:
        key = signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(key)
        if signature is None:
            raise invalid_argument(missing_message + key)
        return signature

    async def _run(self, servable: Servable, api: str, feed_names, feed_values, fetch_names,
                   deadline: float | None) -> list[np.ndarray]:
        start = time.perf_counter()
        outputs = await self._runner.run(servable, feed_names, feed_values, fetch_names, deadline)
        self._metrics.runtime(servable.model_name, api, time.perf_counter() - start)
        return outputs


def serialized_examples(model_input: input_pb2.Input) -> list[bytes]:
    """``InputToSerializedExampleTensor``: a context is merged by prefixing its serialization."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in model_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = model_input.example_list_with_context
        context = with_context.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in with_context.examples]
    else:
        examples = []
    if not examples:
        raise invalid_argument("Input is empty.")
    return examples


def _string_vector(values: list[bytes]) -> np.ndarray:
    vector = np.empty(len(values), dtype=object)
    vector[:] = values
    return vector


def _check_method(signature: Signature, expected: str, kind: str) -> None:
    if signature.method_name != expected:
        raise invalid_argument(f"Expected {kind} signature method_name to be {expected}. Was: {signature.method_name}")


def _classification_tensors(signature: Signature) -> tuple[str, list[str]]:
    # PreProcessClassification
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {signature.proto}")
    outputs = [signature.outputs[name].name for name in ("classes", "scores") if name in signature.outputs]
    if not outputs:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" or "scores". '
            f"Signature was: {signature.proto}"
        )
    return signature.inputs["inputs"].name, outputs


def _regression_tensors(signature: Signature) -> tuple[str, list[str]]:
    # PreProcessRegression
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {signature.proto}")
    if "outputs" not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {signature.proto}")
    return signature.inputs["inputs"].name, [signature.outputs["outputs"].name]


def _classification_result(signature: Signature, num_examples: int,
                           outputs: Mapping[str, np.ndarray]) -> classification_pb2.ClassificationResult:
    # PostProcessClassificationResult
    classes = outputs[signature.outputs["classes"].name] if "classes" in signature.outputs else None
    scores = outputs[signature.outputs["scores"].name] if "scores" in signature.outputs else None
    for tensor, name, dtype in ((classes, "classes", types_pb2.DT_STRING), (scores, "scores", types_pb2.DT_FLOAT)):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {tensor_codec.shape_string(tensor.shape)}"
            )
        if tensor_codec.dtype_of_array(tensor) != dtype:
            raise invalid_argument(
                f"Expected {name} Tensor of {types_pb2.DataType.Name(dtype)}. Got: "
                f"{types_pb2.DataType.Name(tensor_codec.dtype_of_array(tensor))}"
            )
        if tensor.shape[0] != num_examples:
            raise invalid_argument(f"Expected {name} output batch size of {num_examples}. Got: {tensor.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for i in range(num_examples):
        classifications = result.classifications.add()
        for c in range(num_classes):
            cls = classifications.classes.add()
            if classes is not None:
                label = classes[i, c]
                cls.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                cls.score = scores[i, c]
    return result


def _regression_result(signature: Signature, num_examples: int,
                       outputs: Mapping[str, np.ndarray]) -> regression_pb2.RegressionResult:
    # PostProcessRegressionResult
    tensor = outputs[signature.outputs["outputs"].name]
    if not (tensor.ndim == 1 or (tensor.ndim == 2 and tensor.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{tensor_codec.shape_string(tensor.shape)}"
        )
    if tensor.shape[0] != num_examples:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {num_examples} vs. {tensor.shape[0]}"
        )
    if tensor_codec.dtype_of_array(tensor) != types_pb2.DT_FLOAT:
        raise invalid_argument(
            "Expected output Tensor of DT_FLOAT.  Got: "
            f"{types_pb2.DataType.Name(tensor_codec.dtype_of_array(tensor))}"
        )
    result = regression_pb2.RegressionResult()
    for value in tensor.ravel().tolist():
        result.regressions.add(value=value)
    return result


def _join(names) -> str:
    return ",".join(sorted(names))
