"""Conversions between wire formats and numpy arrays: TensorProto, REST JSON tensors, tf.Examples.

Implements the encodings of spec §2.2 (JSON parsing and float output), §2.5 (predict: row
``instances`` / columnar ``inputs``, dtype rules, ``b64``, ``_bytes`` outputs), §2.6 (JSON examples for
classify/regress) and §3.3 (TensorProto inputs in either encoding, outputs in typed ``*_val``
fields). Error messages are those of ``util/json_tensor.cc`` and ``tensorflow/core/framework/tensor.cc``.

JSON request tensors take a numpy fast path for the common all-numeric case and fall back to a
literal port of ``FillTensorProto``/``AddInstanceItem`` whenever the fast path cannot prove the
input valid, so every rejection carries the reference server's exact message.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import large_json, wire
from serving.errors import Code, ServingError, invalid_argument

DT = types_pb2.DataType

# DataTypeString() names, used verbatim in the reference server's messages.
_DTYPE_STRING = {
    types_pb2.DT_FLOAT: "float",
    types_pb2.DT_DOUBLE: "double",
    types_pb2.DT_INT32: "int32",
    types_pb2.DT_UINT8: "uint8",
    types_pb2.DT_INT16: "int16",
    types_pb2.DT_INT8: "int8",
    types_pb2.DT_STRING: "string",
    types_pb2.DT_COMPLEX64: "complex64",
    types_pb2.DT_INT64: "int64",
    types_pb2.DT_BOOL: "bool",
    types_pb2.DT_QINT8: "qint8",
    types_pb2.DT_QUINT8: "quint8",
    types_pb2.DT_QINT32: "qint32",
    types_pb2.DT_BFLOAT16: "bfloat16",
    types_pb2.DT_QINT16: "qint16",
    types_pb2.DT_QUINT16: "quint16",
    types_pb2.DT_UINT16: "uint16",
    types_pb2.DT_COMPLEX128: "complex128",
    types_pb2.DT_HALF: "half",
    types_pb2.DT_RESOURCE: "resource",
    types_pb2.DT_VARIANT: "variant",
    types_pb2.DT_UINT32: "uint32",
    types_pb2.DT_UINT64: "uint64",
}

# dtype -> (TensorProto value field, numpy dtype). Quantized, resource and variant tensors cannot
# travel through this server (the reference cannot put them in JSON either).
_PROTO_FIELD = {
    types_pb2.DT_FLOAT: ("float_val", np.dtype(np.float32)),
    types_pb2.DT_DOUBLE: ("double_val", np.dtype(np.float64)),
    types_pb2.DT_INT32: ("int_val", np.dtype(np.int32)),
    types_pb2.DT_UINT8: ("int_val", np.dtype(np.uint8)),
    types_pb2.DT_INT16: ("int_val", np.dtype(np.int16)),
    types_pb2.DT_INT8: ("int_val", np.dtype(np.int8)),
    types_pb2.DT_UINT16: ("int_val", np.dtype(np.uint16)),
    types_pb2.DT_INT64: ("int64_val", np.dtype(np.int64)),
    types_pb2.DT_UINT32: ("uint32_val", np.dtype(np.uint32)),
    types_pb2.DT_UINT64: ("uint64_val", np.dtype(np.uint64)),
    types_pb2.DT_BOOL: ("bool_val", np.dtype(np.bool_)),
    types_pb2.DT_STRING: ("string_val", np.dtype(object)),
    types_pb2.DT_HALF: ("half_val", np.dtype(np.float16)),
    types_pb2.DT_BFLOAT16: ("half_val", np.dtype(tf.bfloat16.as_numpy_dtype)),
    types_pb2.DT_COMPLEX64: ("scomplex_val", np.dtype(np.complex64)),
    types_pb2.DT_COMPLEX128: ("dcomplex_val", np.dtype(np.complex128)),
}
_DTYPE_OF_NUMPY = {np_dtype: dt for dt, (_, np_dtype) in _PROTO_FIELD.items() if dt != types_pb2.DT_BFLOAT16}
_DTYPE_OF_NUMPY[np.dtype(tf.bfloat16.as_numpy_dtype)] = types_pb2.DT_BFLOAT16

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
# JSON integer ranges accepted per dtype (rapidjson IsInt / IsInt64 / IsUint / IsUint64).
_JSON_INT_RANGE = {
    types_pb2.DT_INT32: _INT32,
    types_pb2.DT_INT16: _INT32,
    types_pb2.DT_INT8: _INT32,
    types_pb2.DT_UINT8: _INT32,
    types_pb2.DT_INT64: _INT64,
    types_pb2.DT_UINT32: _UINT32,
    types_pb2.DT_UINT64: _UINT64,
}
_FLOAT_DTYPES = (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE)

ROW = "row"
COLUMNAR = "columnar"


def dtype_string(dtype: int) -> str:
    return _DTYPE_STRING.get(dtype, f"unknown dtype enum ({dtype})")


def numpy_dtype(dtype: int) -> np.dtype | None:
    entry = _PROTO_FIELD.get(dtype)
    return entry[1] if entry else None


def dtype_of_array(array: np.ndarray) -> int:
    if array.dtype.kind in "OSU":
        return types_pb2.DT_STRING
    return _DTYPE_OF_NUMPY.get(array.dtype, types_pb2.DT_INVALID)


# ============================================================================================
# TensorProto <-> numpy


# The most dimensions a tensor may have here: numpy's limit (TensorFlow's is 254).
MAX_RANK = 32
# A TensorProto whose value list is shorter than its shape repeats its last value (zeros when it has
# none): the values it leaves implicit may take at most this much memory once decoded. The reference
# allocates whatever the shape declares; here a request cannot make the server allocate what it did
# not send.
MAX_IMPLIED_BYTES = 1 << 20
_INT64_MAX = 2**63 - 1
# Bytes per element of a string tensor beyond the string itself (numpy's pointer, TF's tstring).
_STRING_ELEMENT_OVERHEAD = 32
# Value lists are converted this many values at a time, so that no single call holds the GIL for
# long (the event loop keeps answering while a worker thread converts a large tensor).
_CHUNK = 1 << 16
# Packed fixed-width value fields by name: (field number, little-endian element type). Converting these
# through their wire bytes costs a memcpy instead of one Python float per value.
_PACKED_FIXED = {name: (number, element) for number, (name, element) in wire.PACKED_FIXED.items()}
_NATIVE = {name: element.newbyteorder("=") for name, (_, element) in _PACKED_FIXED.items()}


class ImpliedValuesTooLarge(ValueError):
    """A TensorProto's shape asks for far more values than it carries."""


