"""Why a node of a run failed: the error TFX recorded on its execution, and the lines around it in the run's log.

TFX records a failed execution's ExecutionResult (code, message) as the custom property `__execution_result__`.
`tfxsp run` writes the components' output to <pipeline_root>/logs/run-<local start time>.log; the log of a run is
the newest one that started before the run's first execution.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import re
from typing import Any

EXECUTION_RESULT = "__execution_result__"
LOG_NAME = re.compile(r"^run-(\d{8}-\d{6})\.log$")
CONTEXT_LINES = 25  # lines shown before the error's last mention (the traceback), and a few after
MAX_LOG_BYTES = 64 << 20  # a log bigger than this is read from its end only


@dataclasses.dataclass
class Failure:
    node_id: str
    execution_id: int | None
    message: str  # the error TFX recorded, or "" when it recorded none
    log_path: str | None = None
    log_lines: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def error_message(parameters: dict[str, Any]) -> str:
    """The message of the ExecutionResult TFX recorded on an execution (properties_of already decoded its JSON)."""
    result = parameters.get(EXECUTION_RESULT)
    if isinstance(result, dict):
        return str(result.get("resultMessage") or result.get("result_message") or "")
    return str(result or "")


def run_log(logs_dir: str, started_ms: int) -> str | None:
    """The log file of the run whose first execution started at `started_ms`, or None."""
    try:
        names = os.listdir(logs_dir)
    except OSError:
        return None
    started = datetime.datetime.fromtimestamp(started_ms / 1000)
    candidates = []
    for name in names:
        match = LOG_NAME.match(name)
        if match:
            when = datetime.datetime.strptime(match.group(1), "%Y%m%d-%H%M%S")
            if when <= started + datetime.timedelta(seconds=1):
                candidates.append((when, name))
    return os.path.join(logs_dir, max(candidates)[1]) if candidates else None


def lines_around(path: str, needles: list[str]) -> list[str]:
    """The lines before and just after the last line that holds one of `needles` (the end of the log when none
    does)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(max(0, size - MAX_LOG_BYTES))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    at = next((i for i in range(len(lines) - 1, -1, -1)
               if any(n and n in lines[i] for n in needles)), len(lines) - 1)
    return lines[max(0, at - CONTEXT_LINES):at + 6]


def failure_of(node_id: str, execution_id: int | None, parameters: dict[str, Any], logs_dir: str,
               run_started_ms: int) -> Failure:
    """The error of a failed node and the log lines around it."""
    message = error_message(parameters)
    failure = Failure(node_id=node_id, execution_id=execution_id, message=message)
    failure.log_path = run_log(logs_dir, run_started_ms)
    if failure.log_path:
        last_line = message.strip().splitlines()[-1] if message.strip() else ""
        failure.log_lines = lines_around(failure.log_path, [last_line, "Traceback (most recent call last)"])
    return failure
