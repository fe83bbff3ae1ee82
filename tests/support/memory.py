"""How much a call grows its process: the peak RSS while it runs (sampled every 10 ms) over the RSS before it.
Not the kernel's ru_maxrss: an earlier, freed peak (imports, a warm-up) would hide growth below it."""
from __future__ import annotations

import threading
from collections.abc import Callable

import psutil


def growth_mb(call: Callable[[], object]) -> float:
    process = psutil.Process()
    before = process.memory_info().rss
    peak, done = [before], threading.Event()

    def watch() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        call()
    finally:
        done.set()
        watcher.join()
    return (max(peak[0], process.memory_info().rss) - before) / 2**20