def declared_shape(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    """The shape a TensorProto declares, checked as ``TensorShape`` does (no allocation).

    Raises ValueError for an unknown rank, a negative dimension, too many dimensions or more than
    2^63-1 elements.
    """
    if proto.tensor_shape.unknown_rank:
        raise ValueError("unknown rank")
    dims = proto.tensor_shape.dim
    if len(dims) > MAX_RANK:
        raise ValueError(f"rank {len(dims)} is more than {MAX_RANK}")
    shape = tuple(d.size for d in dims)
    if shape and min(shape) < 0:
        raise ValueError("negative dimension")
    if len(shape) > 1 and math.prod(shape) > _INT64_MAX:
        raise ValueError("more than 2^63-1 elements")
    return shape


def check_proto(proto: tensor_pb2.TensorProto | wire.WireTensor,
                max_implied_bytes: int | None = MAX_IMPLIED_BYTES) -> tuple[int, ...]:
    """Everything ``array_from_proto`` checks, without allocating: returns the declared shape.

    Raises ValueError for a proto the reference server would refuse ("tensor parsing error"), and
    ImpliedValuesTooLarge when the values a short value list leaves implicit would take more than
    ``max_implied_bytes`` once decoded (None: no limit, for a model's own signature defaults).
    A ``wire.WireTensor`` (a large request's tensor, see ``serving.wire``) is checked the same way.
    """
    proto, override = _split(proto)
    entry = _PROTO_FIELD.get(proto.dtype)
    if entry is None:
        raise ValueError(f"unsupported dtype {dtype_string(proto.dtype)}")
    field, np_dtype = entry
    shape = declared_shape(proto)
    count = math.prod(shape)
    content = _tensor_content(proto, override)
    if len(content):
        if proto.dtype == types_pb2.DT_STRING:
            raise ValueError("string tensor_content is not supported")
        if len(content) != count * np_dtype.itemsize:
            raise ValueError("tensor_content size does not match the shape")
        return shape
    values = override[field] if field in override else getattr(proto, field)
    carried = len(values)
    if proto.dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
        if carried % 2:
            raise ValueError("odd number of complex components")
        carried //= 2
    if carried > count:
        raise ValueError("more values than the shape holds")
    implied = count - carried
    if max_implied_bytes is not None and implied:
        if proto.dtype == types_pb2.DT_STRING:
            element_bytes = _STRING_ELEMENT_OVERHEAD + (len(values[-1]) if carried else 0)
        else:
            element_bytes = np_dtype.itemsize
        if implied * element_bytes > max_implied_bytes:
            raise ImpliedValuesTooLarge(
                f"its shape {shape_string(shape)} holds {count} values but it carries {carried}; the {implied} "
                f"values it leaves implicit would take {implied * element_bytes} bytes, more than the "
                f"{max_implied_bytes} this server fills in (send the values, or use tensor_content)"
            )
    return shape


def array_from_proto(proto: tensor_pb2.TensorProto | wire.WireTensor,
                     max_implied_bytes: int | None = MAX_IMPLIED_BYTES) -> np.ndarray:
    """``Tensor::FromProto``: either encoding, short value lists repeat their last value.

    Raises as ``check_proto`` does, before allocating anything of the declared size.
    """
    return array_from_checked(proto, check_proto(proto, max_implied_bytes))


def array_from_checked(proto: tensor_pb2.TensorProto | wire.WireTensor, shape: tuple[int, ...]) -> np.ndarray:
    """``array_from_proto`` for a proto ``check_proto`` has passed (``shape`` is what it returned)."""
    proto, override = _split(proto)
    field, np_dtype = _PROTO_FIELD[proto.dtype]
    count = math.prod(shape)
    content = _tensor_content(proto, override)
    if len(content):
        return np.frombuffer(content, dtype=np_dtype).reshape(shape)
    if proto.dtype in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        flat = _values_array(proto.half_val, np.dtype(np.uint16)).view(np_dtype)
    elif proto.dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
        pairs = override[field] if field in override else _packed_values(proto, field)
        flat = np.ascontiguousarray(pairs).view(np_dtype) if pairs.size else np.empty(0, np_dtype)
    elif proto.dtype == types_pb2.DT_STRING:
        values = proto.string_val
        flat = np.empty(len(values), dtype=object)
        for i in range(0, len(values), _CHUNK):
            if i:
                large_json.yield_gil()
            flat[i:i + _CHUNK] = values[i:i + _CHUNK]
    elif field in _PACKED_FIXED:
        flat = (override[field] if field in override else _packed_values(proto, field)).astype(np_dtype, copy=False)
    else:
        flat = _values_array(getattr(proto, field), np_dtype)
    if flat.size == count:
        return flat.reshape(shape)
    if flat.size == 0:
        return np.zeros(shape, dtype=np_dtype) if proto.dtype != types_pb2.DT_STRING else _strings(shape, b"")
    padded = np.empty(count, dtype=np_dtype)
    padded[: flat.size] = flat
    padded[flat.size :] = flat[-1]
    return padded.reshape(shape)


def _tensor_content(proto: tensor_pb2.TensorProto, override: dict):
    # A large request's tensor_content is a view of the request's bytes (serving.wire): no copy.
    return override["tensor_content"] if "tensor_content" in override else proto.tensor_content


def _split(tensor) -> tuple[tensor_pb2.TensorProto, dict[str, np.ndarray]]:
    if isinstance(tensor, wire.WireTensor):
        return tensor.proto, tensor.values
    return tensor, {}


def _values_array(values, np_dtype: np.dtype) -> np.ndarray:
    """A repeated scalar field as an array, converted a chunk at a time."""
    if len(values) <= _CHUNK:
        return np.array(values, dtype=np_dtype)
    flat = np.empty(len(values), dtype=np_dtype)
    for i in range(0, len(values), _CHUNK):
        if i:
            large_json.yield_gil()
        flat[i:i + _CHUNK] = values[i:i + _CHUNK]
    return flat


def _packed_values(proto: tensor_pb2.TensorProto, field: str) -> np.ndarray:
    """A fixed-width value field read from its packed wire bytes (``[re, im, ...]`` for complex)."""
    number, wire_dtype = _PACKED_FIXED[field]
    native = _NATIVE[field]
    values = getattr(proto, field)
    if len(values) <= _CHUNK:
        return np.array(values, dtype=native)
    # The value field is the proto's only large one (tensor_content is empty here): serializing the
    # proto is a memcpy of it, and its top-level fields are few.
    data = proto.SerializeToString()
    pieces = []
    offset = 0
    while offset < len(data):
        key, offset = wire.read_varint(data, offset)
        wire_type = key & 7
        if wire_type == 0:
            _, offset = wire.read_varint(data, offset)
        elif wire_type == 2:
            length, offset = wire.read_varint(data, offset)
            if key >> 3 == number:
                pieces.append(np.frombuffer(data, dtype=wire_dtype, count=length // wire_dtype.itemsize,
                                            offset=offset))
            offset += length
        else:  # an unpacked fixed-width value or something unexpected: the slow, certain way
            return _values_array(values, native)
    flat = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    if flat.size != len(values):
        return _values_array(values, native)
    return flat.astype(native, copy=False)


def fill_proto(proto: tensor_pb2.TensorProto, array: np.ndarray, as_tensor_content: bool = False) -> None:
    """``Tensor::AsProtoField`` (typed ``*_val`` fields) or ``AsProtoTensorContent``."""
    dtype = dtype_of_array(array)
    if dtype not in _PROTO_FIELD:
        raise ServingError(Code.INTERNAL, f"Cannot encode output tensor of numpy dtype {array.dtype}")
    proto.dtype = dtype
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add(size=size)
    field = _PROTO_FIELD[dtype][0]
    flat = array.ravel()
    if dtype == types_pb2.DT_STRING:
        for i in range(0, flat.size, _CHUNK):
            if i:
                large_json.yield_gil()
            proto.string_val.extend([_as_bytes(v) for v in flat[i:i + _CHUNK]])
    elif as_tensor_content:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    elif field in _PACKED_FIXED and flat.size > _CHUNK:
        # One packed field parsed from its wire bytes, rather than one Python float per value.
        number, wire_dtype = _PACKED_FIXED[field]
        if dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
            flat = np.stack([flat.real, flat.imag], axis=-1)
        payload = np.ascontiguousarray(flat, dtype=wire_dtype).tobytes()
        proto.MergeFromString(wire.len_field(number, payload))
    else:
        if dtype in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
            flat = flat.view(np.uint16)
        elif dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
            flat = np.stack([flat.real, flat.imag], axis=-1).ravel()
        values = getattr(proto, field)
        for i in range(0, flat.size, _CHUNK):
            if i:
                large_json.yield_gil()
            values.extend(flat[i:i + _CHUNK].tolist())


def serialized_tensor_proto(array: np.ndarray, as_tensor_content: bool = False) -> list:
    """``fill_proto``'s TensorProto, serialized, as byte pieces to be joined: a fixed-width value field or
    tensor_content is the array's own memory (a large response is never built as a message)."""
    dtype = dtype_of_array(array)
    field = _PROTO_FIELD.get(dtype, ("",))[0]
    if dtype == types_pb2.DT_STRING or (not as_tensor_content and field not in _PACKED_FIXED):
        proto = tensor_pb2.TensorProto()
        fill_proto(proto, array, as_tensor_content)
        return [proto.SerializeToString()]
    head = _tensor_head(dtype, array.shape)
    if as_tensor_content:
        number, payload = 4, np.ascontiguousarray(array)
    else:
        number, element = _PACKED_FIXED[field]
        flat = array.ravel()
        if dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
            flat = np.stack([flat.real, flat.imag], axis=-1)
        payload = np.ascontiguousarray(flat, dtype=element)
    if not payload.nbytes:  # proto3 writes no empty field
        return [head]
    return [head, wire.field_header(number, payload.nbytes), memoryview(payload).cast("B")]


_HEADS: dict[tuple[int, tuple[int, ...]], bytes] = {}
_MAX_HEADS = 4096  # shapes differ by batch size: enough for every one a server sees, bounded whatever clients send


def _tensor_head(dtype: int, shape: tuple[int, ...]) -> bytes:
    """A TensorProto's dtype and shape, serialized: the same for every tensor of that dtype and shape, so made once
    (a message built and serialized costs a small response more than its values)."""
    head = _HEADS.get((dtype, shape))
    if head is None:
        proto = tensor_pb2.TensorProto(dtype=dtype)
        for size in shape:
            proto.tensor_shape.dim.add(size=size)
        head = proto.SerializeToString()
        if len(_HEADS) >= _MAX_HEADS:
            _HEADS.clear()
        _HEADS[(dtype, shape)] = head
    return head


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _strings(shape: tuple[int, ...], fill: bytes) -> np.ndarray:
    array = np.empty(shape, dtype=object)
    array.fill(fill)
    return array


# ============================================================================================
# JSON request parsing (ParseJson, spec §2.2)


def parse_json_object(body: bytes) -> dict:
    """Parses a request body the way rapidjson does for the reference server.

    NaN/Infinity tokens are accepted and trailing bytes after the top-level value are ignored
    (``kParseNanAndInfFlag | kParseStopWhenDoneFlag``).
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    if len(body) > large_json.LARGE_BODY:  # in pieces, so that the GIL is never held for long
        try:
            doc = large_json.loads(body)
        except large_json.Malformed:
            doc = _lenient_loads(body, pure_python=True)
    else:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = _lenient_loads(body)
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


_INF_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|(-?)Inf(?!inity)')

# Python json messages -> rapidjson GetParseError_En texts.
_RAPIDJSON_MESSAGES = [
    ("Expecting value", "Invalid value."),
    ("Expecting property name enclosed in double quotes", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
]


def has_bool_tokens(body: bytes) -> bool:
    """Whether a body may hold JSON ``true``/``false`` (see ``predict_inputs_from_json``)."""
    if len(body) > large_json.LARGE_BODY:
        return large_json.contains_bool_tokens(body)
    return b"true" in body or b"false" in body


def _lenient_loads(body: bytes, pure_python: bool = False) -> Any:
    if not pure_python and b"Inf" in body:  # the pure-Python scanner reads Inf itself
        # rapidjson also accepts "Inf"/"-Inf", Python's json only "Infinity".
        body = _INF_TOKEN.sub(lambda m: m.group(0) if m.group(0).startswith(b'"') else m.group(1) + b"Infinity", body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {e.start}") from None
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise invalid_argument(f"JSON Parse error: The document is empty. at offset: {start}")
    try:
        if pure_python:
            doc, _ = large_json.python_raw_decode(text, start)
        else:
            doc, _ = json.JSONDecoder(parse_float=large_json.strict_float).raw_decode(text, start)
    except large_json.NumberTooBig:
        raise invalid_argument("JSON Parse error: Number too big to be stored in double.") from None
    except json.JSONDecodeError as e:
        offset = len(text[: e.pos].encode("utf-8"))
        raise invalid_argument(f"JSON Parse error: {_rapidjson_message(e, text)} at offset: {offset}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: Nesting too deep.") from None
    return doc


def _rapidjson_message(error: json.JSONDecodeError, text: str) -> str:
    if error.msg == "Expecting ',' delimiter":
        return (
            "Missing a comma or '}' after an object member."
            if _innermost_container(text, error.pos) == "{"
            else "Missing a comma or ']' after an array element."
        )
    for python_message, rapidjson_message in _RAPIDJSON_MESSAGES:
        if error.msg.startswith(python_message):
            return rapidjson_message
    return error.msg + "."


def _innermost_container(text: str, end: int) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for ch in text[:end]:
        if in_string:
            escaped = not escaped and ch == "\\"
            in_string = escaped or ch != '"'
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def json_type(value: Any) -> str:
    """rapidjson's type names as used in error messages."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


_MAX_DEBUG_STRING = 256


class _DebugStringFull(Exception):
    pass


def debug_string(value: Any) -> str:
    """``JsonValueToDebugString``: rapidjson pretty JSON, single-line arrays, cut at 256 bytes."""
    out: list[str] = []
    try:
        _debug_write(value, 0, out, [0])
    except _DebugStringFull:
        pass
    return "".join(out)[:_MAX_DEBUG_STRING]


def _debug_write(value: Any, indent: int, out: list[str], length: list[int]) -> None:
    def emit(text: str) -> None:
        out.append(text)
        length[0] += len(text)
        if length[0] > _MAX_DEBUG_STRING:
            raise _DebugStringFull

    if isinstance(value, dict):
        if not value:
            emit("{}")
            return
        emit("{\n")
        for i, (key, item) in enumerate(value.items()):
            emit(" " * (indent + 4) + json.dumps(key) + ": ")
            _debug_write(item, indent + 4, out, length)
            emit(",\n" if i + 1 < len(value) else "\n")
        emit(" " * indent + "}")
    elif isinstance(value, list):
        emit("[")
        for i, item in enumerate(value):
            if i:
                emit(", ")
            _debug_write(item, indent, out, length)
        emit("]")
    elif isinstance(value, float):
        emit(repr(value) if math.isfinite(value) else _format_float(value, np.float64))
    else:
        emit(json.dumps(value))


# ============================================================================================
# Predict request JSON -> input arrays (FillPredictRequestFromJson, spec §2.5)


def signature_name_from_json(doc: dict) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


def predict_inputs_from_json(
    doc: dict, input_dtypes: Mapping[str, int], has_bool_tokens: bool = True
) -> tuple[dict[str, np.ndarray], str]:
    """Builds the input arrays of a REST predict request, typed by the signature's input dtypes.

    ``has_bool_tokens`` says whether the body may contain JSON ``true``/``false``; when it cannot,
    numpy's type inference is enough to prove a numeric input valid (numpy would silently turn a
    stray boolean into a number, which the reference server rejects).
    Returns the arrays and the request format (ROW or COLUMNAR).
    """
    if "instances" in doc:
        if "inputs" in doc:
            raise _both_keys_error(doc)
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        return _tensors_from_instances(instances, input_dtypes, has_bool_tokens), ROW
    if "inputs" in doc:
        return _tensors_from_inputs(doc["inputs"], input_dtypes, has_bool_tokens), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _both_keys_error(doc: dict) -> ServingError:
    return invalid_argument(
        f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of 'inputs' or "
        "'instances' keys to exist "
    )


def _is_b64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64_object(value)


def _tensors_from_instances(
    instances: list, input_dtypes: Mapping[str, int], has_bool_tokens: bool
) -> dict[str, np.ndarray]:
    first = instances[0]
    if not isinstance(first, dict) and len(input_dtypes) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required "
            "as per tensorinfo_map"
        )
    if not _is_named_object(first):
        name = sorted(input_dtypes)[0]
        array = _fast_array(instances, input_dtypes[name], has_bool_tokens)
        if array is not None:
            return {name: array}
        return _instances_slow(instances, input_dtypes, named=False)
    names = set(input_dtypes)
    if all(type(item) is dict and item.keys() == names for item in instances):
        arrays = {}
        for name in sorted(names):
            array = _fast_array([item[name] for item in instances], input_dtypes[name], has_bool_tokens)
            if array is None:
                break
            arrays[name] = array
        else:
            return arrays
    return _instances_slow(instances, input_dtypes, named=True)


