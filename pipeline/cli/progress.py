"""One line per component while `tfxsp run` runs, read from ML Metadata, where TFX records every execution as it
starts (RUNNING, or CACHED when it reuses earlier outputs) and when it ends (COMPLETE or FAILED); and, while the
Trainer runs, the warning of a local training cluster that is not network-isolated (notices.py)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rich.markup import escape

from pipeline.config import PipelineConfig

POLL_S = 0.5
_MARKS = {"running": "[cyan]▶[/]", "complete": "[green]✓[/]", "cached": "[blue]✓[/]", "failed": "[bold red]✗[/]",
          "canceled": "[yellow]✗[/]"}


class ComponentProgress:
    """Polls the store in a thread of its own while the block runs, for the run that starts after it was entered,
    and prints each node when it starts and when it ends."""

    def __init__(self, config: PipelineConfig, started_ms: int, emit: Callable[[str], None]):
        self._config, self._started_ms, self._emit = config, started_ms, emit
        self._stop = threading.Event()
        self._shown: dict[int, str] = {}  # execution id -> the last state printed
        self._warned: set[int] = set()  # Trainer executions whose network warning was printed
        self._store = None
        self._thread = threading.Thread(target=self._poll, name="tfxsp-progress", daemon=True)

    def __enter__(self) -> ComponentProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._show_once()  # what happened since the last poll

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            self._show_once()

    def _show_once(self) -> None:
        from pipeline.metadata import executions, runs, store
        try:
            if self._store is None:
                self._store = store.open_store(self._config.metadata_connection_config())
            run = runs.run_started_since(self._store, self._config.pipeline_name, self._started_ms)
            nodes = executions.node_results(self._store, [run])[run.id] if run is not None else []
        except Exception:  # the store may not exist yet, or be busy: the next poll tries again
            return
        for node in nodes:
            self._warn_about_training_network(node)
            if self._shown.get(node.execution_id) == node.state:
                continue
            self._shown[node.execution_id] = node.state
            if node.state in ("running", "new"):
                self._emit(f"  {_MARKS['running']} {node.node_id} …")
            elif node.state == "complete":
                self._emit(f"  {_MARKS['complete']} {node.node_id} [dim]({node.seconds:.1f} s)[/]")
            else:
                self._emit(f"  {_MARKS.get(node.state, '·')} {node.node_id} [dim]({node.state})[/]")


    def _warn_about_training_network(self, node) -> None:
        from pipeline.cli import notices
        if node.node_id != notices.TRAINER or node.execution_id in self._warned or node.state not in (
                "running", "new", "complete", "failed"):
            return
        model_run = notices.model_run_dir(self._config.pipeline_root, node.execution_id)
        warning = notices.training_network(model_run, running=node.state in ("running", "new"))
        if warning:
            self._warned.add(node.execution_id)
            self._emit(f"  [bold yellow]{escape(warning)}[/]")


def now_ms() -> int:
    return int(time.time() * 1000)
