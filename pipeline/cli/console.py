"""The terminal of the `tfxsp` commands: one rich Console for what a person reads, and, while `tfxsp run` runs, none
of TFX's, Beam's and TensorFlow's log noise (it goes to the run's log file; `-v` shows all of it)."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from rich.console import Console

console = Console(highlight=False)


@contextlib.contextmanager
def output_to_file(log_path: str) -> Iterator[None]:
    """Sends everything written to file descriptors 1 and 2 to `log_path` (TensorFlow's C++ logs,
    Beam's and the module-file wheel build's output included); this console keeps the terminal."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    saved = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    previous_file = console.file
    console.file = terminal
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    # Python logging (TFX's, Beam's) goes to the log file too, in full.
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(logging.INFO)
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)
        console.file = previous_file
        root.setLevel(previous_level)
        terminal.close()


def quiet_logs(verbose: bool) -> None:
    """Must run before TensorFlow is imported: TF_CPP_MIN_LOG_LEVEL is read once, at import."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        logging.basicConfig(level=logging.INFO)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore")


def describe_error(error: BaseException) -> str:
    """The error and what caused it: TFX wraps a module file's ImportError, for one."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return " <- caused by ".join(parts)


def print_error(title: str, message: str) -> None:
    """One paragraph to stderr, whatever the console's file is ([brackets] in the message are text)."""
    from rich.markup import escape
    Console(stderr=True, highlight=False).print(f"[bold red]{title}[/] {escape(message)}", soft_wrap=True)