def _instances_slow(instances: list, input_dtypes: Mapping[str, int], named: bool) -> dict[str, np.ndarray]:
    """Literal port of FillTensorMapFromInstancesList; produces the reference error messages."""
    builders: dict[str, _Batch] = {}
    names = sorted(input_dtypes)
    for index, item in enumerate(instances):
        if named:
            if not _is_named_object(item):
                raise invalid_argument(f"Expecting object but got list at item {index} of input list")
            for key, value in item.items():
                try:
                    _add_instance(key, value, input_dtypes, builders)
                except ServingError as e:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {key} of 'instances' list. Error: {e}"
                    ) from None
            if set(item) != set(names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{debug_string(item)} keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_named_object(item):
                raise invalid_argument(f"Expecting value/list but got object at item {index} of input list")
            try:
                _add_instance(names[0], item, input_dtypes, builders)
            except ServingError as e:
                raise invalid_argument(f"Failed to process element: {index} of 'instances' list. Error: {e}") from None
    return {name: batch.array(len(instances)) for name, batch in builders.items()}


class _Batch:
    """The instances of one named input collected so far, with the first instance's shape."""

    def __init__(self, dtype: int, shape: tuple[int, ...]):
        self.dtype = dtype
        self.shape = shape
        self.values: list = []

    def array(self, count: int) -> np.ndarray:
        return _make_array(self.values, (count, *self.shape), self.dtype)


def _add_instance(name: str, value: Any, input_dtypes: Mapping[str, int], builders: dict[str, _Batch]) -> None:
    # AddInstanceItem
    if name not in input_dtypes:
        raise invalid_argument(f"JSON object: does not have named input: {name}")
    dtype = input_dtypes[name]
    shape = _dense_shape(value)
    _check_rank(value, len(shape), MAX_RANK - 1)  # one more dimension for the batch
    values: list = []
    _fill(value, 0, shape, dtype, values)
    batch = builders.get(name)
    if batch is None:
        batch = builders[name] = _Batch(dtype, shape)
    elif math.prod(batch.shape) != len(values):
        raise invalid_argument(f"Expecting tensor size: {math.prod(batch.shape)} but got: {len(values)}")
    elif batch.shape != shape:
        raise invalid_argument(f"Expecting shape {shape_string(batch.shape)} but got: {shape_string(shape)}")
    batch.values.extend(values)


def _tensors_from_inputs(value: Any, input_dtypes: Mapping[str, int], has_bool_tokens: bool) -> dict[str, np.ndarray]:
    # FillTensorMapFromInputsMap
    if not _is_named_object(value):
        if len(input_dtypes) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required "
                "as per tensorinfo_map"
            )
        name = sorted(input_dtypes)[0]
        return {name: _json_tensor(value, input_dtypes[name], has_bool_tokens)}
    arrays = {}
    for name in sorted(input_dtypes):
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = _json_tensor(value[name], input_dtypes[name], has_bool_tokens)
    return arrays


