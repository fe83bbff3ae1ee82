"""gRPC services on grpc.aio: ``tensorflow.serving.PredictionService`` and ``ModelService`` (spec §3).

Method semantics and status codes follow ``model_servers/prediction_service_impl.cc``,
``model_service_impl.cc`` and the servable implementations (via ``serving.inference``). The handlers
are registered with the official generated method names and message types; the request
deserializers are wrapped so that an undecodable request (e.g. a truncated message) is answered
with INTERNAL and a clear message, as a C++ gRPC server answers a request it cannot parse, instead of
grpcio's generic UNKNOWN.

Predict, Classify, Regress and MultiInference pass the gate (``serving.admission``) before their request
message is read (they are registered as stream-unary handlers, which a unary client cannot tell apart):
RESOURCE_EXHAUSTED when the server is full. A large Predict is read and answered at the wire level on a
codec thread (``serving.wire``). ``HandleReloadConfigRequest`` is accepted only from the callers
``ModelManagementPolicy`` allows.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import large_json, model_info, tensor_codec, wire
from serving.admission import Gate, GateOptions, default_slots
from serving.errors import Code, ServingError, from_exception, invalid_argument
from serving.inference import Inference
from serving.limits import Limits, check_request_elements
from serving.model_manager import ModelManager
from serving.monitoring import Metrics
from serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger("serving")

# The gRPC methods TF Serving's request_count / request_latency cover (prediction_service_impl.cc).
_TF_COUNTED_APIS = ("Predict", "Classify", "Regress")


@dataclasses.dataclass(frozen=True)
class ModelManagementPolicy:
    """Who may call ``ModelService/HandleReloadConfigRequest``.

    A reload loads whatever base paths the caller names, and a SavedModel is a program (TensorFlow's
    security guide): the RPC hands the server's process to its caller. TF Serving accepts it from anyone
    who can reach the port (unless the port requires TLS client certificates); Triton disables its
    model-control API unless it is explicitly enabled (``--model-control-mode``). Here it is accepted from
    loopback and UNIX-socket clients, from any client when every client has a verified certificate
    (``--ssl_config_file`` with ``client_verify``), or from anyone with ``--allow_remote_model_management``;
    everyone else gets PERMISSION_DENIED. (A proxy that connects over loopback, such as ``kubectl
    port-forward`` or a sidecar, makes its clients local: use client certificates then.)
    """

    allow_remote: bool = False
    clients_verified: bool = False

    def check(self, peer: str) -> None:
        if self.allow_remote or self.clients_verified or _is_local_peer(peer):
            return
        raise ServingError(
            Code.PERMISSION_DENIED,
            f"HandleReloadConfigRequest from {peer} refused: model management is accepted only from loopback, "
            "UNIX-socket clients or clients with a verified TLS certificate (--ssl_config_file with "
            "client_verify); start the server with --allow_remote_model_management to accept it from anyone",
        )


def _is_local_peer(peer: str) -> bool:
    """Whether a gRPC peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``, ``unix:...``) is on this host."""
    kind, _, address = peer.partition(":")
    if kind == "unix":
        return True
    if kind not in ("ipv4", "ipv6"):
        return False
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


class _Undecodable:
    """Stands in for a request message whose bytes did not parse."""

    def __init__(self, message_type: type, error: Exception):
        self.message = f"Failed to parse request as {message_type.DESCRIPTOR.full_name}: {error}"


class _Large:
    """A large request's bytes, not parsed yet (see ``serving.wire``); ``parsed`` once it is."""

    def __init__(self, data: bytes):
        self.data = data
        self.parsed = None


def _deserializer(message_type: type, keep_large: bool = False) -> Callable[[bytes], object]:
    def parse(data: bytes):
        try:
            return message_type.FromString(data)
        except DecodeError as e:
            return _Undecodable(message_type, e)
        except Exception as e:  # anything else a parser raises is answered as INTERNAL by the handler too
            return _Undecodable(message_type, type(e).__name__)

    def parse_or_defer(data: bytes):
        # A large request is parsed by the handler, on a codec thread.
        return _Large(data) if len(data) > large_json.LARGE_BODY else parse(data)

    return parse_or_defer if keep_large else parse


