"""The HTTP/REST API on aiohttp (spec §2 and §6).

Routing follows ``http_server.cc`` / ``http_rest_api_handler.cc`` / ``http_rest_api_util.cc``:
any path matching ``(?i)/v1/.*`` goes to the API handler, where the full request path *including
the query string* is matched against the reference's two regexes (so ``?x=1`` becomes part of the
model name, as in the reference); the Prometheus page is an exact-path handler; everything else is
404 with a small HTML page. Every ``/v1/`` response is ``application/json``; errors are
``{"error": "<message>"}`` with the HTTP status of ``ToHTTPStatusCode``.

Request bodies larger than ``--rest_api_max_body_bytes`` (ours; the reference has no limit) are
refused with 413 and a JSON error.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import re
import time
import urllib.parse

import numpy as np
from aiohttp import web
from tensorflow_serving.apis import input_pb2

from serving import large_json, model_info, tensor_codec
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
                 limits: Limits | None = None, codec: concurrent.futures.Executor | None = None):
        self._manager = manager
        self._inference = inference
        self._metrics = metrics
        self._options = options
        self._limits = limits or Limits()
        self._codec = codec  # decodes and encodes large bodies off the event loop (None: on it)

    async def _off_loop(self, large: bool, function, *args):
        """``function(*args)``: on a codec thread when the data is large, so the loop keeps answering."""
        if not large or self._codec is None:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._codec, function, *args)

    def server(self) -> web.Server:
        """A low-level aiohttp server: every request reaches ``_handle``, which routes as TF Serving does."""
        max_body_bytes = self._options.max_body_bytes

        def make_request(message, payload, protocol, writer, task) -> web.BaseRequest:
            return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                                   client_max_size=max_body_bytes)

        return web.Server(self._handle, request_factory=make_request)

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        path = request.raw_path
        prometheus_path = self._options.prometheus_path
        if prometheus_path is not None and request.path == prometheus_path:
            return self._prometheus(path)
        if not _API_PATH.fullmatch(path):
            return web.Response(status=404, body=_NOT_FOUND_PAGE, content_type="text/html")
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
            body = await self._read_body(request)
            payload = await self._dispatch(route, body)
            status = Code.OK
        except Exception as e:
            error = e if isinstance(e, ServingError) else _unexpected(e, request)
            payload, status = tensor_codec.error_json(error.message), error.code
            response = web.Response(status=error.http_status, body=payload, content_type=_JSON, headers=headers)
        else:
            response = web.Response(status=200, body=payload, content_type=_JSON, headers=headers)
        api = verb if verb in ("predict", "classify", "regress") else ""
        label = model_name if self._manager.knows(model_name) else ""
        self._metrics.request(label, api, "REST", status, time.perf_counter() - start)
        return response

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestTooLarge(
                f"Request body is larger than the limit of {self._options.max_body_bytes} bytes "
                "(--rest_api_max_body_bytes)"
            ) from None

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
            parsed = await self._off_loop(large, _ParsedBody, body)
            try:
                signature_name = parsed.signature_name or DEFAULT_SIGNATURE
                with self._manager.acquire(route.model_name, route.version, route.label) as handle:
                    signature = handle.servable.signatures.get(signature_name)
                    if signature is None:
                        raise invalid_argument(
                            f'Serving signature name: "{signature_name}" not found in signature def')
                    if not signature.inputs:
                        raise invalid_argument(f"Failed to get input map for signature: {signature_name}")
                    inputs, request_format = await self._off_loop(large, parsed.predict_inputs,
                                                                  signature.input_dtypes)
                    outputs = await self._run_predict(handle, signature, inputs)
            finally:
                if parsed.doc is not None:
                    await self._off_loop(large, parsed.release)
        large_output = sum(array.nbytes for array in outputs.values()) > large_json.LARGE_BODY // 4
        with large_json.collector_paused() if large_output else contextlib.nullcontext():
            return await self._off_loop(large_output, tensor_codec.predict_response_json, outputs, request_format)

    async def _run_predict(self, handle, signature, inputs) -> dict:
        check_request_elements(sum(array.size for array in inputs.values()), self._limits)
        plan = self._inference.plan_predict(handle.servable, signature, inputs.keys())
        return await self._inference.predict(handle.servable, plan, inputs, self._deadline())

    async def _classify_or_regress(self, route: _Route, body: bytes) -> bytes:
        large = len(body) > large_json.LARGE_BODY
        with large_json.collector_paused() if large else contextlib.nullcontext():
            signature_name, model_input = await self._off_loop(large, _examples_input, body, route.verb)
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
    log.exception("Unexpected error serving %s %s", request.method, request.raw_path, exc_info=error)
    return from_exception(error)


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