def _json_tensor(value: Any, dtype: int, has_bool_tokens: bool) -> np.ndarray:
    array = _fast_array(value, dtype, has_bool_tokens)
    if array is not None:
        return array
    shape = _dense_shape(value)
    _check_rank(value, len(shape), MAX_RANK)
    values: list = []
    _fill(value, 0, shape, dtype, values)
    return _make_array(values, shape, dtype)


def _fast_array(value: Any, dtype: int, has_bool_tokens: bool) -> np.ndarray | None:
    """numpy conversion when it is provably what the reference would produce, else None."""
    if dtype == types_pb2.DT_STRING or (has_bool_tokens and dtype != types_pb2.DT_BOOL):
        return None
    try:
        array = _np_array(value)
    except (ValueError, OverflowError, TypeError):
        return None
    kind = array.dtype.kind
    if dtype == types_pb2.DT_BOOL:
        return array if kind == "b" else None
    if dtype in _FLOAT_DTYPES:
        if kind not in "iuf":
            return None
        with np.errstate(over="ignore"):
            return array.astype(_PROTO_FIELD[dtype][1], copy=False)
    int_range = _JSON_INT_RANGE.get(dtype)
    if int_range is None or kind not in "iu":
        return None
    if array.size and (array.min() < int_range[0] or array.max() > int_range[1]):
        return None
    return array.astype(_PROTO_FIELD[dtype][1], copy=False)


