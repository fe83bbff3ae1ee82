"""How much a call grows a process: the peak RSS while it runs (sampled in a thread) over the RSS before it.
Not the kernel's ru_maxrss: an earlier, freed peak (imports, a warm-up) would hide growth below it."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import psutil

T = TypeVar("T")


def growth_mb(call: Callable[[], T], pid: int | None = None, every_s: float = 0.01) -> tuple[T, float]:
    """`call()`'s result, and how many MB process `pid` (None: this one) grew by at most while it ran."""
    process = psutil.Process(pid)
    before = process.memory_info().rss
    peak, done = [before], threading.Event()

    def watch() -> None:
        while not done.wait(every_s):
            peak[0] = max(peak[0], process.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = call()
    finally:
        done.set()
        watcher.join()
    return result, (max(peak[0], process.memory_info().rss) - before) / 2**20
