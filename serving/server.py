"""The model server process: one asyncio loop serving gRPC (grpc.aio) and REST (aiohttp).

Start-up follows spec §1.2: load every configured model first (``ModelManager.start`` waits until
each has a version AVAILABLE), and only then open the gRPC port and the REST port, so a client that
can connect can be served. TensorFlow work never runs on the loop: model runs go to a thread pool
(directly or through the batch scheduler), loads to the manager's loader thread. Neither does the
decoding or encoding of a large request or response (over ``large_json.LARGE_BODY``): it goes to
two codec threads, and works in pieces short enough that the loop still gets the GIL in between.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import threading

import grpc
from aiohttp import web

from serving import config as config_lib
from serving.admission import Gate, GateOptions, default_slots
from serving.batching import BatchScheduler
from serving.errors import StartupError
from serving.grpc_api import GrpcApi, ModelManagementPolicy
from serving.inference import DirectRunner, Inference
from serving.model_manager import ModelManager
from serving.monitoring import Metrics
from serving.options import ServerOptions
from serving.profiler import ProfilerService
from serving.request_logger import RequestLogger
from serving.rest_api import RestApi
from serving.warmup import Warmup

log = logging.getLogger("serving")

_INT32_MAX = 2**31 - 1


def quiet_tensorflow() -> None:
    """Keeps the server's stderr to its own lifecycle lines (TF's Python deprecation notices are noise)."""
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)


class Server:
    def __init__(self, options: ServerOptions):
        self._options = options
        self.metrics = Metrics()
        self._rest_gate = Gate("REST", GateOptions.for_slots(options.rest_slots or default_slots()))
        self._grpc_gate = Gate("gRPC", GateOptions.for_slots(options.grpc_slots or default_slots()))
        # Every admitted request can have its model run at once.
        runs = max(options.request_threads, self._rest_gate.options.slots + self._grpc_gate.options.slots)
        threads = runs + (options.batching.num_batch_threads if options.batching else 0)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model-run")
        # Decoding and encoding of large requests, off the event loop (serving.large_json).
        self._codec = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="codec")
        runner = (BatchScheduler(options.batching, self._executor, self.metrics) if options.batching
                  else DirectRunner(self._executor))
        self.manager = ModelManager(options.manager, self.metrics)
        # The model config's logging_config (serving.request_logger), applied with every config.
        self.request_logger = RequestLogger(self.metrics.registry, options.manager.saved_model_tags,
                                            options.request_log_file_bytes)
        self.manager.config_listeners.append(self.request_logger)
        self._inference = Inference(runner, self.metrics, options.enable_signature_method_name_check,
                                    self.request_logger)
        if options.enable_model_warmup:
            # Warmup requests run the same inference, but are neither logged nor counted as requests.
            self.manager.warmup = Warmup(Inference(runner, self.metrics, options.enable_signature_method_name_check))
        self._grpc: grpc.aio.Server | None = None
        self._rest: web.ServerRunner | None = None
        self._rest_api: RestApi | None = None
        self._config_poller: asyncio.Task | None = None
        self._profiler: ProfilerService | None = None

    async def start(self) -> None:
        """Loads the models, then opens the ports. Raises StartupError."""
        await self.manager.start(self._options.model_config)
        await self._start_grpc()
        if self._options.rest_api_port:
            await self._start_rest()
        if self._options.model_config_file and self._options.model_config_file_poll_wait_s > 0:
            self._config_poller = asyncio.get_running_loop().create_task(self._poll_config_file())

    async def stop(self, grace_s: float | None = None) -> bool:
        """Drains: stops listening, lets requests in flight finish for up to ``grace_s`` (default
        ``--drain_timeout_seconds``), cancels what is left, then unloads the models.

        Returns False, without unloading, if model runs are still executing after the drain (a run
        cannot be interrupted: the caller should exit without waiting for it).
        """
        grace_s = self._options.drain_timeout_s if grace_s is None else grace_s
        if self._config_poller is not None:
            self._config_poller.cancel()
        draining = []
        if self._grpc is not None:
            draining.append(asyncio.get_running_loop().create_task(self._grpc.stop(grace_s)))
        if self._rest is not None:
            draining.append(asyncio.get_running_loop().create_task(self._drain_rest(grace_s)))
        await asyncio.gather(*draining, return_exceptions=True)
        if self._profiler is not None:
            self._profiler.close()
        if self.manager.model_runs_in_progress():
            return False
        await self.manager.close()
        self.request_logger.close()  # what is queued is written
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._codec.shutdown(wait=True, cancel_futures=True)
        return True

    async def _drain_rest(self, grace_s: float) -> None:
        runner, api = self._rest, self._rest_api
        for site in list(runner.sites):
            await site.stop()  # no new connections
        runner.server.pre_shutdown()  # idle keep-alive connections close; busy ones after their response
        if api.in_flight:
            log.info("Waiting for %d REST request(s) in flight", api.in_flight)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(api.idle.wait(), grace_s)
        if api.in_flight:
            log.warning("Cancelling %d REST request(s) still in flight after %g s", api.in_flight, grace_s)
        await runner.cleanup()  # cancels what is left (within the runner's short shutdown_timeout)

    async def _start_grpc(self) -> None:
        options = self._options
        channel_options = [
            # The reference raises both limits to INT32_MAX (spec §1.2 step 4).
            ("grpc.max_receive_message_length", _INT32_MAX),
            ("grpc.max_send_message_length", _INT32_MAX),
            # Never share the port with another listener: a busy port must fail the start.
            ("grpc.so_reuseport", 0),
            *options.grpc_channel_arguments,
        ]
        # Inference calls read their request message only once the gate admits them (grpc_api): no
        # maximum_concurrent_rpcs is needed to bound what the transport buffers, and it would cost every call.
        server = grpc.aio.server(options=channel_options)
        api = GrpcApi(self.manager, self._inference, self.metrics, options.enable_serialization_as_tensor_content,
                      options.limits, self._codec, self._grpc_gate,
                      ModelManagementPolicy(options.allow_remote_model_management,
                                            bool(options.tls and options.tls.client_verify)))
        server.add_generic_rpc_handlers(api.handlers())
        if options.enable_profiler:
            self._profiler = ProfilerService()
            server.add_generic_rpc_handlers(self._profiler.handlers())
            log.info("Profiler service is enabled")
        # BuildServerCredentials: the same credentials on the TCP port and the UNIX socket.
        credentials = options.tls.grpc_credentials() if options.tls else None
        log.info("Using %s", "SSL credentials" if credentials else "InsecureServerCredentials")
        if options.grpc_port:
            address = f"{_host_for_url(options.bind_address)}:{options.grpc_port}"
            _bind(server, address, credentials)
            log.info("Running gRPC ModelServer at %s ...", address)
        if options.grpc_socket_path:
            _bind(server, f"unix:{options.grpc_socket_path}", credentials)
            log.info("Running gRPC ModelServer at UNIX socket %s ...", options.grpc_socket_path)
        await server.start()
        self._grpc = server

    async def _start_rest(self) -> None:
        options = self._options
        api = RestApi(self.manager, self._inference, self.metrics, options.rest, options.limits, self._codec,
                      self._rest_gate)
        runner = web.ServerRunner(api.server(), handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, options.bind_address, options.rest_api_port,
                           ssl_context=options.tls.rest_context() if options.tls else None)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise StartupError(
                f"Could not open the REST port {options.bind_address}:{options.rest_api_port}: {e.strerror}"
            ) from None
        self._rest, self._rest_api = runner, api
        log.info("Exporting HTTP%s/REST API at:%s:%d ...", "S" if options.tls else "", options.bind_address,
                 options.rest_api_port)
        if options.rest.prometheus_path:
            log.info("Prometheus metrics at http://%s:%d%s", options.bind_address, options.rest_api_port,
                     options.rest.prometheus_path)

    async def _poll_config_file(self) -> None:
        """``--model_config_file_poll_wait_seconds``: apply the file whenever it changes (spec §5.6)."""
        path = self._options.model_config_file
        while True:
            await asyncio.sleep(self._options.model_config_file_poll_wait_s)
            try:
                config = config_lib.read_model_server_config(path)
            except config_lib.ConfigFileError as e:
                log.error("Failed to read ModelServerConfig file: %s", e)
                continue
            if config == self.manager.config:
                continue
            try:
                await self.manager.reload(config)
            except Exception as e:
                log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", e)


def run(options: ServerOptions) -> int:
    """Runs the server until SIGINT/SIGTERM; returns the process exit status.

    The first signal drains (``Server.stop``): the ports stop accepting, requests in flight get up to
    ``--drain_timeout_seconds`` to finish, then the process exits. A second signal exits at once, and so
    does a drain that overruns its deadline by ``_EXIT_GRACE_S`` (e.g. a model run that does not end).
    """
    return asyncio.run(_serve(options))


_EXIT_GRACE_S = 10.0


def _exit_now(status: int, why: str) -> None:
    log.error("%s: exiting without waiting any longer", why)
    logging.shutdown()
    os._exit(status)


async def _serve(options: ServerOptions) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            _exit_now(128 + signum, f"Second signal ({signal.Signals(signum).name}) while draining")
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    server = Server(options)
    starting = loop.create_task(server.start())
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if starting.done() and starting.exception() is not None:
        log.error("Failed to start server. Error: %s", starting.exception())
        status = 255
    elif starting.done():
        await stopping
    else:
        starting.cancel()
    log.info("Shutting down: draining requests in flight (at most %g s)", options.drain_timeout_s)
    watchdog = threading.Timer(options.drain_timeout_s + _EXIT_GRACE_S, _exit_now,
                               (status or 1, f"Shutdown took more than {options.drain_timeout_s + _EXIT_GRACE_S:g} s"))
    watchdog.daemon = True
    watchdog.start()
    stopping.cancel()
    if not await server.stop():
        _exit_now(status, f"{server.manager.model_runs_in_progress()} model run(s) still executing after the drain")
    watchdog.cancel()
    log.info("Stopped")
    return status


def _bind(server: grpc.aio.Server, address: str, credentials=None) -> None:
    try:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
    except RuntimeError as e:
        raise StartupError(f"Could not open the gRPC port {address}: {e}") from None
    if port == 0:
        raise StartupError(f"Could not open the gRPC port {address}")


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