# np.array of a nested list is one C call: a long list is converted this many elements at a time.
_ARRAY_SLICE = 1 << 16


def _np_array(value: Any) -> np.ndarray:
    """``np.array(value)`` for a JSON value, a slice at a time when it is large. Raises ValueError when the
    slices disagree (ragged, or of types a single conversion would have mixed): the caller then takes the
    exact path."""
    if not isinstance(value, list) or not value or (len(value) <= 4096 and not isinstance(value[0], list)):
        return np.array(value)
    per_item = math.prod(_dense_shape(value[0]))
    if per_item * len(value) <= _ARRAY_SLICE:
        return np.array(value)
    if per_item >= _ARRAY_SLICE:
        parts = [_np_array(item)[np.newaxis] for item in value]
    else:
        step = _ARRAY_SLICE // max(per_item, 1)
        parts = []
        for i in range(0, len(value), step):
            if i:
                large_json.yield_gil()
            parts.append(np.array(value[i:i + step]))
    first = parts[0]
    for part in parts:
        if part.shape[1:] != first.shape[1:] or part.dtype.kind == "O":
            raise ValueError("ragged")
        if part.dtype != first.dtype and not {part.dtype.kind, first.dtype.kind} <= {"i", "f"}:
            raise ValueError("mixed types")
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _dense_shape(value: Any) -> tuple[int, ...]:
    # GetDenseTensorShape: the nesting of the first element at each level.
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _check_rank(value: Any, rank: int, max_rank: int) -> None:
    # Checked before _fill recurses: deep nesting is a 400, never a stack overflow (the reference's
    # limit is TensorShape's 254 dimensions; numpy's is 32).
    if rank > max_rank:
        raise invalid_argument(
            f"JSON Value: {debug_string(value)} is nested {rank} levels deep; a tensor here may have at most "
            f"{max_rank} dimensions"
        )


