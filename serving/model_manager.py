"""Model lifecycle: version discovery, version policy, availability-preserving swaps, labels, status.

Implements spec §5 (and the status/resolution rules of §2.3, §3.3, §3.4):

* Each model's base path is scanned every ``--file_system_poll_wait_seconds``; its direct children
  whose names are made of ASCII digits only and fit in an int64 (leading zeros allowed) are
  versions. Any other name is ignored; one that looks numeric but is not a version (``²``, ``٣``,
  ``-4``, ``+5``, 25 digits) is logged once. The version policy (latest N, all, specific) picks the
  aspired versions.
* A poll never stops the watcher: an error while scanning one model's base path (too many open
  files, an I/O error, a directory vanishing mid-scan) is logged and that model keeps its current
  versions until the next poll, which tries again; other models are not affected.
* Availability-preserving policy (``core/availability_preserving_policy.cc``): a new version is loaded
  and becomes AVAILABLE before superseded versions are unloaded; when no aspired version is serving
  (still loading, or failed) the highest serving version is kept. Unloading first removes the
  version from routing, then waits until the requests already running on it have finished, then
  closes its session, so a swap never fails a request.
* A version directory is loaded only once it looks complete: it must contain ``saved_model.pb``
  (or ``.pbtxt``; with ``--prefer_tflite_model`` also ``model.tflite``, see ``tflite_servable``) and
  its files (names, sizes, modification times) must be unchanged between two consecutive scans.
  Until then, and after a failed load, the version is never served and never disturbs the versions
  that are; its status is END with a non-OK code saying why (NOT_FOUND with the
  reference's message when ``saved_model.pb`` is missing, UNAVAILABLE while files are changing,
  the load error otherwise). A failed load is retried ``--max_num_load_retries`` times
  ``--load_retry_interval_micros`` apart (status LOADING meanwhile), and afresh whenever the
  directory's files change.
* Status history is never forgotten (``ServableStateMonitor``), so unloaded, failed and removed
  versions keep reporting END.
* Labels come from the config; a label must point at an AVAILABLE version when the config is
  applied unless ``--allow_version_labels_for_unavailable_models`` (spec §5.7).

Deliberate differences from the reference, for a local tool:

* A base path that does not exist at all is an error (start-up fails, a reload is refused with
  NOT_FOUND) instead of being polled forever; a base path that exists but has no version yet is
  waited for, as the reference does.
* At start-up, scans repeat every 0.25 s until every model is ready (so a complete version loads
  within a fraction of a second rather than one poll interval); afterwards scans follow
  ``--file_system_poll_wait_seconds`` (<= 0: none).
* A missing base path during a later poll affects only that model, not every model's poll.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import enum
import logging
import os
import time
from collections.abc import Iterable

from tensorflow_serving.config import model_server_config_pb2

from serving import config as config_lib
from serving import servable as servable_lib
from serving import tflite_servable
from serving.errors import Code, ServingError, StartupError, from_exception, invalid_argument, not_found
from serving.monitoring import Metrics
from serving.options import ManagerOptions
from serving.servable import Servable

log = logging.getLogger("serving")

STARTUP_SCAN_INTERVAL_S = 0.25


class State(enum.IntEnum):
    """``ModelVersionStatus.State`` (apis/get_model_status.proto)."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    state: State
    code: Code = Code.OK
    message: str = ""


@dataclasses.dataclass(frozen=True)
class _DirState:
    """What one scan saw in a version directory."""

    has_saved_model: bool
    fingerprint: tuple


class _Version:
    """One version directory the manager tracks (keyed by path, so a base path change is a swap too)."""

    def __init__(self, number: int, path: str):
        self.number = number
        self.path = path
        self.state = State.START
        self.servable: Servable | None = None
        self.in_flight = 0
        self.drained = asyncio.Event()
        self.seen: _DirState | None = None  # the latest scan's observation
        self.stable = False  # unchanged between the last two scans, with saved_model.pb in both
        self.failed_fingerprint: tuple | None = None  # files whose load failed for good
        self.attempts = 0
        self.retry_at = 0.0


