"""How a local run stops on SIGTERM, SIGHUP and SIGINT (Ctrl-C): by unwinding, so that every `finally` on the way out
runs -- the training cluster's (its processes are killed), the model server's (stopped), the run lock's (released)
-- and the caller can still read and print what happened.

`with stop_on_signals() as stop:` -- while the block runs, the first of these signals raises RunInterrupted (a
KeyboardInterrupt, which TFX's launcher does not catch, as it does not catch Ctrl-C) in the main thread, where Python
runs signal handlers. Later ones are counted and otherwise ignored, so that they cannot cut the clean-up short. A
process that got a signal is expected to exit: if it has not `grace_s` seconds after the first signal (the main
thread may be inside one long TensorFlow op, where no Python handler runs, or the interpreter may wait for a
thread at exit), a watchdog thread calls `on_timeout` and ends the process with os._exit(128 + signal). Every
process the run started dies with it (PR_SET_PDEATHSIG: serving/die_with_parent.py, pipeline/training/worker.py).

SIGKILL cannot be handled; what it leaves behind is covered by the parent-death signal and by the run lock
(run_lock.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
GRACE_S = 60.0


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # as a shell reports a process a signal ended (exit_codes.SIGNALLED)

    def __str__(self) -> str:
        return f"stopped by {self.name}"


@dataclasses.dataclass
class Stop:
    """What stop_on_signals saw: the first signal (None: none yet) and how many came after it. Set `armed` False
    once there is nothing left to interrupt (the work is done, only its report is left): a signal then is only
    noted."""
    signum: int | None = None
    repeated: int = 0
    armed: bool = True

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals(grace_s: float = GRACE_S, on_timeout: Callable[[int], None] | None = None,
                    signals: tuple[int, ...] = SIGNALS) -> Iterator[Stop]:
    """See the module docstring. Must be entered in the main thread; restores the previous handlers on exit."""
    stop = Stop()
    finished = threading.Event()

    def watchdog(signum: int) -> None:
        if finished.wait(grace_s):
            return
        if on_timeout is not None:
            with contextlib.suppress(Exception):
                on_timeout(signum)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(128 + signum)

    def handler(signum: int, frame) -> None:
        if stop.signum is not None:
            stop.repeated += 1
            return
        stop.signum = signum
        threading.Thread(target=watchdog, args=(signum,), name="tfxsp-stop-watchdog", daemon=True).start()
        if stop.armed:
            raise RunInterrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield stop
    finally:
        if stop.signum is None:
            finished.set()  # else the watchdog stays armed until the process exits
        for signum, old in previous.items():
            signal.signal(signum, old)
