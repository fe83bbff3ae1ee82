"""REST conformance against the spec (§2) and TF Serving's own tests, on a real server process.

Expected values come from ``tensorflow_model_server_test.py``, ``http_rest_api_handler_test.cc`` and
the error catalogue (spec §2.7). After every test the server must still answer a predict.
"""
import gzip
import json

import pytest
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rest(conformance_server):
    yield conformance_server.rest
    # The server keeps serving after whatever the test sent.
    check = conformance_server.rest.post("/v1/models/default:predict", {"instances": [2.0]})
    assert (check.status, check.json()) == (200, {"predictions": [3.0]})


def ok(response):
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/json"
    return response.json()


def fails(response, status, message):
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    assert message in body["error"], body["error"]


# ------------------------------------------------------------------------------------- predict


@pytest.mark.parametrize("body, expected", [
    ({"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),  # testPredictREST
    ({"inputs": [2.0, 3.0, 4.0]}, {"outputs": [3.0, 3.5, 4.0]}),  # testPredictColumnarREST
    ({"instances": [[1.0, 2.0], [3.0, 4.0]]}, {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
    ({"signature_name": "serving_default", "instances": [3.0, 4.0]}, {"predictions": [3.5, 4.0]}),
    ({"signature_name": "serving_default", "inputs": [3.0, 4.0]}, {"outputs": [3.5, 4.0]}),
    ({"instances": [2, 3]}, {"predictions": [3.0, 3.5]}),  # integers are fine for a float input
    ({"instances": [[2.0]]}, {"predictions": [[3.0]]}),
    ({"inputs": 2.0}, {"outputs": 3.0}),  # a bare scalar is a rank-0 tensor
    ({"instances": [{"x": 2.0}, {"x": 4.0}]}, {"predictions": [3.0, 4.0]}),
    ({"inputs": {"x": [2.0]}}, {"outputs": [3.0]}),
    ({"signature_name": "regress_x2_to_y3", "instances": [1.0]}, {"predictions": [3.5]}),
    ({"instances": [2.0], "unknown_key": 1}, {"predictions": [3.0]}),
])
def test_predict(rest, body, expected):
    assert ok(rest.post("/v1/models/default:predict", body)) == expected


@pytest.mark.parametrize("body, expected", [
    ({"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),
    ({"instances": [[1.0, 2.0], [3.0, 4.0]]}, {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
    ({"inputs": 2.0}, {"outputs": 3.0}),
])
def test_shapes_are_not_checked_against_the_signature(rest, body, expected):
    """The input is declared [-1, 1]; like the reference, other shapes reach the graph (spec §2.5)."""
    assert ok(rest.post("/v1/models/static_shape:predict", body)) == expected


def test_predict_accepts_nan_infinity_and_trailing_bytes(rest):
    response = rest.post("/v1/models/default:predict", b'{"instances": [NaN, Infinity, -Infinity, 2.0]}X')
    assert b"NaN" in response.body and b"-Infinity" in response.body
    predictions = ok(response)["predictions"]
    assert predictions[0] != predictions[0] and predictions[1:] == [float("inf"), float("-inf"), 3.0]


def test_predict_percent_encoded_name_case_insensitive_path_and_gzip_body(rest):
    assert ok(rest.post("/v1/models/de%66ault:predict", {"instances": [2.0]})) == {"predictions": [3.0]}
    assert ok(rest.post("/V1/MODELS/default:predict", {"instances": [2.0]})) == {"predictions": [3.0]}
    body = gzip.compress(json.dumps({"instances": [2.0]}).encode())
    response = rest.post("/v1/models/default:predict", body, headers={"Content-Encoding": "gzip"})
    assert ok(response) == {"predictions": [3.0]}


def test_versions_and_labels(rest):
    assert ok(rest.post("/v1/models/two_versions:predict", {"instances": [2.0]})) == {"predictions": [4.0]}
    assert ok(rest.post("/v1/models/two_versions/versions/123:predict", {"instances": [2.0]})) == {"predictions": [3.0]}
    assert ok(rest.post("/v1/models/two_versions/versions/124:predict", {"instances": [2.0]})) == {"predictions": [4.0]}
    assert ok(rest.post("/v1/models/two_versions/labels/stable:predict", {"instances": [2.0]})) == {
        "predictions": [3.0]}


# ------------------------------------------------------------------------------------- classify, regress


@pytest.mark.parametrize("verb, body, expected", [
    ("classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}, {"results": [[["", 3.0]]]}),
    ("regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}, {"results": [3.0]}),
    ("regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}, {"results": [42.0]}),
    ("regress", {"signature_name": "regress_x_to_y2", "examples": [{"x": 2.0}]}, {"results": [4.0]}),
    ("classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 10.0}, {"x": 2.0}]},
     {"results": [[["", 7.0]], [["", 3.0]]]}),
    ("regress", {"signature_name": "regress_x_to_y", "context": {"x2": 9.0}, "examples": [{"x": 2.0}]},
     {"results": [3.0]}),
])
def test_classify_and_regress(rest, verb, body, expected):
    assert ok(rest.post(f"/v1/models/default:{verb}", body)) == expected


def test_classify_via_version_and_label(rest):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}
    assert ok(rest.post("/v1/models/two_versions/labels/stable:classify", body)) == {"results": [[["", 12.0]]]}
    assert ok(rest.post("/v1/models/two_versions/versions/124:classify", body)) == {"results": [[["", 13.0]]]}


# ------------------------------------------------------------------------------------- status, metadata


def test_status_is_exactly_the_reference_json(rest):  # testGetStatusREST
    assert ok(rest.get("/v1/models/default")) == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def test_status_lists_versions_highest_first_and_ignores_labels(rest):
    versions = [s["version"] for s in ok(rest.get("/v1/models/two_versions"))["model_version_status"]]
    assert versions == ["124", "123"]
    one = ok(rest.get("/v1/models/two_versions/versions/123"))["model_version_status"]
    assert [s["version"] for s in one] == ["123"]
    assert ok(rest.get("/v1/models/two_versions/labels/no_such_label")) == ok(rest.get("/v1/models/two_versions"))


def _sorted(value):
    """The official test compares metadata after recursively sorting lists and dicts."""
    if isinstance(value, dict):
        return {k: _sorted(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return sorted((_sorted(v) for v in value), key=json.dumps)
    return value


def test_metadata_matches_the_saved_model(rest, saved_half_plus_two):  # testGetModelMetadataREST
    saved = saved_model_pb2.SavedModel.FromString(open(f"{saved_half_plus_two[2.0]}/saved_model.pb", "rb").read())
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in saved.meta_graphs[0].signature_def.items():
        signature_map.signature_def[key].CopyFrom(signature)
    expected = {
        "model_spec": {"name": "default", "signature_name": "", "version": "123"},
        "metadata": {"signature_def": json_format.MessageToDict(
            signature_map, preserving_proto_field_name=True, including_default_value_fields=True)},
    }
    body = ok(rest.get("/v1/models/default/metadata"))
    assert _sorted(body) == _sorted(expected)
    predict = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert predict["inputs"]["x"]["dtype"] == "DT_FLOAT" and predict["defaults"] == {}


def test_metadata_of_a_version(rest):
    assert ok(rest.get("/v1/models/two_versions/versions/123/metadata"))["model_spec"]["version"] == "123"
    assert ok(rest.get("/v1/models/two_versions/labels/stable/metadata"))["model_spec"]["version"] == "123"
    assert ok(rest.get("/v1/models/two_versions/metadata"))["model_spec"]["version"] == "124"


# ------------------------------------------------------------------------------------- errors (spec §2.7)


@pytest.mark.parametrize("method, path, body, status, message", [
    # E1-E5: models, versions, labels
    ("POST", "/v1/models/missing:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Latest(missing)"),
    ("POST", "/v1/models/missing:classify", {"examples": [{"x": 1.0}]}, 404,
     "Servable not found for request: Latest(missing)"),
    ("POST", "/v1/models/missing:regress", {"examples": [{"x": 1.0}]}, 404,
     "Servable not found for request: Latest(missing)"),
    ("GET", "/v1/models/missing/metadata", None, 404, "Servable not found for request: Latest(missing)"),
    ("POST", "/v1/models/default/versions/7:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Specific(default, 7)"),
    ("GET", "/v1/models/default/versions/7/metadata", None, 404,
     "Servable not found for request: Specific(default, 7)"),
    ("GET", "/v1/models/missing", None, 404, "Could not find any versions of model missing"),
    ("GET", "/v1/models/default/versions/7", None, 404, "Could not find version 7 of model default"),
    ("POST", "/v1/models/default/labels/nope:predict", {"instances": [1.0]}, 400,
     "Unrecognized servable version label: nope"),
    ("GET", "/v1/models/default/labels/nope/metadata", None, 400, "Unrecognized servable version label: nope"),
    # E6-E16: bodies
    ("POST", "/v1/models/default:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/default:predict", b"instances = [1, 2]", 400, "JSON Parse error: Invalid value. at offset: 0"),
    ("POST", "/v1/models/missing:predict", b"{", 400, "JSON Parse error"),  # body errors before the model lookup
    ("POST", "/v1/models/default:predict", b"[2.0]", 400, "Is not object"),
    ("POST", "/v1/models/default:predict", {"signature_name": "serving_default"}, 400,
     "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/default:predict", {"instances": [1.0], "inputs": [1.0]}, 400,
     "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"),
    ("POST", "/v1/models/default:predict", {"inputs": {"z": [1.0]}}, 400, "Missing named input: x in 'inputs' object."),
    ("POST", "/v1/models/default:predict", {"instances": [{"z": 1.0}]}, 400,
     "Failed to process element: 0 key: z of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not have "
     "named input: z"),
    ("POST", "/v1/models/default:predict", {"instances": ["x", "y"]}, 400, "not of expected type: float"),
    ("POST", "/v1/models/default:predict", {"instances": [True]}, 400, "Type: True is not of expected type: float"),
    ("POST", "/v1/models/default:predict", {"instances": [[1.0], [1.0, 2.0]]}, 400,
     "Expecting tensor size: 1 but got: 2"),
    ("POST", "/v1/models/default:predict", {"instances": "x"}, 400, "Expecting 'instances' to be an list/array"),
    ("POST", "/v1/models/default:predict", {"instances": []}, 400, "No values in 'instances' array"),
    ("POST", "/v1/models/default:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("POST", "/v1/models/default:classify", {"signature_name": "nope", "examples": [{"x": 1.0}]}, 400,
     "No signature was found with the name: nope"),
    ("POST", "/v1/models/default:regress", {"signature_name": "nope", "examples": [{"x": 1.0}]}, 400,
     "No signature was found with the name: nope"),
    ("POST", "/v1/models/default:predict", {"signature_name": 1, "instances": [1.0]}, 400,
     "'signature_name' key must be a string value."),
    # E17-E19: paths
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("POST", "/v1/models/default/versions/18446744073709551615:predict", {"instances": [1.0]}, 400,
     "Failed to convert version: 18446744073709551615 to numeric."),
    ("POST", "/v1/models/default:Predict", {"instances": [1.0]}, 400,
     "Malformed request: POST /v1/models/default:Predict"),
    # E20 and classify/regress specifics
    ("POST", "/v1/models/default:classify", {"signature_name": "classify_x_to_y"}, 400,
     "When method is classify, key 'examples' is expected and was not found"),
    ("POST", "/v1/models/default:classify", {"examples": [{"x": 1.0}]}, 400,
     "No classification inputs found in SignatureDef"),
    ("POST", "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2}]}, 400,
     "Data types don't match"),
    ("POST", "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"y": 2.0}]}, 400,
     "Feature: x (data type: float) is required but could not be found"),
    ("POST", "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": None}]}, 400,
     "Feature: x has element with unexpected JSON type: Null"),
    ("POST", "/v1/models/default:classify", {"signature_name": "classify_x_to_y", "examples": [[2.0]]}, 400,
     "Example must be JSON object but got JSON Array"),
])
def test_errors(rest, method, path, body, status, message):
    fails(rest.request(method, path, body), status, message)


@pytest.mark.parametrize("method, path", [
    # http_rest_api_handler_test.cc UnsupportedApiCalls, trailing slashes, other methods
    ("GET", "/v1/foo"), ("POST", "/v1/foo"), ("POST", "/v1/models"), ("GET", "/v1/models/foo:predict"),
    ("GET", "/v1/models/foo/version/50:predict"), ("POST", "/v1/models/foo/version/50:regress"),
    ("POST", "/v1/models/foo/versions/HELLO:regress"), ("POST", "/v1/models/foo/metadata"),
    ("POST", "/v1/models/foo/label/some_label:regress"), ("POST",
     "/v1/models/foo/versions/50/labels/some_label:regress"),
    ("POST", "/v1/models/foo/versions/some_label:regress"), ("GET", "/v1/models/debug/model_name"),
    ("GET", "/v1/models/default/"), ("PUT", "/v1/models/default:predict"), ("DELETE", "/v1/models/default"),
    ("PATCH", "/v1/models/default"),
])
def test_malformed_requests(rest, method, path):
    fails(rest.request(method, path, b"{}"), 400, f"Malformed request: {method} {path}")


def test_query_string_is_part_of_the_path(rest):
    fails(rest.get("/v1/models/default?x=1"), 404, "Could not find any versions of model default?x=1")


def test_rest_timeout_is_504(rest):
    fails(rest.post("/v1/models/slow:predict", {"inputs": 30.0}), 504, "")


def test_oversized_body_is_refused(rest):
    body = b'{"instances": [' + b"1.0," * (1_100_000) + b"1.0]}"
    response = rest.post("/v1/models/default:predict", body)
    assert response.status == 413
    assert "larger than the limit" in response.json()["error"]


def test_paths_outside_v1_are_404_html(rest):
    response = rest.get("/foo")
    assert response.status == 404 and response.headers["content-type"].startswith("text/html")


def test_cors_preflight(rest):
    assert rest.request("OPTIONS", "/v1/models/default", headers={"Origin": "http://example.com"}).status == 200
    response = rest.request("OPTIONS", "/v1/models/default")
    assert response.status == 400 and response.body == b""


def test_prometheus_page(rest):
    rest.post("/v1/models/default/versions/7:predict", {"instances": [1.0]})
    response = rest.get("/monitoring/prometheus/metrics")
    assert response.status == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.body.decode()
    assert "# TYPE" in text  # testPrometheusEndpoint
    assert ':tensorflow:serving:request_count_total{model_name="default",status="OK"}' in text
    assert (':tensorflow:serving:request_latency_bucket{API="predict",entrypoint="REST",le="10.0",'
            'model_name="default"}') in text
    assert ('tfxsp_serving_requests_total{API="predict",entrypoint="REST",model_name="default",'
            'status="NOT_FOUND"}') in text
    bad = rest.get("/monitoring/prometheus/metrics?x=1")
    assert bad.status == 400 and b"Unexpected path: /monitoring/prometheus/metrics?x=1" in bad.body
