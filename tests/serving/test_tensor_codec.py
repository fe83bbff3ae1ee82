"""JSON and TensorProto encodings (spec §2.2, §2.5, §2.6, §3.3), against util/json_tensor_test.cc."""
import base64
import json
import struct

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from serving import tensor_codec, wire
from serving.errors import Code, ServingError

FLOAT = {"x": types_pb2.DT_FLOAT}


def error(callable_, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as info:
        callable_(*args, **kwargs)
    return info.value


def inputs(doc, dtypes=FLOAT, **kwargs):
    return tensor_codec.predict_inputs_from_json(doc, dtypes, **kwargs)


# ---------------------------------------------------------------------------------- JSON parsing


def test_parse_accepts_nan_infinity_and_trailing_bytes():
    doc = tensor_codec.parse_json_object(b'{"instances": [NaN, Infinity, -Infinity, Inf, -Inf]}X')
    assert np.isnan(doc["instances"][0])
    assert doc["instances"][1:] == [np.inf, -np.inf, np.inf, -np.inf]
    parsed = tensor_codec.parse_json_object(b'{"instances": [[1,2],[3,4],[5,6]]}X')
    assert parsed == {"instances": [[1, 2], [3, 4], [5, 6]]}


@pytest.mark.parametrize("body, message", [
    (b"", "JSON Parse error: The document is empty"),
    (b"instances = [1, 2]", "JSON Parse error: Invalid value. at offset: 0"),
    (b'{"instances": [1e999]}', "JSON Parse error: Number too big to be stored in double."),  # not infinity
    (b'{"a": 1,}', "JSON Parse error: Missing a name for object member. at offset: 8"),
    (b'{"a" 1}', "JSON Parse error: Missing a colon after a name of object member."),
    (b'{"a": [1 2]}', "JSON Parse error: Missing a comma or ']' after an array element."),
    (b'{"a": 1 "b": 2}', "JSON Parse error: Missing a comma or '}' after an object member."),
    (b'{"a": "x', "JSON Parse error: Missing a closing quotation mark in string."),
    (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
    (b"\xff", "JSON Parse error: Invalid encoding in string."),
])
def test_parse_errors(body, message):
    e = error(tensor_codec.parse_json_object, body)
    assert e.code == Code.INVALID_ARGUMENT
    assert message in e.message


# ---------------------------------------------------------------------------------- predict inputs


def test_row_and_columnar_formats():
    arrays, fmt = inputs({"instances": [2.0, 3.0, 4.0]})
    assert fmt == tensor_codec.ROW and arrays["x"].dtype == np.float32 and arrays["x"].tolist() == [2, 3, 4]
    arrays, fmt = inputs({"inputs": [[1, 2], [3, 4]]})
    assert fmt == tensor_codec.COLUMNAR and arrays["x"].shape == (2, 2) and arrays["x"].dtype == np.float32
    arrays, _ = inputs({"inputs": 2.0})
    assert arrays["x"].shape == ()


def test_named_instances_build_batched_tensors():
    dtypes = {"a": types_pb2.DT_INT64, "b": types_pb2.DT_STRING}
    arrays, _ = inputs({"instances": [{"a": [1, 2], "b": "x"}, {"a": [3, 4], "b": {"b64": "eQ=="}}]}, dtypes)
    assert arrays["a"].tolist() == [[1, 2], [3, 4]] and arrays["a"].dtype == np.int64
    assert arrays["b"].tolist() == [b"x", b"y"]


def test_bool_tokens_are_checked_even_when_numpy_would_accept_them():
    e = error(inputs, {"instances": [1.0, True]}, has_bool_tokens=True)
    assert "JSON Value: true Type: True is not of expected type: float" in e.message
    arrays, _ = inputs({"instances": [True, False]}, {"x": types_pb2.DT_BOOL})
    assert arrays["x"].tolist() == [True, False]


@pytest.mark.parametrize("doc, dtypes, message", [
    ({"instances": ["x", "y"]}, FLOAT, 'JSON Value: "x" Type: String is not of expected type: float'),
    ({"instances": [1.5]}, {"x": types_pb2.DT_INT32}, "JSON Value: 1.5 Type: Number is not of expected type: int32"),
    ({"instances": [2**31]}, {"x": types_pb2.DT_INT32}, "is not of expected type: int32"),
    ({"instances": [1]}, {"x": types_pb2.DT_BOOL}, "is not of expected type: bool"),
    ({"instances": [1.0]}, {"x": types_pb2.DT_HALF}, "Conversion of JSON Value: 1.0 to type: half"),
    ({"instances": [[1.0], [1.0, 2.0]]}, FLOAT, "Expecting tensor size: 1 but got: 2"),
    ({"instances": [[1.0, 2.0], [[1.0], [2.0]]]}, FLOAT, "Expecting shape [2] but got: [2,1]"),
    ({"instances": [[1.0, [2.0]]]}, FLOAT, "Encountered list at unexpected level: 1 expected < 1"),
    ({"instances": [[[1.0], 2.0]]}, FLOAT,
     "JSON Value: 2.0 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ({"instances": [[[1.0], [2.0, 3.0]]]}, FLOAT,
     "Encountered list at unexpected size: 2 at level: 1 expected size: 1"),
    ({"instances": [{"z": 1.0}]}, FLOAT,
     "Failed to process element: 0 key: z of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not "
     "have named input: z"),
    ({"instances": [{"x": 1.0}, 2.0]}, FLOAT, "Expecting object but got list at item 1 of input list"),
    ({"instances": [2.0, {"x": 1.0}]}, FLOAT, "Expecting value/list but got object at item 1 of input list"),
    ({"instances": [1.0]}, {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_FLOAT},
     "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
     "tensorinfo_map"),
    ({"instances": [{"a": 1.0}]}, {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_FLOAT}, "keys must be equal to: a,b"),
    ({"inputs": [1.0]}, {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_FLOAT}, "inputs is a plain value/list"),
    ({"inputs": {"a": 1.0}}, {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_FLOAT},
     "Missing named input: b in 'inputs' object."),
    ({"instances": [{"b64": "!!"}]}, {"x": types_pb2.DT_STRING}, "Unable to base64 decode"),
    ({"inputs": [{"b64": 1}]}, {"x": types_pb2.DT_STRING},
     'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data'),
    ({"instances": 1.0}, FLOAT, "Expecting 'instances' to be an list/array"),
    ({"instances": []}, FLOAT, "No values in 'instances' array"),
    ({"instances": [1.0], "inputs": [1.0]}, FLOAT,
     "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"),
    ({"signature_name": "x"}, FLOAT, "Missing 'inputs' or 'instances' key"),
])
def test_predict_input_errors(doc, dtypes, message):
    e = error(inputs, doc, dtypes)
    assert message in e.message
    assert e.code in (Code.INVALID_ARGUMENT, Code.UNIMPLEMENTED)


def test_signature_name_must_be_a_string():
    assert tensor_codec.signature_name_from_json({}) == ""
    e = error(tensor_codec.signature_name_from_json, {"signature_name": 1})
    assert "'signature_name' key must be a string value." in e.message


def test_debug_string_is_truncated():
    assert len(tensor_codec.debug_string({"instances": list(range(1000))})) == 256


# ---------------------------------------------------------------------------------- examples


def test_examples_from_json_feature_kinds():
    examples, context = tensor_codec.examples_from_json(
        {"context": {"c": "s"}, "examples": [{"f": 2.0, "i": 2, "b": True, "s": ["a", {"b64": "Yg=="}], "e": []}]},
        "classify")
    features = examples[0].features.feature
    assert features["f"].float_list.value == [2.0]
    assert features["i"].int64_list.value == [2]
    assert features["b"].int64_list.value == [1]
    assert features["s"].bytes_list.value == [b"a", b"b"]
    assert features["e"].WhichOneof("kind") is None
    assert context.features.feature["c"].bytes_list.value == [b"s"]


@pytest.mark.parametrize("doc, message", [
    ({"examples": [{"names": None}]}, "names has element with unexpected JSON type: Null"),
    ({"examples": [{"names": {"a": 1}}]}, "names has element with unexpected JSON type: Object"),
    ({"examples": [{"names": [[1]]}]}, "names has element with unexpected JSON type: Array"),
    ({"examples": [{"names": [1, "a"]}]}, "Unexpected element type in feature: names expecting type: int64"),
    ({"examples": [{"names": 2**63}]}, "Only int64_t is supported"),
    ({"examples": [[1]]}, "Example must be JSON object but got JSON Array"),
    ({}, "When method is regress, key 'examples' is expected and was not found"),
    ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
    ({"examples": []}, "'examples' value is an empty array"),
])
def test_example_errors(doc, message):
    assert message in error(tensor_codec.examples_from_json, doc, "regress").message


# ---------------------------------------------------------------------------------- responses


def test_predict_response_row_and_columnar():
    y = np.array([3.0, 3.5], dtype=np.float32)
    assert json.loads(tensor_codec.predict_response_json({"y": y}, tensor_codec.ROW)) == {"predictions": [3.0, 3.5]}
    both = {"y": y, "z_bytes": np.array([b"\x00", b"a"], dtype=object), "s": np.array([b"t", b"u"], dtype=object)}
    assert json.loads(tensor_codec.predict_response_json(both, tensor_codec.ROW)) == {"predictions": [
        {"s": "t", "y": 3.0, "z_bytes": {"b64": "AA=="}}, {"s": "u", "y": 3.5, "z_bytes": {"b64": "YQ=="}}]}
    assert json.loads(tensor_codec.predict_response_json({"y": np.float32(2.5)}, tensor_codec.COLUMNAR)) == {
        "outputs": 2.5}


def test_float32_output_is_not_widened():
    body = tensor_codec.predict_response_json({"y": np.array([0.1], np.float32)}, tensor_codec.COLUMNAR)
    assert body == b'{"outputs":[0.1]}'


def test_non_finite_outputs_use_bare_tokens():
    body = tensor_codec.predict_response_json({"y": np.array([np.nan, np.inf, -np.inf, 0.1], np.float32)},
                                              tensor_codec.ROW).decode()
    assert body == '{"predictions":[NaN,Infinity,-Infinity,0.1]}'
    assert json.loads(body)["predictions"][3] == 0.1


@pytest.mark.parametrize("outputs, message", [
    ({"y": np.float32(1)}, "Tensor name: y has no shape information "),
    ({"a": np.zeros(2), "b": np.zeros(3)}, "Tensor name: b has inconsistent batch size: 3 expecting: 2"),
    ({"y": np.zeros(2, np.complex64)}, "Failed to write JSON value for tensor type: complex64"),
    ({"y": np.zeros(2, np.float16)}, "Failed to write JSON value for tensor type: half"),
])
def test_predict_response_errors(outputs, message):
    assert message in error(tensor_codec.predict_response_json, outputs, tensor_codec.ROW).message


def test_classify_and_regress_results():
    assert json.loads(tensor_codec.classify_response_json([[("", np.float32(3.0))]])) == {"results": [[["", 3.0]]]}
    assert json.loads(tensor_codec.regress_response_json(np.array([3.0, 0.1], np.float32))) == {"results": [3.0, 0.1]}
    assert "empty ClassificationResults" in error(tensor_codec.classify_response_json, []).message
    assert "empty RegressionResults" in error(tensor_codec.regress_response_json, np.array([], np.float32)).message


def test_error_json_escapes():
    assert json.loads(tensor_codec.error_json('Bad key: "key"')) == {"error": 'Bad key: "key"'}


# ---------------------------------------------------------------------------------- TensorProto


@pytest.mark.parametrize("value", [
    np.array([[1.5, 2.5]], np.float32), np.array([1, 2], np.int64), np.array([True]), np.array([b"a", b"bc"], object),
    np.array([1.5], np.float16), np.array([3], np.uint8), np.array(7.0, np.float64), np.array([1 + 2j], np.complex64),
])
def test_tensor_proto_round_trip_matches_tensorflow(value):
    proto = tf.make_tensor_proto(value)
    np.testing.assert_array_equal(tensor_codec.array_from_proto(proto), value)
    out = tf.make_tensor_proto([0])
    out.Clear()
    tensor_codec.fill_proto(out, value)
    assert not out.tensor_content or value.dtype == object
    np.testing.assert_array_equal(tf.make_ndarray(out), value)


LARGE = 200_003  # more than one conversion chunk: the packed-wire and chunked paths


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128, np.int32, np.int64, np.uint8,
                                   np.int8, np.int16, np.uint16, np.uint32, np.uint64, np.float16, np.bool_, object,
                                   tf.bfloat16.as_numpy_dtype])
