"""Admission control: how many requests each front end works on at once, and what happens to the rest.

``--rest_api_num_threads`` and ``--grpc_max_threads`` are the reference's thread counts (default 4 per
CPU): there, a request beyond them waits for a thread (REST) or is refused with RESOURCE_EXHAUSTED (gRPC's
thread quota). Here each front end has a ``Gate`` with that many slots for inference requests (predict,
classify, regress, multi-inference). Status, metadata and monitoring requests are never gated: they are
cheap, and they are how operators see an overloaded server.

* A request that finds a free slot runs. Otherwise it waits in a bounded FIFO queue (two per slot) for
  at most ``MAX_QUEUE_WAIT_S`` or its own deadline; a request that finds the queue full, or waits out
  its time, is refused at once: RESOURCE_EXHAUSTED on gRPC, 503 with ``Retry-After`` on REST.
* A large request (a body or message over ``large_json.LARGE_BODY``) also needs one of a quarter of the
  slots (at least one), so large requests never take all of them, and the memory large bodies hold at
  once is bounded by ``large slots x the largest body``. Waiting large requests have their own queue
  (one per large slot), and when a slot frees, small requests are served first.

The gate is used from the event loop only.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import time

from serving.errors import Code, ServingError

MAX_QUEUE_WAIT_S = 10.0
RETRY_AFTER_S = 1


def default_slots() -> int:
    """The reference's default for both thread flags: 4 per schedulable CPU."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return 4 * cpus


class Overloaded(ServingError):
    """Refused for want of capacity: RESOURCE_EXHAUSTED on gRPC, 503 with Retry-After on REST."""

    retry_after_s = RETRY_AFTER_S

    def __init__(self, message: str):
        super().__init__(Code.RESOURCE_EXHAUSTED, message)

    @property
    def http_status(self) -> int:
        return 503


@dataclasses.dataclass(frozen=True)
class GateOptions:
    slots: int
    queue: int
    large_slots: int
    large_queue: int

    @classmethod
    def for_slots(cls, slots: int) -> GateOptions:
        large = max(1, slots // 4)
        return cls(slots=slots, queue=2 * slots, large_slots=large, large_queue=large)


class Gate:
    def __init__(self, name: str, options: GateOptions):
        self.name = name
        self.options = options
        self.running = 0
        self.running_large = 0
        self.refused = 0
        self._waiting: dict[bool, collections.deque[asyncio.Future]] = {False: collections.deque(),
                                                                       True: collections.deque()}

    @contextlib.asynccontextmanager
    async def admit(self, large: bool, deadline: float | None = None):
        """Holds a slot for the ``async with`` block; raises Overloaded if none can be had in time."""
        await self._acquire(large, deadline)
        try:
            yield
        finally:
            self._release(large)

    def _can_run(self, large: bool) -> bool:
        options = self.options
        return self.running < options.slots and (not large or self.running_large < options.large_slots)

    def _start(self, large: bool) -> None:
        self.running += 1
        if large:
            self.running_large += 1

    async def _acquire(self, large: bool, deadline: float | None) -> None:
        queue = self._waiting[large]
        if not queue and self._can_run(large):
            self._start(large)
            return
        limit = self.options.large_queue if large else self.options.queue
        kind = "large requests" if large else "requests"
        if len(queue) >= limit:
            self.refused += 1
            raise Overloaded(f"The server is busy: {self.options.slots} {self.name} requests are running and "
                             f"{len(queue)} {kind} are waiting; retry later")
        wait_s = MAX_QUEUE_WAIT_S if deadline is None else min(MAX_QUEUE_WAIT_S, deadline - time.monotonic())
        future = asyncio.get_running_loop().create_future()
        queue.append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), max(0.0, wait_s))
        except asyncio.TimeoutError:
            if future.done() and not future.cancelled():  # the slot came as time ran out: take it
                return
            future.cancel()
            self.refused += 1
            raise Overloaded(f"The server is busy: no {self.name} slot came free within {max(0.0, wait_s):.3g} s; "
                             "retry later") from None
        except asyncio.CancelledError:  # the client went away while waiting
            if future.done() and not future.cancelled():
                self._release(large)
            else:
                future.cancel()
            raise
        finally:
            with contextlib.suppress(ValueError):
                queue.remove(future)

    def _release(self, large: bool) -> None:
        self.running -= 1
        if large:
            self.running_large -= 1
        for kind in (False, True):  # small requests first: they are quick and cannot starve large ones long
            queue = self._waiting[kind]
            while queue and self._can_run(kind):
                future = queue.popleft()
                if future.done():  # gave up already
                    continue
                self._start(kind)
                future.set_result(None)
