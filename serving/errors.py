"""Status codes and the one error type every layer of the server raises.

TF Serving reports every failure as an ``absl::Status`` (a ``tensorflow.error.Code`` plus a message)
and maps that code unchanged to gRPC, and through ``ToHTTPStatusCode`` to HTTP
(spec §2.2 table, §3.4). Keeping one exception type with the canonical code lets the REST and gRPC
front ends translate the same failure the same way.

No stack trace reaches a client: a failure that is not a ServingError or a TensorFlow status is answered
with INTERNAL and an incident id (the traceback goes to the server log under that id), and messages are
cleaned of Python tracebacks, which TensorFlow embeds in some statuses (a failing ``tf.py_function``
reports the Python frames of the server process) (``client_message``).
"""
from __future__ import annotations

import enum
import logging
import re
import secrets

import grpc

log = logging.getLogger("serving")


class Code(enum.IntEnum):
    """``tensorflow.error.Code`` / ``absl::StatusCode`` values (identical numbering to gRPC)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# model_servers/http_server.cc ToHTTPStatusCode (spec §2.2); anything unlisted is 500.
_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

_GRPC_STATUS = {code.value[0]: code for code in grpc.StatusCode}

# model_servers/grpc_status_util.cc: longer gRPC messages are cut and marked.
_MAX_GRPC_MESSAGE_BYTES = 1024


class StartupError(Exception):
    """The server cannot start: a bad flag or configuration file, a model that cannot become available, a port it
    cannot listen on. ``python -m serving`` prints it and exits non-zero."""


class ServingError(Exception):
    """A failed request or operation, carrying TF Serving's status code and message."""

    def __init__(self, code: Code, message: str):
        super().__init__(message)
        self.code = Code(code)
        self.message = message

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"

    @property
    def http_status(self) -> int:
        return http_status(self.code)

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return _GRPC_STATUS[int(self.code)]

    @property
    def client_message(self) -> str:
        """The message as clients get it: without Python tracebacks."""
        return without_tracebacks(self.message)

    @property
    def grpc_message(self) -> str:
        message = self.client_message
        encoded = message.encode("utf-8")
        if len(encoded) <= _MAX_GRPC_MESSAGE_BYTES:
            return message
        return encoded[:_MAX_GRPC_MESSAGE_BYTES].decode("utf-8", "ignore") + "...TRUNCATED"

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class RequestTooLarge(ServingError):
    """A request over one of the server's size limits: RESOURCE_EXHAUSTED on gRPC, 413 on REST.

    (``ToHTTPStatusCode`` would say 429, which tells a client to slow down; 413 tells it the request itself
    is too large, which is what happened.)
    """

    def __init__(self, message: str):
        super().__init__(Code.RESOURCE_EXHAUSTED, message)

    @property
    def http_status(self) -> int:
        return 413


def http_status(code: Code) -> int:
    return _HTTP_STATUS.get(Code(code), 500)


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(Code.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(Code.FAILED_PRECONDITION, message)


def from_exception(exc: BaseException, context: str = "") -> ServingError:
    """Converts whatever a call raised into a ServingError with the matching code.

    TensorFlow's ``OpError`` already carries a canonical code (e.g. a malformed tf.Example is
    INVALID_ARGUMENT, a session timeout DEADLINE_EXCEEDED); the reference server passes those through.
    Anything else is a failure of this server: it is logged with its traceback under a new incident id,
    and the error says only INTERNAL and that id.
    """
    if isinstance(exc, ServingError):
        return exc
    import tensorflow as tf  # deferred: configuration checks must not wait for TensorFlow to import

    if isinstance(exc, tf.errors.OpError):
        return ServingError(Code(exc.error_code), without_tracebacks(_op_error_message(exc)))
    incident = secrets.token_hex(4)
    log.error("Internal error %s%s", incident, f" ({context})" if context else "", exc_info=exc)
    return ServingError(Code.INTERNAL, f"Internal error {incident}; the server log has the details")


_TRACEBACK_HEADER = re.compile(r"^\s*Traceback \(most recent call last\):\s*$")
_FRAME = re.compile(r'^\s*File "[^"\n]*", line \d+')
_DEFINED_AT = re.compile(r" defined at \(most recent call last\):\s*$")


def without_tracebacks(message: str) -> str:
    """``message`` without Python traceback lines: the ``Traceback (most recent call last):`` header,
    ``File "...", line N`` frames and the source lines under them (TensorFlow's ``Detected at node 'n'
    defined at (most recent call last):`` keeps its first words); repeated lines and blank runs collapse."""
    if "File \"" not in message and "most recent call last" not in message:
        return message
    kept: list[str] = []
    in_frame = False
    for line in message.split("\n"):
        if _TRACEBACK_HEADER.match(line):
            in_frame = False
            continue
        if _FRAME.match(line):
            in_frame = True
            continue
        if in_frame and line.startswith("    ") and line.strip():
            continue  # the source line of the frame above
        in_frame = False
        line = _DEFINED_AT.sub("", line)
        if line.strip() and any(line == earlier for earlier in kept):
            continue  # the exception line a traceback repeats
        if not line.strip() and kept and not kept[-1].strip():
            continue
        kept.append(line)
    return "\n".join(kept).strip("\n")


def _op_error_message(exc) -> str:
    # Python's session wrapper prefixes "Graph execution error:\n\n" and may append the
    # Python-side op trace; the C++ server only reports the status message itself.
    message = exc.message.strip()
    prefix = "Graph execution error:"
    if message.startswith(prefix):
        message = message[len(prefix):].strip()
    return message