def test_large_typed_value_fields_round_trip(dtype):
    rng = np.random.default_rng(0)
    if dtype is object:
        value = np.array([bytes([i % 256]) * (i % 5) for i in range(LARGE)], object)
    else:
        value = (rng.random(LARGE) * 200 - 100) * (rng.random(LARGE) + 1j if np.dtype(dtype).kind == "c" else 1)
        value = np.abs(value).astype(dtype) if np.dtype(dtype).kind in "ub" else value.astype(dtype)
    out = tf.make_tensor_proto([0])
    out.Clear()
    tensor_codec.fill_proto(out, value.reshape(1, LARGE))
    assert not out.tensor_content
    np.testing.assert_array_equal(tf.make_ndarray(out), value.reshape(1, LARGE))  # what TensorFlow reads
    decoded = tensor_codec.array_from_proto(out)
    assert decoded.dtype == value.dtype and decoded.shape == (1, LARGE)
    np.testing.assert_array_equal(decoded.ravel(), value)
    if dtype is not object:  # a short list in the same encoding still repeats its last value
        del out.tensor_shape.dim[:]
        out.tensor_shape.dim.add(size=LARGE + 7)
        np.testing.assert_array_equal(tensor_codec.array_from_proto(out)[-8:], np.repeat(value[-1:], 8))


