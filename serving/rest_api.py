"""The HTTP/REST API on aiohttp (spec §2 and §6).

Routing follows ``http_server.cc`` / ``http_rest_api_handler.cc`` / ``http_rest_api_util.cc``:
any path matching ``(?i)/v1/.*`` goes to the API handler, where the full request path *including
the query string* is matched against the reference's two regexes (so ``?x=1`` becomes part of the
model name, as in the reference); the Prometheus page is an exact-path handler; everything else is
404 with a small HTML page. Every ``/v1/`` response is ``application/json``; errors are
``{"error": "<message>"}`` with the HTTP status of ``ToHTTPStatusCode``.

Hardening beyond the reference (``docs/limits-and-security.md``):

* bodies larger than ``--rest_api_max_body_bytes`` are refused with 413 (a declared Content-Length at
  once, unread); a body must arrive within ``READ_GRACE_S`` plus a second per MiB (else 408), and a
  connection must send a request's headers within ``KEEPALIVE_TIMEOUT_S``; at most ``max_connections()``
  connections are open at once (more are answered 503 and closed);
* predict, classify and regress requests pass the front end's gate (``serving.admission``): 503 with
  ``Retry-After`` when the server is full; status, metadata and monitoring requests are never gated;
* large bodies are decoded and their responses encoded on codec threads, in pieces (``serving.large_json``),
  so the event loop keeps answering;
* a failure that is not an API error is INTERNAL with an incident id (``serving.errors``); aiohttp's
  own error pages carry no traceback.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import re
import resource
import time
import urllib.parse

import numpy as np
from aiohttp import web
from tensorflow_serving.apis import input_pb2

from serving import large_json, model_info, tensor_codec
from serving.admission import Gate, GateOptions, Overloaded, default_slots
from serving.errors import Code, RequestTooLarge, ServingError, from_exception, invalid_argument
from serving.inference import Inference
from serving.limits import Limits, check_request_elements
from serving.model_manager import ModelManager
from serving.monitoring import Metrics
from serving.options import RestOptions
from serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger("serving")

_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_POST_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE
)
_GET_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE
)
_ORIGIN = re.compile(r"https?://")
_INT64_MAX = 2**63 - 1
_INFERENCE_VERBS = ("predict", "classify", "regress")
# Bodies up to this size are read before a slot is taken (see RestApi._admitted).
EARLY_READ_BYTES = 64 << 10
# A body must arrive within READ_GRACE_S plus one second per MIN_READ_RATE bytes.
READ_GRACE_S = 10.0
MIN_READ_RATE = 1 << 20
# Idle keep-alive connections, and connections that have not sent a whole request's headers, are closed
# after this long.
KEEPALIVE_TIMEOUT_S = 30.0
_TOO_MANY_CONNECTIONS = b'{"error":"Too many connections to the server; retry later"}'
_OVERLOADED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_TOO_MANY_CONNECTIONS), _TOO_MANY_CONNECTIONS)
)
_JSON = "application/json"
_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
_NOT_FOUND_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
    b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n"
)


@dataclasses.dataclass(frozen=True)
class _Route:
    method: str
    model_name: str
    version: int | None
    label: str | None
    verb: str  # predict | classify | regress | status | metadata


class RestApi:
    def __init__(self, manager: ModelManager, inference: Inference, metrics: Metrics, options: RestOptions,
                 limits: Limits | None = None, codec: concurrent.futures.Executor | None = None,
                 gate: Gate | None = None):
        self._manager = manager
        self._inference = inference
        self._metrics = metrics
        self._options = options
        self._limits = limits or Limits()
        self._codec = codec  # decodes and encodes large bodies off the event loop (None: on it)
        self._gate = gate or Gate("REST", GateOptions.for_slots(default_slots()))
        self.in_flight = 0  # API requests being handled; `idle` is set when there are none
        self.idle = asyncio.Event()
        self.idle.set()

    async def _off_loop(self, function, *args):
        """``function(*args)`` on a codec thread, so that the loop keeps answering while large data is worked on;
        callers call small work directly (an await costs a small request more than the work)."""
        if self._codec is None:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._codec, function, *args)

    def server(self) -> web.Server:
        """A low-level aiohttp server: every request reaches ``_handle``, which routes as TF Serving does."""
        max_body_bytes = self._options.max_body_bytes

        def make_request(message, payload, protocol, writer, task) -> web.BaseRequest:
            return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                                   client_max_size=max_body_bytes)

        # keepalive_timeout also bounds how long a connection may take to send a request's headers (aiohttp
        # closes a connection still waiting for a complete request then); debug=False: no tracebacks in its
        # own error pages, whatever the event loop's debug mode.
        return _Server(self._handle, request_factory=make_request, max_connections=max_connections(),
                       keepalive_timeout=KEEPALIVE_TIMEOUT_S, debug=False)

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        path = request.raw_path
        prometheus_path = self._options.prometheus_path
        if prometheus_path is not None and request.path == prometheus_path:
            return self._prometheus(path)
        if not _API_PATH.fullmatch(path):
            return web.Response(status=404, body=_NOT_FOUND_PAGE, content_type="text/html")
        self.in_flight += 1
        self.idle.clear()
        try:
            return await self._handle_api(request, path)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()

    async def _handle_api(self, request: web.BaseRequest, path: str) -> web.Response:
        start = time.perf_counter()
        headers = dict(_CORS_HEADERS) if self._options.enable_cors else {}
        if request.method == "OPTIONS":
            # CORS pre-flight is answered before the handler, with an empty body (http_server.cc).
            ok = _ORIGIN.search(request.headers.get("Origin", ""))
            return web.Response(status=200 if ok else 400, headers=headers)
        model_name, verb = "", ""
        try:
            route = _parse_route(request.method, path)
            model_name, verb = route.model_name, route.verb
            if verb in _INFERENCE_VERBS:
                payload = await self._admitted(request, route)
            else:  # status and metadata: never gated, and no body is read
                payload = await self._dispatch(route, b"")
            status = Code.OK
        except Exception as e:
            error = e if isinstance(e, ServingError) else _unexpected(e, request)
            payload, status = tensor_codec.error_json(error.client_message), error.code
            if isinstance(error, Overloaded):
                headers["Retry-After"] = str(error.retry_after_s)
            response = web.Response(status=error.http_status, body=payload, content_type=_JSON, headers=headers)
            if not request.content.is_eof():  # the body was not read (refused first): do not read it now
                response.force_close()
        else:
            response = web.Response(status=200, body=payload, content_type=_JSON, headers=headers)
        api = verb if verb in ("predict", "classify", "regress") else ""
        label = model_name if self._manager.knows(model_name) else ""
        self._metrics.request(label, api, "REST", status, time.perf_counter() - start)
        return response

    async def _admitted(self, request: web.BaseRequest, route: _Route) -> bytes:
        """An inference request: its body read and the work done within the gate's admission (serving.admission).

        A small body (at most EARLY_READ_BYTES, which aiohttp buffers per connection anyway) is read before a
        slot is taken, so a client that sends it slowly holds no slot; a larger one after, so the memory
        bodies take is bounded by the slots. A large body (over large_json.LARGE_BODY, compressed, or of
        unknown length) needs a large slot.
        """
        length = request.content_length
        encoded = request.headers.get("Content-Encoding", "identity").lower() != "identity"
        if length is not None and length > self._options.max_body_bytes and not encoded:
            raise self._too_large()
        large = length is None or encoded or length > large_json.LARGE_BODY
        deadline = self._deadline()
        if not large and length <= EARLY_READ_BYTES:
            body = await self._read_body(request, length, encoded)
            async with self._gate.admit(deadline):
                return await self._dispatch(route, body)
        async with self._gate.admit(deadline):
            if not large:
                body = await self._read_body(request, length, encoded)
                return await self._dispatch(route, body)
            async with self._gate.admit_large(deadline):
                body = await self._read_body(request, length, encoded)
                return await self._dispatch(route, body)

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(f"Request body is larger than the limit of {self._options.max_body_bytes} bytes "
                               "(--rest_api_max_body_bytes)")

    async def _read_body(self, request: web.BaseRequest, length: int | None, encoded: bool) -> bytes | bytearray:
        """The whole body, within READ_GRACE_S plus one second per MIN_READ_RATE bytes (else 408)."""
        if length is not None and not encoded and request.content.is_eof():  # all here already: no timer needed
            return await request.read()
        limit = self._options.max_body_bytes
        timeout = READ_GRACE_S + (length if length is not None and not encoded else limit) / MIN_READ_RATE
        try:
            body = await asyncio.wait_for(self._read_all(request, length if not encoded else None, limit), timeout)
        except asyncio.TimeoutError:
            raise SlowRequest(f"The request body did not arrive within {timeout:.0f} s") from None
        # A small body is copied into bytes (cheap); a large one stays in its buffer (every parser reads both).
        return bytes(body) if len(body) <= large_json.LARGE_BODY else body

    async def _read_all(self, request: web.BaseRequest, length: int | None, limit: int) -> bytearray:
        if length is not None:  # aiohttp frames the body by its Content-Length: read into one buffer
            body = bytearray(length)
            view = memoryview(body)
            position = 0
            async for chunk in request.content.iter_any():
                view[position:position + len(chunk)] = chunk
                position += len(chunk)
            del view
            if position != length:
                raise invalid_argument(f"The request body ended after {position} of {length} bytes")
            return body
        body = bytearray()  # chunked or compressed: grows, up to the limit (checked after decompression)
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                raise self._too_large()
        return body

    async def _dispatch(self, route: _Route, body: bytes) -> bytes:
        if route.verb == "predict":
            return await self._predict(route, body)
        if route.verb in ("classify", "regress"):
            return await self._classify_or_regress(route, body)
        if not route.model_name:
            raise invalid_argument("Missing model name in request.")
        if route.verb == "metadata":
            with self._manager.acquire(route.model_name, route.version, route.label) as handle:
                return model_info.metadata_json(route.model_name, handle.servable)
        # The reference ignores a label here: status covers all versions (spec §2.3 QUIRK).
        versions = self._manager.status(route.model_name, route.version)
        return model_info.status_json(model_info.status_response(versions))

    async def _predict(self, route: _Route, body: bytes) -> bytes:
        large = len(body) > large_json.LARGE_BODY
        # The parsed document stays in `parsed` and is freed on the codec thread too: freeing millions of
        # JSON values takes long enough to stall the loop.
        with large_json.collector_paused() if large else contextlib.nullcontext():
            parsed = await self._off_loop(_ParsedBody, body) if large else _ParsedBody(body)
            try:
                signature_name = parsed.signature_name or DEFAULT_SIGNATURE
                with self._manager.acquire(route.model_name, route.version, route.label) as handle:
                    signature = handle.servable.signatures.get(signature_name)
                    if signature is None:
                        raise invalid_argument(
                            f'Serving signature name: "{signature_name}" not found in signature def')
                    if not signature.inputs:
                        raise invalid_argument(f"Failed to get input map for signature: {signature_name}")
                    inputs, request_format = (await self._off_loop(parsed.predict_inputs, signature.input_dtypes)
                                              if large else parsed.predict_inputs(signature.input_dtypes))
                    check_request_elements(sum(array.size for array in inputs.values()), self._limits)
                    plan = self._inference.plan_predict(handle.servable, signature, inputs.keys())
                    outputs = await self._inference.predict(handle.servable, plan, inputs, self._deadline())
            finally:
                if parsed.doc is not None:
                    if large:
                        await self._off_loop(parsed.release)
                    else:
                        parsed.release()
        if sum(array.nbytes for array in outputs.values()) <= large_json.LARGE_BODY // 4:
            return tensor_codec.predict_response_json(outputs, request_format)
        with large_json.collector_paused():
            return await self._off_loop(tensor_codec.predict_response_json, outputs, request_format)

    async def _classify_or_regress(self, route: _Route, body: bytes) -> bytes:
        large = len(body) > large_json.LARGE_BODY
        with large_json.collector_paused() if large else contextlib.nullcontext():
            signature_name, model_input = (await self._off_loop(_examples_input, body, route.verb) if large
                                           else _examples_input(body, route.verb))
        with self._manager.acquire(route.model_name, route.version, route.label) as handle:
            if route.verb == "classify":
                result = await self._inference.classify(handle.servable, signature_name, model_input, self._deadline())
            else:
                result = await self._inference.regress(handle.servable, signature_name, model_input, self._deadline())
        if route.verb == "classify":
            return tensor_codec.classify_response_json(
                [[(c.label, c.score) for c in classes.classes] for classes in result.classifications]
            )
        return tensor_codec.regress_response_json(
            np.array([r.value for r in result.regressions], dtype=np.float32)
        )

    def _deadline(self) -> float | None:
        timeout_ms = self._options.timeout_ms
        return time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None

    def _prometheus(self, path: str) -> web.Response:
        expected = self._options.prometheus_path
        if path != expected:
            return web.Response(status=400, text=f"Unexpected path: {path}. Should be {expected}",
                                content_type="text/plain")
        return web.Response(body=self._metrics.exposition(), content_type="text/plain")


def max_connections() -> int:
    """Open REST connections allowed at once: half the descriptors the process may open, at most 4096."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(4096, soft // 2)) if soft != resource.RLIM_INFINITY else 4096