class _Model:
    def __init__(self, entry: config_lib.ModelEntry):
        self._entry = entry
        self.versions: dict[str, _Version] = {}  # by path
        self._listing: dict[int, tuple[str, _DirState]] = {}  # last scan: number -> (path, dir state)
        self.listed = False
        self.missing_base_path_logged = False
        self.scan_error: str | None = None  # the last poll's error, logged once until it changes
        self.ignored_logged: set[str] = set()  # numeric-looking names that are not versions, logged once
        self.removed = False
        self._serving: list[_Version] | None = None

    @property
    def entry(self) -> config_lib.ModelEntry:
        return self._entry

    @entry.setter
    def entry(self, entry: config_lib.ModelEntry) -> None:
        self._entry = entry
        self._serving = None

    @property
    def listing(self) -> dict[int, tuple[str, _DirState]]:
        return self._listing

    @listing.setter
    def listing(self, listing: dict[int, tuple[str, _DirState]]) -> None:
        self._listing = listing
        self._serving = None

    @property
    def aspired_paths(self) -> set[str]:
        chosen = self._entry.policy.select(list(self._listing))
        return {self._listing[n][0] for n in chosen}

    def serving(self) -> list[_Version]:
        """AVAILABLE versions, highest first; aspired ones win over stale ones of equal number.

        Computed once per change (every request asks), see ``changed``.
        """
        if self._serving is None:
            aspired = self.aspired_paths
            available = [v for v in self.versions.values() if v.state == State.AVAILABLE]
            self._serving = sorted(available, key=lambda v: (v.number, v.path in aspired), reverse=True)
        return self._serving

    def changed(self) -> None:
        self._serving = None