def test_implied_values_are_limited_before_allocating():
    ok = tensor_codec.array_from_proto(tf.make_tensor_proto(1.0, shape=[tensor_codec.MAX_IMPLIED_BYTES // 4]))
    assert ok.shape == (tensor_codec.MAX_IMPLIED_BYTES // 4,) and ok.min() == 1.0
    with pytest.raises(tensor_codec.ImpliedValuesTooLarge, match=r"shape \[60000000\] holds 60000000 values"):
        tensor_codec.array_from_proto(tf.make_tensor_proto(1.0, shape=[60_000_000]))
    with pytest.raises(tensor_codec.ImpliedValuesTooLarge):  # a string's length counts
        tensor_codec.array_from_proto(tf.make_tensor_proto(b"x" * 4096, shape=[300]))
    big_default = tensor_codec.array_from_proto(tf.make_tensor_proto(0, shape=[1 << 20]), max_implied_bytes=None)
    assert big_default.size == 1 << 20  # a model's own defaults are trusted


def test_short_value_lists_repeat_the_last_value():
    proto = tf.make_tensor_proto([1.0], shape=[1])
    proto.tensor_shape.dim[0].size = 3
    assert tensor_codec.array_from_proto(proto).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("mutate", [
    lambda p: p.float_val.extend([1.0, 2.0, 3.0]),
    lambda p: setattr(p.tensor_shape.dim[0], "size", -1),
    lambda p: setattr(p, "dtype", types_pb2.DT_RESOURCE),
    lambda p: setattr(p, "tensor_content", b"abc"),
])
def test_invalid_tensor_protos_are_refused(mutate):
    proto = tf.make_tensor_proto([1.0], shape=[1])
    mutate(proto)
    with pytest.raises(ValueError):
        tensor_codec.array_from_proto(proto)


def test_b64_output_is_standard_padded_base64():
    body = tensor_codec.predict_response_json({"out_bytes": np.array([b"\xff\xfe"], object)}, tensor_codec.ROW)
    assert json.loads(body)["predictions"][0]["b64"] == base64.b64encode(b"\xff\xfe").decode()


# ---------------------------------------------------------------------------------- wire level (serving.wire)


def _unpacked(number: int, values, fmt: str) -> bytes:
    """``values`` as one field occurrence each (the unpacked encoding protobuf parsers also accept)."""
    return b"".join(wire.varint(number << 3 | (5 if fmt == "<f" else 1)) + struct.pack(fmt, v) for v in values)


@st.composite
def predict_request_bytes(draw):
    """A serialized PredictRequest as a client may send it: any dtype and encoding, repeated keys and fields."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = draw(st.text(max_size=5))
    request.output_filter.extend(draw(st.lists(st.text(max_size=3), max_size=2)))
    parts = [request.SerializeToString()]
    for _ in range(draw(st.integers(0, 4))):
        alias = draw(st.sampled_from(["x", "y", "é", ""]))
        dtype = draw(st.sampled_from([np.float32, np.float64, np.complex64, np.int32, np.int64, object, np.bool_]))
        count = draw(st.integers(0, 40))
        values = np.array(draw(st.lists(st.integers(-5, 5), min_size=count, max_size=count)))
        array = values.astype(bytes).astype(object) if dtype is object else values.astype(dtype)
        tensor = tf.make_tensor_proto(array)
        if draw(st.booleans()) and dtype is not object:  # typed values rather than tensor_content
            tensor = tensor_pb2.TensorProto()
            tensor_codec.fill_proto(tensor, array)
        data = tensor.SerializeToString()
        if dtype in (np.float32, np.float64) and count and draw(st.booleans()):  # an unpacked occurrence too
            data += _unpacked(5 if dtype == np.float32 else 6, [1.5], "<f" if dtype == np.float32 else "<d")
        if draw(st.booleans()):  # the value split in two occurrences, which protobuf merges
            cut = draw(st.integers(0, len(data)))
            try:
                tensor_pb2.TensorProto.FromString(data[:cut])
                tensor_pb2.TensorProto.FromString(data[cut:])
                value = wire.len_field(2, data[:cut]) + wire.len_field(2, data[cut:])
            except Exception:
                value = wire.len_field(2, data)
        else:
            value = wire.len_field(2, data)
        parts.append(wire.len_field(2, wire.len_field(1, alias.encode()) + value))
    if draw(st.booleans()):
        parts.append(wire.len_field(1, b"\x1a\x01s"))  # a second model_spec occurrence: merged (signature "s")
    return b"".join(draw(st.permutations(parts)))


@settings(max_examples=300, deadline=None)
@given(predict_request_bytes())
def test_large_predict_requests_read_from_their_bytes_as_protobuf_reads_them(data):
    expected = predict_pb2.PredictRequest.FromString(data)
    head, inputs = wire.split_predict_request(data)
    assert head.model_spec == expected.model_spec and list(head.output_filter) == list(expected.output_filter)
    assert sorted(inputs) == sorted(expected.inputs)
    for alias, proto in expected.inputs.items():
        try:
            want = tensor_codec.array_from_proto(proto)
        except ValueError as e:
            with pytest.raises(type(e)):
                tensor_codec.array_from_proto(inputs[alias])
            continue
        got = tensor_codec.array_from_proto(inputs[alias])
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [b"\x12\xff\xff\xff\xff\x0f", b"\x12\x05\x0a\x01x\x12", b"\x0a\x80",
                                 wire.len_field(2, wire.len_field(2, b"\x2a\x03abc"))])
def test_malformed_large_requests_are_refused_by_the_wire_reader(bad):
    with pytest.raises((ValueError, DecodeError)):
        wire.split_predict_request(bad)


@pytest.mark.parametrize("as_tensor_content", [False, True])
def test_large_responses_written_as_bytes_parse_as_the_message_would(as_tensor_content):
    outputs = {"y": np.arange(100_000, dtype=np.float32).reshape(10, -1), "z": np.array([b"a", b""], object),
               "c": np.array([1 + 2j], np.complex64), "i": np.array([-3, 4], np.int64), "e": np.zeros((0, 3))}
    head = predict_pb2.PredictResponse()
    head.model_spec.name = "m"
    data = wire.predict_response_bytes(head, {alias: tensor_codec.serialized_tensor_proto(array, as_tensor_content)
                                              for alias, array in outputs.items()})
    expected = predict_pb2.PredictResponse()
    expected.model_spec.name = "m"
    for alias, array in outputs.items():
        tensor_codec.fill_proto(expected.outputs[alias], array, as_tensor_content)
    assert predict_pb2.PredictResponse.FromString(data) == expected