def _fill(value: Any, level: int, shape: tuple[int, ...], dtype: int, out: list) -> None:
    # FillTensorProto
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype != types_pb2.DT_STRING:
                raise _type_error(value, dtype)
            out.append(_decode_b64(value))
        else:
            out.append(_json_scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _json_scalar(value: Any, dtype: int) -> Any:
    # AddValueToTensor
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype in _FLOAT_DTYPES:
        if not is_number:
            raise _type_error(value, dtype)
        return _as_double(value)
    if dtype in _JSON_INT_RANGE:
        low, high = _JSON_INT_RANGE[dtype]
        if not (is_number and isinstance(value, int) and low <= value <= high):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8")
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise ServingError(
        Code.UNIMPLEMENTED, f"Conversion of JSON Value: {debug_string(value)} to type: {dtype_string(dtype)}"
    )


def _as_double(value: int | float) -> float:
    # rapidjson parses a JSON integer beyond uint64 as a double and refuses one beyond double range.
    try:
        return float(value)
    except OverflowError:
        raise invalid_argument("JSON Parse error: Number too big to be stored in double.") from None


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {debug_string(value)} Type: {json_type(value)} is not of expected type: {dtype_string(dtype)}"
    )


def _decode_b64(value: Any) -> bytes:
    if not _is_b64_object(value):
        raise invalid_argument(f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:
        # absl::Base64Unescape accepts the standard alphabet with or without padding.
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _make_array(values: list, shape: tuple[int, ...], dtype: int) -> np.ndarray:
    np_dtype = _PROTO_FIELD[dtype][1]
    if dtype == types_pb2.DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    if dtype in _JSON_INT_RANGE and dtype != types_pb2.DT_UINT64:
        # Narrow integer types wrap like the reference's static_cast from int_val.
        return np.array(values, dtype=np.int64).astype(np_dtype).reshape(shape)
    with np.errstate(over="ignore"):
        return np.array(values, dtype=np_dtype).reshape(shape)


def shape_string(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(size) for size in shape) + "]"


# ============================================================================================
# Classify/regress request JSON -> tf.Examples (FillClassifyRegressRequestFromJson, spec §2.6)


def examples_from_json(doc: dict, method: str) -> tuple[list[example_pb2.Example], example_pb2.Example | None]:
    """The examples (and optional context) of a REST classify/regress request."""
    context = None
    if "context" in doc:
        context = _example_from_json(doc["context"])
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {debug_string(doc)} When method is {method}, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
    return [_example_from_json(item) for item in examples], context


def _example_from_json(value: Any) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_pb2.Example()
    features = example.features.feature
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_to_feature(item, name, feature)
        features[name].CopyFrom(feature)
    return example


def _add_to_feature(value: Any, name: str, feature: feature_pb2.Feature) -> None:
    # AddValueToFeature. A JSON integer becomes int64, a JSON number with a fraction or exponent
    # float (rapidjson's Int vs Double); integers outside int64/uint64 parse as doubles there.
    if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64_object(value)):
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
    if isinstance(value, bool):
        _feature_list(feature, "int64_list", name).append(1 if value else 0)
    elif isinstance(value, dict):
        _feature_list(feature, "bytes_list", name).append(_decode_b64(value))
    elif isinstance(value, str):
        _feature_list(feature, "bytes_list", name).append(value.encode("utf-8"))
    elif isinstance(value, int) and _INT64[0] <= value <= _UINT64[1]:
        if value > _INT64[1]:
            raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        _feature_list(feature, "int64_list", name).append(value)
    else:
        _feature_list(feature, "float_list", name).append(_as_double(value))


