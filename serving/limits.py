"""What one request may cost the server: tensor sizes (and, in ``admission``, concurrency).

The reference server allocates whatever a request declares. Here nothing is allocated that the request
has not paid for in bytes received:

* a TensorProto's declared shape is checked before anything of that size exists: a value list shorter
  than the shape (which TensorFlow fills by repeating the last value) may leave at most
  ``tensor_codec.MAX_IMPLIED_BYTES`` implicit, else the request is INVALID_ARGUMENT
  (``tensor parsing error: <alias>: ...``, the reference's message for a tensor it cannot allocate);
* the tensors of one request may hold at most ``--max_request_elements`` elements in all
  (RESOURCE_EXHAUSTED on gRPC, 413 on REST), checked from the declared shapes before decoding;
* JSON tensors may nest at most ``tensor_codec.MAX_RANK`` levels (400 otherwise, never a 500).
"""
from __future__ import annotations

import dataclasses

from serving.errors import RequestTooLarge

DEFAULT_MAX_REQUEST_ELEMENTS = 1 << 27  # 512 MiB of float32


@dataclasses.dataclass(frozen=True)
class Limits:
    max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS


def check_request_elements(count: int, limits: Limits) -> None:
    if count > limits.max_request_elements:
        raise RequestTooLarge(
            f"The request's tensors hold {count} elements, more than the limit of {limits.max_request_elements} "
            "(--max_request_elements)"
        )