class _Server(web.Server):
    """aiohttp's low-level server, answering connections beyond ``max_connections`` with a 503 and closing them."""

    def __init__(self, handler, *, max_connections: int, **kwargs):
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections

    def connection_made(self, handler, transport) -> None:
        super().connection_made(handler, transport)
        if len(self._connections) > self.max_connections:
            transport.write(_OVERLOADED_RESPONSE)
            handler.force_close()
            transport.close()


class SlowRequest(ServingError):
    """A body that does not arrive in time: 408, and the connection is closed."""

    def __init__(self, message: str):
        super().__init__(Code.DEADLINE_EXCEEDED, message)

    @property
    def http_status(self) -> int:
        return 408


class _ParsedBody:
    """A predict body's JSON document, parsed (and later converted and freed) where the caller chooses."""

    def __init__(self, body: bytes):
        self.doc = tensor_codec.parse_json_object(body)
        self.has_bool_tokens = tensor_codec.has_bool_tokens(body)
        try:
            self.signature_name = tensor_codec.signature_name_from_json(self.doc)
        except ServingError:
            self.release()
            raise

    def predict_inputs(self, input_dtypes) -> tuple[dict, str]:
        try:
            return tensor_codec.predict_inputs_from_json(self.doc, input_dtypes, self.has_bool_tokens)
        finally:
            self.release()

    def release(self) -> None:
        self.doc = None