_KIND_STRING = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _feature_list(feature: feature_pb2.Feature, kind: str, name: str):
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: {_KIND_STRING[current]}")
    return getattr(feature, kind).value


# ============================================================================================
# Responses -> JSON (MakeJsonFromTensors and friends)


def predict_response_json(outputs: Mapping[str, np.ndarray], request_format: str) -> bytes:
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if request_format == ROW:
        batch_size = -1
        for name in names:
            array = outputs[name]
            if array.ndim == 0:
                raise invalid_argument(f"Tensor name: {name} has no shape information ")
            if batch_size >= 0 and array.shape[0] != batch_size:
                raise invalid_argument(
                    f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch_size}"
                )
            batch_size = array.shape[0]
        encoded = {name: _jsonable(name, outputs[name]) for name in names}
        if len(names) == 1:
            body: Any = encoded[names[0]]
        else:
            body = [{name: encoded[name][row] for name in names} for row in range(batch_size)]
        return _dumps({"predictions": body}, outputs.values())
    encoded = {name: _jsonable(name, outputs[name]) for name in names}
    body = encoded[names[0]] if len(names) == 1 else encoded
    return _dumps({"outputs": body}, outputs.values())


def classify_response_json(classifications: list[list[tuple[str, np.float32]]]) -> bytes:
    if not classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    results = [[[label, score] for label, score in classes] for classes in classifications]
    scores = [np.array([score for classes in classifications for _, score in classes], dtype=np.float32)]
    return _dumps({"results": results}, scores)


