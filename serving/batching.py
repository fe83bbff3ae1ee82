"""Server-side batching (``--enable_batching``), after TF Serving's BatchingSession + SharedBatchScheduler.

Concurrent session runs of the same servable with the same feeds and fetches are queued together;
a batch is formed when a batch thread is free and the open batch is full or its oldest task has
waited ``batch_timeout_micros``. The batch's inputs are concatenated along dimension 0, the model is
called once, and the outputs are split back by each task's size. The semantics and messages are
those of ``batching/batching_session.cc``, ``batching/batching_util.{h,cc}`` and TensorFlow's
``shared_batch_scheduler.h``:

* a task larger than ``max_batch_size`` fails with INVALID_ARGUMENT
  ``Task size N is larger than maximum input batch size M`` (with
  ``enable_large_batch_splitting`` it is split across batches of ``max_execution_batch_size``);
* a full queue (``max_enqueued_batches``) fails with UNAVAILABLE;
* inputs must have rank >= 1 and one common dimension-0 size;
* ``allowed_batch_sizes`` pads a batch up to the next allowed size with copies of its last row;
* ``pad_variable_length_inputs`` pads dimensions 1.. to the batch maximum with each tensor's first
  element.

One deliberate difference: without ``pad_variable_length_inputs`` the reference puts tasks whose
inputs differ beyond dimension 0 into one batch and then fails the whole batch
(FAILED_PRECONDITION). Here such tasks are queued separately, so one client's odd shape never fails
another client's request.

All scheduling state lives on the asyncio loop; only the merged model call runs on a worker thread.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from serving.config import BatchingOptions
from serving.errors import Code, ServingError, failed_precondition, from_exception, invalid_argument
from serving.monitoring import Metrics
from serving.servable import Servable


@dataclasses.dataclass(eq=False)
class _Task:
    feeds: list[np.ndarray]
    size: int
    deadline: float | None
    enqueued: float
    future: asyncio.Future


@dataclasses.dataclass(eq=False)
class _Batch:
    tasks: list[_Task] = dataclasses.field(default_factory=list)
    size: int = 0
    start: float = 0.0

    def add(self, task: _Task) -> None:
        if not self.tasks:
            self.start = task.enqueued
        self.tasks.append(task)
        self.size += task.size


class _Queue:
    """The batches of one (servable, feeds, fetches[, inner shapes]) combination; the last one is open."""

    def __init__(self, servable: Servable, feed_names: tuple[str, ...], fetch_names: tuple[str, ...]):
        self.servable = servable
        self.feed_names = feed_names
        self.fetch_names = fetch_names
        self.batches: collections.deque[_Batch] = collections.deque([_Batch()])

    @property
    def open(self) -> _Batch:
        return self.batches[-1]

    def is_empty(self) -> bool:
        return len(self.batches) == 1 and not self.open.tasks

    def schedulable_since(self, options: BatchingOptions, now: float) -> float | None:
        """Start time of the batch that may run now, or None."""
        if len(self.batches) > 1:
            return self.batches[0].start
        batch = self.open
        if batch.tasks and (batch.size >= options.execution_batch_limit
                            or now >= batch.start + options.batch_timeout_micros / 1e6):
            return batch.start
        return None

    def pop(self) -> _Batch:
        if len(self.batches) > 1:
            return self.batches.popleft()
        batch = self.batches.pop()
        self.batches.append(_Batch())
        return batch

    def start_new_batch(self) -> None:
        self.batches.append(_Batch())


class BatchScheduler:
    """A ``Runner`` that merges concurrent runs (see the module docstring)."""

    def __init__(self, options: BatchingOptions, executor: concurrent.futures.Executor, metrics: Metrics):
        self._options = options
        self._executor = executor
        self._metrics = metrics
        self._queues: dict[tuple, _Queue] = {}
        self._free_threads = options.num_batch_threads
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, servable: Servable, feed_names: Sequence[str], feed_values: Sequence[np.ndarray],
                  fetch_names: Sequence[str], deadline: float | None) -> list[np.ndarray]:
        size = _batch_size(feed_values)
        key = (id(servable), tuple(feed_names), tuple(fetch_names), self._shape_key(feed_values))
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(servable, tuple(feed_names), tuple(fetch_names))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        try:
            room = self._options.execution_batch_limit - queue.open.size
            if self._options.enable_large_batch_splitting and size > room:
                futures = self._schedule_split(queue, list(feed_values), size, deadline, now, loop)
            else:
                futures = [self._schedule(queue, _Task(list(feed_values), size, deadline, now, loop.create_future()))]
        finally:
            if queue.is_empty():
                del self._queues[key]
        self._dispatch()
        pieces = await asyncio.gather(*futures)
        if len(pieces) == 1:
            return pieces[0]
        return [np.concatenate([piece[i] for piece in pieces]) for i in range(len(fetch_names))]

    def _shape_key(self, feeds: Sequence[np.ndarray]) -> tuple:
        if self._options.pad_variable_length_inputs:
            return tuple((a.dtype.str, a.ndim) for a in feeds)
        return tuple((a.dtype.str, a.shape[1:]) for a in feeds)

    def _schedule(self, queue: _Queue, task: _Task) -> asyncio.Future:
        options = self._options
        if task.size > options.max_batch_size:
            raise invalid_argument(
                f"Task size {task.size} is larger than maximum input batch size {options.max_batch_size}"
            )
        if queue.open.size + task.size > options.max_batch_size:
            if len(queue.batches) >= options.max_enqueued_batches:
                raise ServingError(
                    Code.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full; currently "
                    f"{len(queue.batches)} batches enqueued and max_enqueued_batches is {options.max_enqueued_batches}",
                )
            queue.start_new_batch()
        queue.open.add(task)
        return task.future

    def _schedule_split(self, queue: _Queue, feeds: list[np.ndarray], size: int, deadline: float | None, now: float,
                        loop: asyncio.AbstractEventLoop) -> list[asyncio.Future]:
        options = self._options
        limit = options.execution_batch_limit
        if size > options.max_batch_size:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size {options.max_batch_size}")
        capacity = (options.max_enqueued_batches - len(queue.batches)) * limit + (limit - queue.open.size)
        if size > capacity:
            raise ServingError(
                Code.UNAVAILABLE,
                f"The batch scheduling queue to which this task was submitted is full; task size is {size} but "
                f"scheduling capacity is only {capacity} (num_enqueued_batches={len(queue.batches)}, "
                f"max_enqueued_batches={options.max_enqueued_batches}, open_batch_size={queue.open.size}, "
                f"max_execution_batch_size={limit})",
            )
        futures = []
        offset = 0
        while offset < size:
            room = limit - queue.open.size
            if room == 0:
                queue.start_new_batch()
                room = limit
            piece = min(room, size - offset)
            task = _Task([f[offset:offset + piece] for f in feeds], piece, deadline, now, loop.create_future())
            queue.open.add(task)
            futures.append(task.future)
            offset += piece
        return futures

    def _dispatch(self) -> None:
        """Hands schedulable batches to free batch threads, oldest first; arms a timer for the rest."""
        now = time.monotonic()
        while self._free_threads > 0:
            ready = [(since, key) for key, q in self._queues.items()
                     if (since := q.schedulable_since(self._options, now)) is not None]
            if not ready:
                break
            _, key = min(ready)
            queue = self._queues[key]
            batch = queue.pop()
            if queue.is_empty():
                del self._queues[key]
            self._free_threads -= 1
            asyncio.get_running_loop().create_task(self._process(queue, batch))
        self._arm_timer(now)

    def _arm_timer(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        timeout = self._options.batch_timeout_micros / 1e6
        waiting = [q.open.start + timeout for q in self._queues.values() if q.open.tasks and len(q.batches) == 1]
        if waiting and self._free_threads > 0:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, min(waiting) - now), self._dispatch)

    async def _process(self, queue: _Queue, batch: _Batch) -> None:
        tasks = [t for t in batch.tasks if not t.future.done()]  # clients that gave up are skipped
        try:
            if not tasks:
                return
            now = time.monotonic()
            if all(t.deadline is not None and t.deadline <= now for t in tasks):
                raise ServingError(Code.RESOURCE_EXHAUSTED, "Run() timeout exceeded while waiting in batching queue")
            deadline = None if any(t.deadline is None for t in tasks) else max(t.deadline for t in tasks)
            self._metrics.batch(sum(t.size for t in tasks), [now - t.enqueued for t in tasks])
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, _run_batch, queue, [t.feeds for t in tasks], [t.size for t in tasks], deadline,
                self._options,
            )
            for task, outputs in zip(tasks, results):
                if not task.future.done():
                    task.future.set_result(outputs)
        except Exception as e:
            error = from_exception(e)
            for task in tasks:
                if not task.future.done():
                    task.future.set_exception(error)
        finally:
            self._free_threads += 1
            self._dispatch()


def _batch_size(feeds: Sequence[np.ndarray]) -> int:
    # ComputeTensorBatchSize (batching_util.h)
    if not feeds:
        raise invalid_argument("Batching Run() must have at least one input tensor")
    sizes = set()
    for array in feeds:
        if array.ndim == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


def _run_batch(queue: _Queue, task_feeds: list[list[np.ndarray]], sizes: list[int], deadline: float | None,
               options: BatchingOptions) -> list[list[np.ndarray]]:
    """Merge, run once, split (runs on a worker thread)."""
    total = sum(sizes)
    padded_total = next((s for s in options.allowed_batch_sizes if s >= total), total)
    merged = []
    for i in range(len(queue.feed_names)):
        parts = [feeds[i] for feeds in task_feeds]
        if options.pad_variable_length_inputs:
            parts = _pad_to_common_shape(parts)
        if padded_total > total:
            parts.append(np.repeat(parts[-1][-1:], padded_total - total, axis=0))
        merged.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
    outputs = queue.servable.run(queue.feed_names, merged, queue.fetch_names, deadline)
    for output in outputs:
        if output.ndim == 0:
            raise failed_precondition("Batched output tensor has 0 dimensions")
        if output.shape[0] != padded_total:
            raise failed_precondition(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes of the "
                "input tensors"
            )
    if len(sizes) == 1 and padded_total == total:
        return [outputs]
    bounds = np.cumsum([0, *sizes])
    return [[output[bounds[t]:bounds[t + 1]] for output in outputs] for t in range(len(sizes))]


def _pad_to_common_shape(parts: list[np.ndarray]) -> list[np.ndarray]:
    # AddPadding / PadTensorOfSpecificType: pad value is the tensor's first element.
    if parts[0].ndim > 6:
        raise invalid_argument("Only tensors with rank from 1 to 6 can be padded.")
    target = [max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim)]
    padded = []
    for part in parts:
        widths = [(0, 0)] + [(0, t - s) for t, s in zip(target, part.shape[1:])]
        if all(w == (0, 0) for w in widths):
            padded.append(part)
            continue
        if part.size == 0:
            raise invalid_argument("Got empty tensor in batch of non-empty tensors.")
        padded.append(np.pad(part, widths, mode="constant", constant_values=part.flat[0]))
    return padded
