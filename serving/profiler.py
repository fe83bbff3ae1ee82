"""TensorFlow's ``ProfilerService`` on the model server's gRPC port (``--enable_profiler``, default true).

TF Serving registers ``tsl::profiler::CreateProfilerService()`` on its gRPC server (``server.cc``), so
``tf.profiler.experimental.client.trace('grpc://host:port', logdir, duration_ms)`` (and TensorBoard's
"capture profile") can trace the model server. The C++ service cannot be registered on a Python gRPC
server, and TensorFlow's own profiler server (``tf.profiler.experimental.server.start``) needs a port of
its own on every interface; so this is the same service, ``tensorflow.ProfilerService`` of
``tsl/profiler/protobuf/profiler_service.proto``, implemented on our grpc.aio server around TensorFlow's
in-process profiler session (``_pywrap_profiler.ProfilerSession``, what ``tf.profiler.experimental.start``
uses), following ``tsl/profiler/rpc/profiler_service_impl.cc``:

* ``Profile``: starts a profiler session with the request's ``ProfileOptions`` (host, device and Python
  tracer levels; ``start_timestamp_ns`` delays the start), lets it record for ``duration_ms`` or until a
  ``Terminate`` for the request's ``session_id`` (a cancelled call stops it and answers CANCELLED), and
  saves what it collected, an ``XSpace``, as ``<repository_root>/<session_id>/<host_name>.xplane.pb``
  (``:`` replaced by ``_``), where TensorBoard's profile plugin reads it (the client asks for
  ``<logdir>/plugins/profile``). ``empty_trace`` says whether it holds no event; the client then retries
  and finally reports that no trace event was collected. A profiler session already running in the
  process (another Profile, or ``tf.profiler.experimental.start``) makes it fail with INTERNAL, as the
  reference's does.
* ``Terminate``: ends the ``Profile`` with that ``session_id`` early (it then succeeds).
* ``Monitor``: UNIMPLEMENTED, as in the reference.

What is recorded is the server process's own TensorFlow activity: every op the SavedModel sessions run
(``SessionRun``, ``ExecutorState::Process``, each op by name), and one ``TfLiteSession::Run`` event per
TF Lite interpreter invocation. The session writes the XSpace through TensorFlow's exporter (into a
private directory) and the file is then moved to where the request asked; paths go through
``tf.io.gfile``, so any filesystem TensorFlow can write (e.g. ``gs://``) works as with the reference.

Like the reference's, the service writes where a caller asks: leave ``--bind_address`` on loopback or
pass ``--enable_profiler=false`` where untrusted clients can reach the gRPC port.

The request and response messages are built here from their field definitions (TensorFlow's pip package
has ``profiler_options_pb2`` and ``xplane_pb2`` but not the service's ``_pb2``), in a private descriptor
pool, so they never clash with another copy of the file.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import logging
import os
import shutil
import tempfile
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

log = logging.getLogger("serving")

SERVICE = "tensorflow.ProfilerService"
_PROTO_FILE = "tsl/profiler/protobuf/profiler_service.proto"
_OPTIONS_FILE = "tsl/profiler/protobuf/profiler_options.proto"


def _message_classes() -> dict[str, type]:
    """ToolRequestOptions, ProfileRequest, ProfileToolData, ProfileResponse, TerminateRequest/Response."""
    from tensorflow.tsl.profiler.protobuf import profiler_options_pb2

    pool = descriptor_pool.DescriptorPool()
    options_file = descriptor_pb2.FileDescriptorProto()
    profiler_options_pb2.DESCRIPTOR.CopyToProto(options_file)
    pool.Add(options_file)

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name=_PROTO_FILE, package="tensorflow", syntax="proto3",
                                               dependency=[_OPTIONS_FILE])

    def message(name: str, *fields: tuple, nested: tuple = ()) -> descriptor_pb2.DescriptorProto:
        m = proto.message_type.add(name=name)
        for entry in nested:
            m.nested_type.add().CopyFrom(entry)
        for field_name, number, kind, *rest in fields:
            label = rest[0] if rest else F.LABEL_OPTIONAL
            type_name = rest[1] if len(rest) > 1 else None
            field = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
        return m

    message("ToolRequestOptions", ("output_formats", 2, F.TYPE_STRING), ("save_to_repo", 3, F.TYPE_BOOL))
    tool_options_entry = descriptor_pb2.DescriptorProto(name="ToolOptionsEntry")
    tool_options_entry.options.map_entry = True
    tool_options_entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    tool_options_entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                                 type_name=".tensorflow.ToolRequestOptions")
    message("ProfileRequest",
            ("duration_ms", 1, F.TYPE_UINT64),
            ("max_events", 2, F.TYPE_UINT64),
            ("tools", 3, F.TYPE_STRING, F.LABEL_REPEATED),
            ("tool_options", 8, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".tensorflow.ProfileRequest.ToolOptionsEntry"),
            ("opts", 4, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".tensorflow.ProfileOptions"),
            ("repository_root", 5, F.TYPE_STRING),
            ("session_id", 6, F.TYPE_STRING),
            ("host_name", 7, F.TYPE_STRING),
            nested=(tool_options_entry,))
    message("ProfileToolData", ("name", 1, F.TYPE_STRING), ("data", 2, F.TYPE_BYTES))
    message("ProfileResponse",
            ("tool_data", 6, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".tensorflow.ProfileToolData"),
            ("empty_trace", 7, F.TYPE_BOOL))
    message("TerminateRequest", ("session_id", 1, F.TYPE_STRING))
    message("TerminateResponse")
    pool.Add(proto)
    factory = message_factory.MessageFactory(pool)
    get_class = getattr(message_factory, "GetMessageClass", None) or factory.GetPrototype  # protobuf >= 4.21 / 3.x
    return {m.name: get_class(pool.FindMessageTypeByName(f"tensorflow.{m.name}")) for m in proto.message_type}


MESSAGES = _message_classes()
ProfileRequest = MESSAGES["ProfileRequest"]
ProfileResponse = MESSAGES["ProfileResponse"]
TerminateRequest = MESSAGES["TerminateRequest"]
TerminateResponse = MESSAGES["TerminateResponse"]


class ProfilerService:
    """``ProfilerServiceImpl`` for grpc.aio (see the module docstring)."""

    def __init__(self):
        # Starting, collecting and saving a profile block: one thread of its own keeps that off the loop.
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="profiler")
        self._stop_signals: dict[str, asyncio.Event] = {}

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        def unary(method, request_type, response_type):
            return grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString)

        def raw(method):
            return grpc.unary_unary_rpc_method_handler(method)

        return [grpc.method_handlers_generic_handler(SERVICE, {
            "Profile": unary(self.Profile, ProfileRequest, ProfileResponse),
            "Terminate": unary(self.Terminate, TerminateRequest, TerminateResponse),
            "Monitor": raw(self.Monitor),
        })]

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    async def Profile(self, request, context: grpc.aio.ServicerContext):
        log.info("Profile request: session %s, %d ms, repository %s, host %s", request.session_id,
                 request.opts.duration_ms or request.duration_ms, request.repository_root, request.host_name)
        loop = asyncio.get_running_loop()
        stop = self._stop_signals.setdefault(request.session_id, asyncio.Event())
        session = None
        scratch = tempfile.mkdtemp(prefix="serving-profile-")
        try:
            delay_s = (request.opts.start_timestamp_ns - time.time_ns()) / 1e9
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            try:
                session = await loop.run_in_executor(self._worker, _start_session, scratch, request.opts)
            except Exception as e:
                await context.abort(grpc.StatusCode.INTERNAL, _status_message(e))
            log.info("Profiling session %s started", request.session_id)
            duration_s = (request.opts.duration_ms or request.duration_ms) / 1000
            try:
                await asyncio.wait_for(stop.wait(), timeout=duration_s)
            except asyncio.TimeoutError:
                pass
            try:
                empty = await loop.run_in_executor(self._worker, _collect, session, scratch, request)
            except Exception as e:
                await context.abort(grpc.StatusCode.INTERNAL, _status_message(e))
            finally:
                session = None
            log.info("Profile of session %s saved (%s)", request.session_id, "empty" if empty else "with events")
            return ProfileResponse(empty_trace=empty)
        finally:
            if session is not None:  # cancelled while recording: drop what was collected
                log.info("Profile of session %s cancelled", request.session_id)
                # The last reference goes on the worker thread: the session's destructor stops the tracers.
                held, session = [session], None
                await loop.run_in_executor(self._worker, held.clear)
            if self._stop_signals.get(request.session_id) is stop:
                del self._stop_signals[request.session_id]
            shutil.rmtree(scratch, ignore_errors=True)

    async def Terminate(self, request, context: grpc.aio.ServicerContext):
        self._stop_signals.setdefault(request.session_id, asyncio.Event()).set()
        return TerminateResponse()

    async def Monitor(self, request: bytes, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unimplemented.")


def _start_session(scratch: str, opts):
    from tensorflow.python.profiler.internal import _pywrap_profiler

    session = _pywrap_profiler.ProfilerSession()
    levels = {}
    if opts.version:  # proto3 zero defaults are not the profiler's defaults: an unversioned request gets those
        levels = {"host_tracer_level": opts.host_tracer_level, "device_tracer_level": opts.device_tracer_level,
                  "python_tracer_level": opts.python_tracer_level}
    session.start(scratch, levels)
    return session


def _collect(session, scratch: str, request) -> bool:
    """Saves the session's XSpace where the request asks; returns whether it holds no event."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    session.export_to_tb()  # <scratch>/plugins/profile/<run>/<hostname>.xplane.pb
    written = glob.glob(os.path.join(scratch, "plugins", "profile", "*", "*.xplane.pb"))
    if len(written) != 1:
        raise RuntimeError(f"the profiler wrote {len(written)} XSpace files, expected one")
    with open(written[0], "rb") as f:
        data = f.read()
    space = xplane_pb2.XSpace.FromString(data)
    run_dir = os.path.join(request.repository_root, request.session_id)
    tf.io.gfile.makedirs(run_dir)
    target = os.path.join(run_dir, f"{request.host_name}.xplane.pb".replace(":", "_"))
    with tf.io.gfile.GFile(target, "wb") as f:
        f.write(data)
    return _is_empty(space)


def _is_empty(space) -> bool:
    # tsl::profiler::IsEmpty
    return not any(line.events for plane in space.planes for line in plane.lines)


def _status_message(error: Exception) -> str:
    return getattr(error, "message", None) or str(error)