def _examples_input(body: bytes, verb: str) -> tuple[str, input_pb2.Input]:
    doc = tensor_codec.parse_json_object(body)
    signature_name = tensor_codec.signature_name_from_json(doc)
    examples, context = tensor_codec.examples_from_json(doc, verb)
    model_input = input_pb2.Input()
    if context is None:
        model_input.example_list.examples.extend(examples)
    else:
        model_input.example_list_with_context.context.CopyFrom(context)
        model_input.example_list_with_context.examples.extend(examples)
    return signature_name, model_input


def _unexpected(error: Exception, request: web.BaseRequest) -> ServingError:
    return from_exception(error, f"REST {request.method} {request.raw_path}")


def _parse_route(method: str, path: str) -> _Route:
    """``ParseModelInfo`` plus the dispatch rules of ``HttpRestApiHandler::ProcessRequest``."""
    malformed = invalid_argument(f"Malformed request: {method} {path}")
    if method == "POST":
        match = _POST_PATH.fullmatch(path)
    elif method == "GET":
        match = _GET_PATH.fullmatch(path)
    else:
        raise malformed
    if match is None:
        raise malformed
    name, version_text, label, verb = match.groups()
    version = None
    if version_text:
        version = int(version_text)
        if version > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version_text} to numeric.")
    name = urllib.parse.unquote(name) if name else ""
    label = urllib.parse.unquote(label) if label else None
    if method == "POST":
        if verb not in ("predict", "classify", "regress"):  # the regex is case-insensitive, this is not
            raise malformed
        return _Route(method, name, version, label, verb)
    return _Route(method, name, version, label, "metadata" if verb == "metadata" else "status")