def regress_response_json(values: np.ndarray) -> bytes:
    if values.size == 0:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return _dumps({"results": values}, [values])


def error_json(message: str) -> bytes:
    return orjson.dumps({"error": message})


# AddSingleValueAndAdvance writes only these dtypes.
_JSON_WRITABLE = {
    types_pb2.DT_FLOAT,
    types_pb2.DT_DOUBLE,
    types_pb2.DT_INT32,
    types_pb2.DT_INT16,
    types_pb2.DT_INT8,
    types_pb2.DT_UINT8,
    types_pb2.DT_STRING,
    types_pb2.DT_INT64,
    types_pb2.DT_BOOL,
    types_pb2.DT_UINT32,
    types_pb2.DT_UINT64,
}


def _jsonable(name: str, array: np.ndarray) -> Any:
    """An array in a form orjson writes as the reference does (strings decoded or base64)."""
    dtype = dtype_of_array(array)
    if dtype not in _JSON_WRITABLE:
        raise invalid_argument(f"Failed to write JSON value for tensor type: {dtype_string(dtype)}")
    if dtype != types_pb2.DT_STRING:
        array = np.asarray(array)
        # orjson writes C-contiguous arrays and numpy scalars (which keep float32 short).
        return array[()] if array.ndim == 0 else np.ascontiguousarray(array)
    # JSON text must be Unicode: `*_bytes` outputs are base64 objects; elsewhere undecodable bytes become U+FFFD
    # (the reference writes them raw).
    convert = _as_b64_object if name.endswith("_bytes") else _as_text
    return _map_nested(array.tolist(), convert)


def _as_b64_object(value: Any) -> dict[str, str]:
    return {"b64": base64.b64encode(_as_bytes(value)).decode("ascii")}


def _as_text(value: Any) -> str:
    return _as_bytes(value).decode("utf-8", "replace")


def _map_nested(value: Any, convert) -> Any:
    if isinstance(value, list):
        return [_map_nested(item, convert) for item in value]
    return convert(value)


_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def _dumps(document: Any, arrays) -> bytes:
    arrays = list(arrays)
    if all(_all_finite(a) for a in arrays):
        if sum(a.nbytes for a in arrays) > large_json.MAX_PIECE:  # in chunks, never one long call
            return large_json.dumps_large(document, _ORJSON_OPTIONS)
        return orjson.dumps(document, option=_ORJSON_OPTIONS)
    # orjson writes NaN/Infinity as null; the reference writes the bare tokens (spec §2.2).
    return _dumps_non_finite(document).encode("utf-8")


def _all_finite(array: np.ndarray) -> bool:
    return array.dtype.kind != "f" or bool(np.isfinite(array).all())


def _dumps_non_finite(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dumps_non_finite(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps_non_finite(v) for v in value) + "]"
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _dumps_non_finite(value[()])
        return "[" + ",".join(_dumps_non_finite(v) for v in value) + "]"
    if isinstance(value, (np.floating, float)):
        return _format_float(float(value), np.float32 if isinstance(value, np.float32) else np.float64)
    if isinstance(value, np.generic):
        return json.dumps(value.item())
    return json.dumps(value)


def _format_float(value: float, np_type) -> str:
    """``WriteDecimal``: 6 significant digits if they round-trip, else full precision; NaN/Infinity bare."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    if np_type(text) != np_type(value):
        text = ("%.9g" if np_type is np.float32 else "%.17g") % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text
