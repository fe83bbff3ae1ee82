"""Admission control: how many requests each front end works on at once, and what happens to the rest.

``--rest_api_num_threads`` and ``--grpc_max_threads`` are the reference's thread counts (default 4 per
CPU): there, a request beyond them waits for a thread (REST) or is refused with RESOURCE_EXHAUSTED (gRPC's
thread quota). Here each front end has a ``Gate`` with that many slots for inference requests (predict,
classify, regress, multi-inference). Status, metadata and monitoring requests are never gated: they are
cheap, and they are how operators see an overloaded server.

* A request that finds a free slot runs. Otherwise it waits in a bounded FIFO queue (``QUEUE_PER_SLOT``
  per slot) for at most ``MAX_QUEUE_WAIT_S`` or its own deadline; a request that finds the queue full, or
  waits out its time, is refused at once: RESOURCE_EXHAUSTED on gRPC, 503 with ``Retry-After`` on REST.
  A waiting request has not had its body read yet (the REST front end reads bodies of up to 64 KiB
  first; the gRPC front end reads the request message once admitted), so waiting costs no memory.
* A large request (a body or message over ``large_json.LARGE_BODY``) also needs one of the large tokens,
  a quarter of the slots (at least one), with a queue as long, holding its slot meanwhile: large
  requests take at most half the slots, and the memory their bodies take at once is bounded by
  ``large tokens x the largest body`` (plus the small bodies of the other slots).

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
QUEUE_PER_SLOT = 16
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
        return cls(slots=slots, queue=QUEUE_PER_SLOT * slots, large_slots=large, large_queue=large)


class _Limit:
    """``capacity`` holders at once and a FIFO queue of at most ``queue`` waiting (loop-only)."""

    def __init__(self, capacity: int, queue: int, what: str):
        self.capacity = capacity
        self.queue_limit = queue
        self.what = what
        self.held = 0
        self.refused = 0
        self._waiting: collections.deque[asyncio.Future] = collections.deque()

    def hold(self, deadline: float | None) -> _Hold:
        return _Hold(self, deadline)

    async def acquire(self, deadline: float | None) -> None:
        if not self._waiting and self.held < self.capacity:  # the common case: no future, no waiting
            self.held += 1
            return
        if len(self._waiting) >= self.queue_limit:
            self.refused += 1
            raise Overloaded(f"The server is busy: {self.held} {self.what} are running and {len(self._waiting)} "
                             "waiting; retry later")
        wait_s = MAX_QUEUE_WAIT_S if deadline is None else min(MAX_QUEUE_WAIT_S, deadline - time.monotonic())
        wait_s = max(0.0, wait_s)
        # A plain future and a timer, not asyncio.wait_for(shield(...)): at 32 clients on 8 slots most requests
        # wait here, and wait_for's task and shield's second future cost the loop more than the request itself.
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append(future)
        timer = loop.call_later(wait_s, _time_out, future)
        try:
            await future
        except _TimedOut:
            with contextlib.suppress(ValueError):  # release() may have dropped it already
                self._waiting.remove(future)
            self.refused += 1
            raise Overloaded(f"The server is busy: none of its {self.capacity} {self.what} came free within "
                             f"{wait_s:.3g} s; retry later") from None
        except asyncio.CancelledError:  # the client went away while waiting
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release()  # handed over just before: give it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(future)
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        self.held -= 1
        while self._waiting and self.held < self.capacity:
            future = self._waiting.popleft()
            if not future.done():  # else: gave up already
                self.held += 1  # handed over: the waiter holds it now
                future.set_result(None)


class _TimedOut(Exception):
    """A waiter's time ran out before a slot was handed to it."""


def _time_out(future: asyncio.Future) -> None:
    if not future.done():  # else: handed over first, which wins
        future.set_exception(_TimedOut())


class _Hold:
    __slots__ = ("_limit", "_deadline")

    def __init__(self, limit: _Limit, deadline: float | None):
        self._limit, self._deadline = limit, deadline

    async def __aenter__(self) -> None:
        limit = self._limit
        if not limit._waiting and limit.held < limit.capacity:  # the common case, without another coroutine
            limit.held += 1
            return
        await limit.acquire(self._deadline)

    async def __aexit__(self, *exc) -> None:
        self._limit.release()


class Gate:
    """A front end's slots and large tokens (see the module docstring)."""

    def __init__(self, name: str, options: GateOptions):
        self.name = name
        self.options = options
        self.slots = _Limit(options.slots, options.queue, f"{name} inference requests")
        self.large = _Limit(options.large_slots, options.large_queue, f"large {name} requests")

    def admit(self, deadline: float | None = None) -> _Hold:
        """``async with gate.admit(deadline)``: a slot for the block; raises Overloaded if none can be had."""
        return self.slots.hold(deadline)

    def admit_large(self, deadline: float | None = None) -> _Hold:
        """A large token, taken while holding a slot."""
        return self.large.hold(deadline)

    @property
    def refused(self) -> int:
        return self.slots.refused + self.large.refused
