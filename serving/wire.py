"""Large Predict requests and responses read and written at the protobuf wire level.

With protobuf's C++ implementation, the first access to a parsed message's ``inputs`` map copies every
entry (about 0.1-0.25 s for a 13 MB tensor, with the GIL held), and typed value fields (``float_val``)
can only be read into numpy one Python float at a time. For a large request both stall the event loop
and everything else in the process. Here a large ``PredictRequest`` is split at its top-level fields
instead: each ``inputs`` entry is parsed on its own, and a tensor's packed fixed-width value field
(``float_val``, ``double_val``, ``scomplex_val``, ``dcomplex_val``) is read straight from the message's
bytes with ``np.frombuffer``. A large ``PredictResponse`` is written the same way, by concatenation.

Everything but the extracted value fields is still parsed by protobuf (the request without its inputs,
each tensor without its packed values), and the bytes around them are bounds-checked here, so malformed
input raises ``ValueError`` (the caller then lets protobuf parse the whole message and report). The
semantics are protobuf's: a repeated map key keeps its last entry, repeated occurrences of a message field
merge, packed and unpacked encodings of a value field concatenate in order (an unpacked occurrence makes
the whole field go through the normal parse).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
# TensorProto's packed fixed-width value fields: field number -> (name, little-endian element type).
PACKED_FIXED = {
    5: ("float_val", np.dtype("<f4")),
    6: ("double_val", np.dtype("<f8")),
    9: ("scomplex_val", np.dtype("<f4")),
    12: ("dcomplex_val", np.dtype("<f8")),
}
_INPUTS_FIELD = 2  # PredictRequest.inputs, map<string, TensorProto>
_TENSOR_CONTENT = 4


@dataclasses.dataclass
class WireTensor:
    """A TensorProto whose packed fixed-width value fields (and tensor_content) were taken out as arrays, by
    field name: views of the request's bytes."""

    proto: tensor_pb2.TensorProto
    values: dict[str, np.ndarray]


def read_varint(data, offset: int, end: int | None = None) -> tuple[int, int]:
    end = len(data) if end is None else end
    value = shift = 0
    while True:
        if offset >= end or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def len_field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | _LEN) + varint(len(payload)) + payload


def fields(data, start: int, end: int):
    """(field number, wire type, value start, value end, field start) for each field in data[start:end]."""
    offset = start
    while offset < end:
        field_start = offset
        key, offset = read_varint(data, offset, end)
        wire_type = key & 7
        if wire_type == _VARINT:
            _, value_end = read_varint(data, offset, end)
        elif wire_type == _FIXED64:
            value_end = offset + 8
        elif wire_type == _FIXED32:
            value_end = offset + 4
        elif wire_type == _LEN:
            length, offset = read_varint(data, offset, end)
            value_end = offset + length
        else:
            raise ValueError(f"unexpected wire type {wire_type}")  # groups: not in these messages
        if key >> 3 == 0 or value_end > end:
            raise ValueError("malformed field")
        yield key >> 3, wire_type, offset, value_end, field_start
        offset = value_end


def split_predict_request(data: bytes) -> tuple[predict_pb2.PredictRequest, dict[str, WireTensor]]:
    """A serialized PredictRequest as (the request without its inputs, its inputs by alias).

    Raises ValueError (or protobuf's DecodeError) for bytes that are not a valid message.
    """
    view = memoryview(data)
    rest: list[memoryview] = []
    inputs: dict[str, WireTensor] = {}
    for number, wire_type, start, end, field_start in fields(view, 0, len(data)):
        if number == _INPUTS_FIELD and wire_type == _LEN:
            key, tensor = _map_entry(data, view, start, end)
            inputs[key] = tensor
        else:
            rest.append(view[field_start:end])
    return predict_pb2.PredictRequest.FromString(b"".join(rest)), inputs


def _map_entry(data: bytes, view: memoryview, start: int, end: int) -> tuple[str, WireTensor]:
    key = b""
    value_parts: list[tuple[int, int]] = []
    for number, wire_type, value_start, value_end, _ in fields(view, start, end):
        if number == 1 and wire_type == _LEN:
            key = data[value_start:value_end]
        elif number == 2 and wire_type == _LEN:
            value_parts.append((value_start, value_end))
    return key.decode("utf-8"), _tensor(data, view, value_parts)


def _tensor(data: bytes, view: memoryview, parts: list[tuple[int, int]]) -> WireTensor:
    found = [field for start, end in parts for field in fields(view, start, end)]
    # A value field with an unpacked occurrence stays in the proto: protobuf concatenates its encodings in order.
    unpacked = {number for number, wire_type, *_ in found if number in PACKED_FIXED and wire_type != _LEN}
    rest: list[memoryview] = []
    packed: dict[int, list[np.ndarray]] = {}
    content = None
    for number, wire_type, value_start, value_end, field_start in found:
        if number == _TENSOR_CONTENT and wire_type == _LEN:  # bytes: the last occurrence counts
            content = np.frombuffer(data, dtype=np.uint8, count=value_end - value_start, offset=value_start)
        elif number in PACKED_FIXED and number not in unpacked:
            element = PACKED_FIXED[number][1]
            if (value_end - value_start) % element.itemsize:
                raise ValueError("packed field of a partial element")
            packed.setdefault(number, []).append(
                np.frombuffer(data, dtype=element, count=(value_end - value_start) // element.itemsize,
                              offset=value_start))
        else:
            rest.append(view[field_start:value_end])
    values = {} if content is None else {"tensor_content": content}
    for number, arrays in packed.items():
        name, element = PACKED_FIXED[number]
        flat = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        values[name] = flat.astype(element.newbyteorder("="), copy=False)
    return WireTensor(tensor_pb2.TensorProto.FromString(b"".join(rest)), values)


def field_header(number: int, length: int) -> bytes:
    return varint(number << 3 | _LEN) + varint(length)


def predict_response_bytes(head: predict_pb2.PredictResponse, outputs: dict[str, list]) -> bytes:
    """A serialized PredictResponse: ``head`` (model_spec) plus each alias's serialized TensorProto, given as
    a list of byte pieces (joined once, here: the one copy of a large response)."""
    return b"".join([head.SerializeToString(), *tensor_map(1, outputs)])


def tensor_map(number: int, tensors: dict[str, list]) -> list:
    """A ``map<string, TensorProto>`` field (PredictRequest.inputs, PredictResponse.outputs) as byte pieces: one
    entry per alias, its TensorProto given as byte pieces (serving.tensor_codec.serialized_tensor_proto)."""
    parts: list = []
    for alias, tensor in tensors.items():
        key = len_field(1, alias.encode("utf-8"))
        tensor_length = sum(len(piece) for piece in tensor)
        value_header = field_header(2, tensor_length)
        parts += [field_header(number, len(key) + len(value_header) + tensor_length), key, value_header, *tensor]
    return parts