class ServableHandle:
    """A servable held for one request; release it (or use ``with``) when the request is done."""

    def __init__(self, version: _Version):
        self._version = version
        self.servable: Servable = version.servable
        version.in_flight += 1

    @property
    def version(self) -> int:
        return self._version.number

    def release(self) -> None:
        version = self._version
        if version is None:
            return
        self._version = None
        version.in_flight -= 1
        if version.in_flight == 0:
            version.drained.set()

    def __enter__(self) -> ServableHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ModelManager:
    def __init__(self, options: ManagerOptions, metrics: Metrics):
        self._options = options
        self._metrics = metrics
        # TF Serving loads on one manager thread by default (--num_load_threads=0); so does this.
        self._loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._scanner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-scan")
        self._models: dict[str, _Model] = {}
        self._retired: list[_Model] = []  # removed from the config, still unloading
        self._labels: dict[str, dict[str, int]] = {}
        self._status: dict[str, dict[int, VersionStatus]] = {}
        self._config: model_server_config_pb2.ModelServerConfig | None = None
        self._changed = asyncio.Event()
        self._reloading = asyncio.Lock()
        self._poller: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._starting = True
        # What makes a version directory loadable (see the module docstring).
        self._model_files = servable_lib.SAVED_MODEL_FILES + (
            (tflite_servable.TFLITE_MODEL_FILE,) if options.tflite else ())
        # Set by the server: what else a config configures (request logging: check() before anything changes,
        # apply() once the config is in force), and the warmup a loaded version runs before it is AVAILABLE.
        self.config_listeners: list = []
        self.warmup = None  # async (servable) -> None; an exception fails the load

    # ------------------------------------------------------------------------------ public API

    @property
    def config(self) -> model_server_config_pb2.ModelServerConfig | None:
        return self._config

    def knows(self, name: str) -> bool:
        return name in self._status or name in self._models

    async def start(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Applies the first config and waits until every model has a version AVAILABLE."""
        try:
            names = await self._apply(config)
        except ServingError as e:
            raise StartupError(e.message) from None
        self._poller = asyncio.get_running_loop().create_task(self._poll_forever())
        try:
            await self._wait_available(names)
        except ServingError as e:
            raise StartupError(e.message) from None
        self._starting = False

    async def reload(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """``HandleReloadConfigRequest``: the new list replaces the old; waits for added models.

        Reloads are serialized (``ServerCore::ReloadConfig`` holds its config mutex throughout).
        """
        async with self._reloading:
            if self._config is not None and config == self._config:
                return
            names = await self._apply(config)
            await self._wait_available(names)

    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> ServableHandle:
        """Resolves a request's model spec to a serving version (``ServerCore::GetServableHandle``)."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        if label is not None:
            labels = self._labels.get(name, {})
            if label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labels[label]
        model = self._models.get(name)
        serving = model.serving() if model else []
        if version is None:
            if not serving:
                raise not_found(f"Servable not found for request: Latest({name})")
            return ServableHandle(serving[0])
        for candidate in serving:
            if candidate.number == version:
                return ServableHandle(candidate)
        raise not_found(f"Servable not found for request: Specific({name}, {version})")

    def status(self, name: str, version: int | None = None) -> list[tuple[int, VersionStatus]]:
        """``GetModelStatusImpl``: every version ever tracked, highest first."""
        versions = self._status.get(name)
        if not versions:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None:
            if version not in versions:
                raise not_found(f"Could not find version {version} of model {name}")
            return [(version, versions[version])]
        return sorted(versions.items(), reverse=True)

    def model_runs_in_progress(self) -> int:
        """Model runs still executing on worker threads (including those whose clients have gone)."""
        return sum(getattr(version.servable, "running", 0) for model in [*self._models.values(), *self._retired]
                   for version in model.versions.values() if version.servable is not None)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for model in [*self._models.values(), *self._retired]:
            for version in model.versions.values():
                if version.servable is not None:
                    version.servable.close()
                    version.servable = None
        self._loader.shutdown(wait=True, cancel_futures=True)
        self._scanner.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------------------ config

    async def _apply(self, config: model_server_config_pb2.ModelServerConfig) -> list[str]:
        """Validates and applies a config; returns the names of newly added models."""
        entries = config_lib.model_entries(config, previous=self._config)
        for entry in entries:
            if not os.path.isdir(entry.base_path):
                raise ServingError(
                    Code.NOT_FOUND,
                    f"Could not find base path {entry.base_path} for servable {entry.name}"
                    + ("" if not os.path.exists(entry.base_path) else " (it is not a directory)"),
                )
        for listener in self.config_listeners:
            listener.check(config)
        self._labels = self._checked_labels(entries)
        added = []
        for entry in entries:
            model = self._models.get(entry.name)
            if model is None:
                self._models[entry.name] = _Model(entry)
                self._status.setdefault(entry.name, {})
                added.append(entry.name)
                log.info("Adding model %s (base path %s, version policy %s)", entry.name, entry.base_path,
                         entry.policy.describe())
            elif model.entry != entry:
                if model.entry.base_path != entry.base_path:
                    model.listed = False
                model.entry = entry
                log.info("Updating model %s (base path %s, version policy %s)", entry.name, entry.base_path,
                         entry.policy.describe())
        wanted = {entry.name for entry in entries}
        for name in [n for n in self._models if n not in wanted]:
            model = self._models.pop(name)
            model.removed = True
            model.listing = {}
            self._retired.append(model)
            log.info("Removing model %s: unloading its versions", name)
            self._reconcile(model)
        self._config = config
        for listener in self.config_listeners:
            listener.apply(config)
        await self._scan_all()
        return added

    def _checked_labels(self, entries: Iterable[config_lib.ModelEntry]) -> dict[str, dict[str, int]]:
        # ServerCore::UpdateModelVersionLabelMap
        labels: dict[str, dict[str, int]] = {}
        for entry in entries:
            for label, version in entry.labels.items():
                existing = self._labels.get(entry.name, {}).get(label)
                allowed = self._options.allow_version_labels_for_unavailable_models and existing in (None, version)
                status = self._status.get(entry.name, {}).get(version)
                if not allowed and (status is None or status.state != State.AVAILABLE):
                    raise ServingError(
                        Code.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {entry.name}, which is not "
                        "currently available for inference",
                    )
                labels.setdefault(entry.name, {})[label] = version
        return labels

    async def _wait_available(self, names: list[str]) -> None:
        """Blocks until each named model serves a version; fails if one cannot (reference message)."""
        while True:
            failures = []
            pending = False
            for name in names:
                model = self._models.get(name)
                if model is None or model.serving():
                    continue
                failed = self._failed_versions(model)
                if failed:
                    failures.extend(failed)
                else:
                    pending = True
            if failures:
                details = "".join(
                    f"{{name: {name} version: {v.number}}} due to error: {self._status[name][v.number].message}, "
                    for name, v in failures
                )
                raise ServingError(Code.UNKNOWN, f"{len(failures)} servable(s) did not become available: {{{details}}}")
            if not pending:
                return
            self._changed.clear()
            await self._changed.wait()

    def _failed_versions(self, model: _Model) -> list[tuple[str, _Version]]:
        """The aspired versions that failed to load for good, if none is still in progress."""
        aspired = [model.versions[p] for p in model.aspired_paths if p in model.versions]
        if not aspired or len(aspired) < len(model.aspired_paths):
            return []
        if all(v.failed_fingerprint is not None and v.state == State.END for v in aspired):
            return [(model.entry.name, v) for v in aspired]
        return []

    # ------------------------------------------------------------------------------ scanning

    async def _poll_forever(self) -> None:
        while True:
            interval = self._options.file_system_poll_wait_s
            if self._starting:
                interval = STARTUP_SCAN_INTERVAL_S if interval <= 0 else min(interval, STARTUP_SCAN_INTERVAL_S)
            elif interval <= 0:
                return
            await asyncio.sleep(interval)
            try:
                await self._scan_all()
            except Exception:  # never let one bad poll end the watcher (the next poll tries again)
                log.exception("Polling the model base paths failed; trying again at the next poll")

    async def _scan_all(self) -> None:
        loop = asyncio.get_running_loop()
        for model in list(self._models.values()):
            busy = {v.path for v in model.versions.values() if v.servable is not None or v.state == State.UNLOADING
                    or (v.state == State.LOADING and not v.retry_at)}
            try:
                listing, ignored = await loop.run_in_executor(self._scanner, _scan_base_path, model.entry.base_path,
                                                              busy, self._model_files)
            except Exception as e:  # EMFILE, EIO, a directory vanishing mid-scan, ...
                error = f"{type(e).__name__}: {e}"
                if error != model.scan_error:
                    log.error("Failed to scan base path %s for servable %s: %s; keeping its current versions and "
                              "trying again at the next poll", model.entry.base_path, model.entry.name, error)
                model.scan_error = error
                continue
            if model.scan_error is not None:
                log.info("Scanning base path %s for servable %s works again", model.entry.base_path,
                         model.entry.name)
                model.scan_error = None
            if model.removed:
                continue
            for name in sorted(ignored - model.ignored_logged):
                log.warning("Ignoring %s in base path %s of servable %s: a version directory's name must be a "
                            "number of ASCII digits 0-9 no larger than 2^63-1", ascii(name), model.entry.base_path,
                            model.entry.name)
            model.ignored_logged |= ignored
            if listing is None:
                if not model.missing_base_path_logged:
                    log.error("Could not find base path %s for servable %s; keeping its current versions",
                              model.entry.base_path, model.entry.name)
                    model.missing_base_path_logged = True
                continue
            model.missing_base_path_logged = False
            if not listing and (not model.listed or model.listing):
                log.info("No versions of servable %s found under base path %s; waiting for one",
                         model.entry.name, model.entry.base_path)
            model.listing = listing
            model.listed = True
            self._reconcile(model)

    # ------------------------------------------------------------------------------ decisions

    def _reconcile(self, model: _Model) -> None:
        """Starts the loads and unloads the current listing calls for (all state changes happen here)."""
        aspired = model.aspired_paths
        by_path = {path: (number, state) for number, (path, state) in model.listing.items()}
        now = time.monotonic()
        for path in sorted(aspired, key=lambda p: by_path[p][0], reverse=True):
            number, dir_state = by_path[path]
            version = model.versions.get(path)
            if version is None:
                version = model.versions[path] = _Version(number, path)
                self._set_status(model, version, State.START)
            if version.state in (State.START, State.END) or (version.state == State.LOADING and version.retry_at):
                self._consider_loading(model, version, dir_state, now)
        for path, version in list(model.versions.items()):
            if path not in aspired and version.state in (State.START, State.END):
                if version.state == State.START:
                    self._set_status(model, version, State.END)
                del model.versions[path]
        self._unload_superseded(model, aspired)
        if model.removed and not model.versions and model in self._retired:
            self._retired.remove(model)

    def _consider_loading(self, model: _Model, version: _Version, dir_state: _DirState | None, now: float) -> None:
        if dir_state is None:  # loaded or being loaded: scans skip it
            return
        changed = False
        if dir_state is not version.seen:  # a new scan's observation
            previous, version.seen = version.seen, dir_state
            changed = previous is not None and previous.fingerprint != dir_state.fingerprint
            version.stable = (previous is not None and not changed and previous.has_saved_model
                              and dir_state.has_saved_model)
            if changed:
                version.failed_fingerprint = None
        if version.state == State.LOADING:
            # Waiting to retry a failed load: new files mean a fresh attempt, else retry on time.
            if changed:
                version.retry_at = 0.0
                version.attempts = 0
                self._not_served(model, version, Code.UNAVAILABLE, _changing_message(version.path))
            elif now >= version.retry_at:
                self._start_load(model, version)
            return
        if not dir_state.has_saved_model:
            self._not_served(model, version, *_missing_saved_model(version.path))
        elif changed:
            self._not_served(model, version, Code.UNAVAILABLE, _changing_message(version.path))
        elif version.stable and dir_state.fingerprint != version.failed_fingerprint:
            version.attempts = 0
            self._start_load(model, version)
        # Otherwise: first sighting (wait one scan to see whether the files still change), or this
        # exact content already failed to load (a change to the files triggers a new attempt).

    def _not_served(self, model: _Model, version: _Version, code: Code, message: str) -> None:
        if self._set_status(model, version, State.END, code, message):
            log.warning("Servable version {name: %s version: %d} is not served: %s", model.entry.name,
                        version.number, message)

    def _unload_superseded(self, model: _Model, aspired: set[str]) -> None:
        # AvailabilityPreservingPolicy: unload un-aspired serving versions, but while no aspired
        # version serves, keep the highest one.
        unaspired = sorted(
            (v for p, v in model.versions.items() if p not in aspired and v.state == State.AVAILABLE),
            key=lambda v: v.number,
        )
        aspired_serving = any(
            model.versions[p].state == State.AVAILABLE for p in aspired if p in model.versions
        )
        if aspired and not aspired_serving and not model.removed:
            unaspired = unaspired[:-1]
        for version in unaspired:
            self._start_unload(model, version)

    # ------------------------------------------------------------------------------ transitions

    def _start_load(self, model: _Model, version: _Version) -> None:
        version.retry_at = 0.0
        self._set_status(model, version, State.LOADING)
        self._spawn(self._load(model, version))

    async def _load(self, model: _Model, version: _Version) -> None:
        name = model.entry.name
        fingerprint = version.seen.fingerprint if version.seen else None
        log.info("Loading servable version {name: %s version: %d} from %s", name, version.number, version.path)
        start = time.perf_counter()
        try:
            servable = await asyncio.get_running_loop().run_in_executor(
                self._loader, self._load_servable, name, version.number, version.path
            )
            if self.warmup is not None:
                try:
                    await self.warmup(servable)
                except BaseException:
                    servable.close()
                    raise
        except Exception as e:
            error = from_exception(e)
            self._metrics.model_load(version.path, False, time.perf_counter() - start)
            self._load_failed(model, version, error, fingerprint)
            return
        seconds = time.perf_counter() - start
        self._metrics.model_load(version.path, True, seconds)
        version.servable = servable
        version.attempts = 0
        self._set_status(model, version, State.AVAILABLE)
        log.info("Servable version {name: %s version: %d} is AVAILABLE (loaded in %.2f s)", name, version.number,
                 seconds)
        self._reconcile(model)

    def _load_servable(self, name: str, number: int, path: str) -> Servable | tflite_servable.TfLiteServable:
        """SavedModelBundleFactory: ``model.tflite`` if TF Lite is preferred and present, else the SavedModel."""
        tflite = self._options.tflite
        if tflite is not None and tflite_servable.has_model(path):
            return tflite_servable.load(name, number, path, tflite.num_pools, tflite.num_interpreters_per_pool)
        return servable_lib.load(name, number, path, self._options.saved_model_tags)

    def _load_failed(self, model: _Model, version: _Version, error: ServingError, fingerprint: tuple | None) -> None:
        name = model.entry.name
        version.attempts += 1
        retries = self._options.max_num_load_retries
        if version.attempts <= retries and not model.removed:
            interval = self._options.load_retry_interval_s
            log.warning("Failed to load servable version {name: %s version: %d}: %s; retrying in %g s (retry %d of %d)",
                        name, version.number, error, interval, version.attempts, retries)
            version.retry_at = time.monotonic() + interval
            self._spawn(self._retry_later(model, interval))
            return
        log.error("Failed to load servable version {name: %s version: %d}: %s", name, version.number, error)
        version.failed_fingerprint = fingerprint
        self._set_status(model, version, State.END, error.code, error.message)
        self._reconcile(model)

    async def _retry_later(self, model: _Model, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._reconcile(model)

    def _start_unload(self, model: _Model, version: _Version) -> None:
        self._set_status(model, version, State.UNLOADING)
        self._spawn(self._unload(model, version))

    async def _unload(self, model: _Model, version: _Version) -> None:
        # Routing no longer offers this version (it is UNLOADING); let running requests finish.
        if version.in_flight:
            version.drained.clear()
            await version.drained.wait()
        servable, version.servable = version.servable, None
        await asyncio.get_running_loop().run_in_executor(self._loader, servable.close)
        model.versions.pop(version.path, None)
        self._set_status(model, version, State.END)
        log.info("Unloaded servable version {name: %s version: %d}", model.entry.name, version.number)
        self._reconcile(model)

    # ------------------------------------------------------------------------------ plumbing

    def _set_status(self, model: _Model, version: _Version, state: State, code: Code = Code.OK,
                    message: str = "") -> bool:
        """Records a transition in the never-forgetting status history; returns whether it changed."""
        status = VersionStatus(state, code, message)
        history = self._status.setdefault(model.entry.name, {})
        changed = history.get(version.number) != status or version.state != state
        version.state = state
        history[version.number] = status
        model.changed()
        if changed:
            self._changed.set()
        return changed

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Model lifecycle task failed: %r", task.exception())


def _missing_saved_model(path: str) -> tuple[Code, str]:
    error = servable_lib.missing_saved_model_error(path)
    return error.code, error.message


def _changing_message(path: str) -> str:
    return (f"Version directory {path} is still being written (its files changed since the previous scan); "
            "it will be loaded once they stop changing")


def _scan_base_path(base_path: str, skip: set[str], model_files: tuple[str, ...]
                    ) -> tuple[dict[int, tuple[str, _DirState | None]] | None, set[str]]:
    """Numeric version directories under ``base_path`` (None if the base path is missing), and the names
    that look numeric but are not versions.

    Directories in ``skip`` (loaded or loading) are not fingerprinted: the reference ignores in-place
    changes to a loaded version (spec §5.1). Other OS errors propagate (the caller retries next poll).
    """
    try:
        entries = list(os.scandir(base_path))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None, set()
    versions: dict[int, tuple[str, _DirState | None]] = {}
    ignored: set[str] = set()
    for entry in sorted(entries, key=lambda e: e.name):
        number = version_number(entry.name)
        if number is None:
            if _looks_numeric(entry.name):
                ignored.add(entry.name)
            continue
        try:
            if not entry.is_dir():
                continue
        except OSError:  # vanished or unreadable since the listing: not a version this time
            continue
        if number in versions:
            log.warning("Ignoring %s: version %d of %s is already provided by %s", entry.path, number, base_path,
                        versions[number][0])
            continue
        versions[number] = (entry.path, None if entry.path in skip else _dir_state(entry.path, model_files))
    return versions, ignored


_INT64_MAX = 2**63 - 1
_ASCII_DIGITS = frozenset("0123456789")


def version_number(name: str) -> int | None:
    """The version a base-path child's name stands for, or None.

    Only ASCII digits, as TF Serving's file-system source parses names, and within int64 (versions are
    int64 everywhere in the APIs). Python's ``str.isdigit``/``int`` would also take ``²`` or ``٣``.
    Leading zeros are allowed (``00000123`` is 123). A sign or whitespace is refused (see the README).
    """
    if not name or not _ASCII_DIGITS.issuperset(name):
        return None
    number = int(name)
    return number if number <= _INT64_MAX else None


def _looks_numeric(name: str) -> bool:
    stripped = name.strip().lstrip("+-")
    return bool(stripped) and (stripped.isdigit() or stripped.isdecimal() or stripped.isnumeric())


def _dir_state(path: str, model_files: tuple[str, ...]) -> _DirState:
    files = []
    for root, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:  # vanished between listing and stat: still being written
                files.append((os.path.relpath(full, path), -1, -1))
                continue
            files.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    has_saved_model = any(os.path.isfile(os.path.join(path, f)) for f in model_files)
    return _DirState(has_saved_model, tuple(sorted(files)))