def _version_choice(spec) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class GrpcApi:
    def __init__(self, manager: ModelManager, inference: Inference, metrics: Metrics,
                 tensor_content_outputs: bool = False, limits: Limits | None = None,
                 codec: concurrent.futures.Executor | None = None, gate: Gate | None = None,
                 management: ModelManagementPolicy | None = None):
        self._manager = manager
        self._inference = inference
        self._metrics = metrics
        self._tensor_content = tensor_content_outputs
        self._limits = limits or Limits()
        self._codec = codec  # decodes and encodes large messages off the event loop (None: on it)
        self._gate = gate or Gate("gRPC", GateOptions.for_slots(default_slots()))
        self._management = management or ModelManagementPolicy()

    async def _off_loop(self, large: bool, function, *args):
        if not large or self._codec is None:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._codec, function, *args)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        def unary(method, request_type, response_type):
            return grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=_deserializer(request_type), response_serializer=_serialize,
            )

        def gated(method, request_type, response_type, keep_large=False):
            async def behavior(request_iterator, context):  # the message is read by _serve, once admitted
                return await method(_PENDING, context)

            return grpc.stream_unary_rpc_method_handler(
                behavior, request_deserializer=_deserializer(request_type, keep_large), response_serializer=_serialize,
            )

        prediction = {
            "Classify": gated(self.Classify, classification_pb2.ClassificationRequest,
                              classification_pb2.ClassificationResponse),
            "Regress": gated(self.Regress, regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
            "Predict": gated(self.Predict, predict_pb2.PredictRequest, predict_pb2.PredictResponse, keep_large=True),
            "MultiInference": gated(self.MultiInference, inference_pb2.MultiInferenceRequest,
                                    inference_pb2.MultiInferenceResponse),
            "GetModelMetadata": unary(self.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest,
                                      get_model_metadata_pb2.GetModelMetadataResponse),
        }
        model = {
            "GetModelStatus": unary(self.GetModelStatus, get_model_status_pb2.GetModelStatusRequest,
                                    get_model_status_pb2.GetModelStatusResponse),
            "HandleReloadConfigRequest": unary(self.HandleReloadConfigRequest,
                                               model_management_pb2.ReloadConfigRequest,
                                               model_management_pb2.ReloadConfigResponse),
        }
        return [
            grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", prediction),
            grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", model),
        ]

    # ------------------------------------------------------------------------------ PredictionService

    # Predict, Classify, Regress and MultiInference are gated (serving.admission): registered as stream-unary
    # handlers (a unary call on the wire), so that the request message is read only once a slot is held.

    async def Predict(self, request, context):
        return await self._serve("Predict", request, context, self._predict, gated=True)

    async def _predict(self, request, context):
        tensors = None
        large = isinstance(request, _Large)
        if large:  # parsed on a codec thread, its inputs read from its bytes (serving.wire)
            parsed, tensors = await self._off_loop(True, _parse_large_predict, request.data)
            request.parsed, request = parsed, parsed
            if not _decoded(request):
                raise ServingError(Code.INTERNAL, request.message)
        spec = _model_spec(request)
        with self._acquire(spec) as handle:
            signature = self._inference.predict_signature(handle.servable, spec.signature_name)
            if tensors is None:
                tensors = request.inputs
            plan = self._inference.plan_predict(handle.servable, signature, tensors.keys(), request.output_filter)
            inputs = await self._off_loop(large, _arrays, tensors, self._limits)
            del tensors
            outputs = await self._inference.predict(handle.servable, plan, inputs, _deadline(context))
            del inputs
            response = predict_pb2.PredictResponse()
            _set_model_spec(response.model_spec, spec.name, signature.key, handle.version)
        large_output = sum(array.nbytes for array in outputs.values()) > large_json.LARGE_BODY // 4
        # A large response is also serialized on the codec thread (the serializer passes bytes through).
        return await self._off_loop(large_output, _fill_outputs, response, outputs, self._tensor_content,
                                    large_output)

    async def Classify(self, request, context):
        return await self._serve("Classify", request, context, self._classify, gated=True)

    async def Regress(self, request, context):
        return await self._serve("Regress", request, context, self._regress, gated=True)

    async def _classify(self, request, context):
        return await self._examples(request, context, self._inference.classify,
                                    classification_pb2.ClassificationResponse)

    async def _regress(self, request, context):
        return await self._examples(request, context, self._inference.regress, regression_pb2.RegressionResponse)

    async def _examples(self, request, context, infer, response_type):
        """Classify and Regress: the same request shape, a different inference and response."""
        spec = _model_spec(request)
        with self._acquire(spec) as handle:
            result = await infer(handle.servable, spec.signature_name, request.input, _deadline(context))
            response = response_type(result=result)
            _set_model_spec(response.model_spec, spec.name, spec.signature_name, handle.version)
        return response

    async def MultiInference(self, request, context):
        return await self._serve("MultiInference", request, context, self._multi_inference, gated=True,
                                 model_name=_first_task_model_name)

    async def _multi_inference(self, request, context):
        # The servable is resolved from the first task (multi_inference_helper.cc).
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        with self._acquire(spec) as handle:
            tasks = [(t.model_spec.name, t.model_spec.signature_name, t.method_name) for t in request.tasks]
            results = await self._inference.multi_inference(handle.servable, tasks, request.input, _deadline(context))
            response = inference_pb2.MultiInferenceResponse()
            for task, result in zip(request.tasks, results):
                entry = response.results.add()
                _set_model_spec(entry.model_spec, task.model_spec.name, result.signature_name, handle.version)
                if result.classification is not None:
                    entry.classification_result.CopyFrom(result.classification)
                else:
                    entry.regression_result.CopyFrom(result.regression)
        return response

    async def GetModelMetadata(self, request, context):
        async def metadata(request, context):
            spec = _model_spec(request)
            model_info.check_metadata_fields(list(request.metadata_field))
            with self._acquire(spec) as handle:
                return model_info.metadata_response(spec.name, handle.servable)

        return await self._serve("GetModelMetadata", request, context, metadata)

    # ------------------------------------------------------------------------------ ModelService

    async def GetModelStatus(self, request, context):
        async def status(request, context):
            spec = _model_spec(request)
            # Only model_spec.version narrows the answer; a label is ignored (spec §3.3).
            version = spec.version.value if spec.HasField("version") else None
            return model_info.status_response(self._manager.status(spec.name, version))

        return await self._serve("GetModelStatus", request, context, status)

    async def HandleReloadConfigRequest(self, request, context):
        async def reload(request, context):
            self._management.check(context.peer())
            for index, entry in enumerate(request.config.model_config_list.config):
                log.info("Config entry %d: name %s, base path %s, platform %s", index, entry.name, entry.base_path,
                         entry.model_platform)
            await self._manager.reload(request.config)
            response = model_management_pb2.ReloadConfigResponse()
            response.status.error_code = Code.OK
            # The server has no TensorFlow-runtime metrics to diff; asked-for ones report no increase.
            for name in request.metric_names:
                response.metric.add(name=name, int64_value_increase=0)
            return response

        return await self._serve("HandleReloadConfigRequest", request, context, reload, model_name=lambda _: "")

    # ------------------------------------------------------------------------------ plumbing

    def _acquire(self, spec):
        version, label = _version_choice(spec)
        return self._manager.acquire(spec.name, version, label)

    async def _serve(self, api: str, request, context: grpc.aio.ServicerContext,
                     work: Callable[[object, grpc.aio.ServicerContext], Awaitable[object]],
                     model_name: Callable[[object], str] | None = None, gated: bool = False):
        """Runs ``work(request, context)`` and records the outcome; a gated API within the gate's admission:
        its request (``_Pending``) is read once it holds a slot, and a large one also takes a large token."""
        start = time.perf_counter()
        try:
            if gated:
                async with self._gate.admit(_deadline(context)):
                    request = await _read_request(request, context)
                    if not _decoded(request):
                        raise ServingError(Code.INTERNAL, request.message)
                    if _is_large(request):
                        async with self._gate.admit_large(_deadline(context)):
                            response = await work(request, context)
                    else:
                        response = await work(request, context)
            else:
                if not _decoded(request):
                    raise ServingError(Code.INTERNAL, request.message)
                response = await work(request, context)
        except Exception as e:
            error = e if isinstance(e, ServingError) else _unexpected(e, api)
        else:
            self._record((model_name or _model_name)(request), api, Code.OK, start)
            return response
        self._record((model_name or _model_name)(request), api, error.code, start)
        await context.abort(error.grpc_code, error.grpc_message)

    def _record(self, model_name: str, api: str, code: Code, start: float) -> None:
        label = model_name if self._manager.knows(model_name) else ""
        self._metrics.request(label, api, "GRPC", code, time.perf_counter() - start,
                              tf_counted=api in _TF_COUNTED_APIS)


class _Pending:
    """A gated call's request, not read yet."""


_PENDING = _Pending()


async def _read_request(request, context: grpc.aio.ServicerContext):
    """The request message of a gated (stream-unary) call: a message, ``_Large`` or ``_Undecodable``."""
    if not isinstance(request, _Pending):
        return request
    message = await context.read()
    if message is grpc.aio.EOF:
        return _NoMessage()
    return message


class _NoMessage:
    message = "The call ended without a request message"


def _decoded(request) -> bool:
    return not isinstance(request, (_Undecodable, _NoMessage, _Pending))


def _model_name(request) -> str:
    if isinstance(request, _Large):
        request = request.parsed
    return request.model_spec.name if request is not None and _decoded(request) else ""


def _first_task_model_name(request) -> str:
    return request.tasks[0].model_spec.name if _decoded(request) and request.tasks else ""


def _is_large(request) -> bool:
    return isinstance(request, _Large) or request.ByteSize() > large_json.LARGE_BODY


def _model_spec(request):
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    return request.model_spec


def _serialize(response) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def _fill_outputs(response, outputs: dict, tensor_content: bool, serialize: bool):
    if serialize:  # large: written as bytes, never built as a message (serving.wire)
        return wire.predict_response_bytes(response, {
            alias: tensor_codec.serialized_tensor_proto(array, tensor_content) for alias, array in outputs.items()})
    for alias, array in outputs.items():
        tensor_codec.fill_proto(response.outputs[alias], array, tensor_content)
    return response


def _parse_large_predict(data: bytes):
    """(PredictRequest without its inputs, inputs by alias) for a large request; or (_Undecodable, None)."""
    try:
        return wire.split_predict_request(data)
    except (ValueError, UnicodeDecodeError, DecodeError):
        pass  # not what the fast path reads: protobuf parses it (and reports what is wrong)
    try:
        request = predict_pb2.PredictRequest.FromString(data)
    except DecodeError as e:
        return _Undecodable(predict_pb2.PredictRequest, e), None
    return request, dict(request.inputs)  # the map copied here, not on the loop


def _arrays(protos, limits: Limits) -> dict:
    """The request's input tensors, every one checked (and the element cap) before any is decoded."""
    shapes = {}
    for alias, proto in protos.items():
        try:
            shapes[alias] = tensor_codec.check_proto(proto)
        except tensor_codec.ImpliedValuesTooLarge as e:
            raise invalid_argument(f"tensor parsing error: {alias}: {e}") from None
        except ValueError:
            raise invalid_argument(f"tensor parsing error: {alias}") from None
    check_request_elements(sum(math.prod(shape) for shape in shapes.values()), limits)
    return {alias: tensor_codec.array_from_checked(proto, shapes[alias]) for alias, proto in protos.items()}


def _set_model_spec(spec, name: str, signature_name: str, version: int) -> None:
    # MakeModelSpec: an empty signature name is reported as the default one.
    spec.name = name
    spec.signature_name = signature_name or DEFAULT_SIGNATURE
    spec.version.value = version


def _unexpected(error: Exception, api: str) -> ServingError:
    return from_exception(error, f"gRPC {api}")
