"""gRPC conformance against the spec (§3) and tensorflow_model_server_test.py, with the official stubs.

After every test the server must still answer a Predict.
"""
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

from tests.support.serving import classification_request, example_input, predict_request, regression_request

pytestmark = pytest.mark.timeout(120)

EXAMPLE_X2 = "Cg8KDQoBeBIIEgYKBAAAAEA="  # serialized Example{x: [2.0]} (spec §4.3)


@pytest.fixture
def server(conformance_server):
    yield conformance_server
    response = conformance_server.predictions.Predict(predict_request(), timeout=20)
    assert list(response.outputs["y"].float_val) == [3.0]


def rpc_error(call, request, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=kwargs.pop("timeout", 20), **kwargs)
    return info.value


def assert_spec(spec, name, signature, version):
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature, version)


# ------------------------------------------------------------------------------------- success


@pytest.mark.parametrize("output_filter", [["y"], []])
def test_predict(server, output_filter):  # testPredictSavedModel
    request = predict_request()
    request.output_filter.extend(output_filter)
    response = server.predictions.Predict(request, timeout=20)
    y = response.outputs["y"]
    assert y.dtype == tf.float32.as_datatype_enum
    assert len(y.float_val) == 1 and y.float_val[0] == 3.0  # typed fields, not tensor_content
    assert_spec(response.model_spec, "default", "serving_default", 123)


def test_predict_accepts_tensor_content_and_any_shape(server):
    request = predict_request()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)))
    assert request.inputs["x"].tensor_content
    y = server.predictions.Predict(request, timeout=20).outputs["y"]
    assert tf.make_ndarray(y).tolist() == [[2.5, 3.0], [3.5, 4.0]]


def test_predict_accepts_messages_larger_than_4mb(server):
    request = predict_request()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones(2_000_000, np.float32)))
    y = server.predictions.Predict(request, timeout=60).outputs["y"]
    assert len(y.float_val) == 2_000_000 and y.float_val[0] == 2.5


def test_versions_and_labels(server):
    assert server.predictions.Predict(predict_request("two_versions"), timeout=20).model_spec.version.value == 124
    response = server.predictions.Predict(predict_request("two_versions", version=123), timeout=20)
    assert response.outputs["y"].float_val == [3.0] and response.model_spec.version.value == 123
    response = server.predictions.Predict(predict_request("two_versions", version_label="stable"), timeout=20)
    assert response.outputs["y"].float_val == [3.0] and response.model_spec.version.value == 123


def test_classify(server):  # testClassify
    response = server.predictions.Classify(classification_request(), timeout=20)
    assert len(response.result.classifications) == 1
    assert len(response.result.classifications[0].classes) == 1
    assert response.result.classifications[0].classes[0].score == 3.0
    assert_spec(response.model_spec, "default", "classify_x_to_y", 123)


def test_regress(server):  # testRegress
    response = server.predictions.Regress(regression_request(), timeout=20)
    assert [r.value for r in response.result.regressions] == [3.0]
    assert_spec(response.model_spec, "default", "regress_x_to_y", 123)


def test_regress_with_context_and_serialized_example(server):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y2"
    with_context = request.input.example_list_with_context
    with_context.context.features.feature["x2"].float_list.value.append(5.0)
    with_context.examples.add().ParseFromString(__import__("base64").b64decode(EXAMPLE_X2))
    assert [r.value for r in server.predictions.Regress(request, timeout=20).result.regressions] == [4.0]


def test_multi_inference(server):  # testMultiInference
    request = example_input(inference_pb2.MultiInferenceRequest(), 2.0)
    for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                              ("classify_x_to_y", "tensorflow/serving/classify")):
        task = request.tasks.add(method_name=method)
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
    response = server.predictions.MultiInference(request, timeout=20)
    assert len(response.results) == 2
    assert response.results[0].regression_result.regressions[0].value == 3.0
    assert response.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert_spec(response.results[0].model_spec, "default", "regress_x_to_y", 123)
    assert_spec(response.results[1].model_spec, "default", "classify_x_to_y", 123)


def test_get_model_status(server):  # testGetModelStatus
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    response = server.models.GetModelStatus(request, timeout=20)
    assert len(response.model_version_status) == 1
    status = response.model_version_status[0]
    assert status.version == 123 and status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0


def test_get_model_metadata(server, saved_half_plus_two):  # testGetModelMetadata
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "default"
    response = server.predictions.GetModelMetadata(request, timeout=20)
    assert response.model_spec.name == "default" and response.model_spec.version.value == 123
    assert len(response.metadata) == 1 and "signature_def" in response.metadata
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    saved = saved_model_pb2.SavedModel.FromString(open(f"{saved_half_plus_two[2.0]}/saved_model.pb", "rb").read())
    assert dict(signature_map.signature_def) == dict(saved.meta_graphs[0].signature_def)


def test_readiness_probe_of_the_official_harness(server):
    error = rpc_error(server.predictions.Predict, predict_request("intentionally_missing_model"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "Servable" in error.details()


# ------------------------------------------------------------------------------------- errors (spec §3.4)


def _request_without_spec(kind):
    return {"predict": predict_pb2.PredictRequest(), "classify": classification_pb2.ClassificationRequest(),
            "regress": regression_pb2.RegressionRequest(),
            "metadata": get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
            "status": get_model_status_pb2.GetModelStatusRequest()}[kind]


def _call(server, kind):
    return {"predict": server.predictions.Predict, "classify": server.predictions.Classify,
            "regress": server.predictions.Regress, "metadata": server.predictions.GetModelMetadata,
            "status": server.models.GetModelStatus}[kind]


def _with_spec(kind, name="default", **spec):
    request = {"predict": lambda: predict_request(name), "classify": lambda: classification_request(name),
               "regress": lambda: regression_request(name),
               "metadata": lambda: _request_without_spec("metadata"),
               "status": lambda: _request_without_spec("status")}[kind]()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


@pytest.mark.parametrize("kind", ["predict", "classify", "regress", "metadata", "status"])
def test_missing_model_spec(server, kind):
    error = rpc_error(_call(server, kind), _request_without_spec(kind))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


@pytest.mark.parametrize("kind", ["predict", "classify", "regress", "metadata"])
def test_model_version_label_resolution_errors(server, kind):
    cases = [
        (dict(name="missing"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(missing)"),
        (dict(version=7), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(default, 7)"),
        (dict(version_label="nope"), grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: nope"),
        (dict(name=""), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    ]
    for spec, code, message in cases:
        error = rpc_error(_call(server, kind), _with_spec(kind, **spec))
        assert (error.code(), error.details()) == (code, message)


def test_model_status_errors(server):
    for spec, message in [(dict(name="missing"), "Could not find any versions of model missing"),
                          (dict(version=7), "Could not find version 7 of model default"),
                          (dict(name=""), "Could not find any versions of model ")]:
        error = rpc_error(server.models.GetModelStatus, _with_spec("status", **spec))
        assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, message)
    # A label is ignored by GetModelStatus (spec §3.3).
    response = server.models.GetModelStatus(_with_spec("status", "two_versions", version_label="nope"), timeout=20)
    assert [s.version for s in response.model_version_status] == [124, 123]


def _predict_error(server, request):
    return rpc_error(server.predictions.Predict, request)


def test_predict_errors(server):
    request = predict_request(signature_name="nope")
    error = _predict_error(server, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.FAILED_PRECONDITION,
                                               'Serving signature key "nope" not found.')

    request = predict_request()
    request.inputs["z"].CopyFrom(request.inputs["x"])
    error = _predict_error(server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. Missing but " \
           "required: {}." == error.details()

    request = predict_request()
    request.inputs["z"].CopyFrom(request.inputs.pop("x"))
    error = _predict_error(server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("Signature input alias: x(feed name: serving_default_x:0) not found in request")

    request = predict_request()
    del request.inputs["x"]
    assert "input size does not match signature: 0!=1" in _predict_error(server, request).details()

    request = predict_request()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(["a"]))
    error = _predict_error(server, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "Expects arg[0] to be float but string is provided")

    request = predict_request()
    request.output_filter.append("nope")
    assert "output tensor alias not found in signature: nope Outputs expected to be in the set {y}." == \
        _predict_error(server, request).details()
    request = predict_request()
    request.output_filter.extend(["y", "y"])
    assert _predict_error(server, request).details() == "duplicate output tensor alias: y"

    request = predict_request()
    request.inputs["x"].float_val.extend([2.0, 3.0])  # three values for a shape of [1]
    error = _predict_error(server, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x")


def test_classify_and_regress_errors(server):
    cases = [
        (server.predictions.Classify, classification_request(signature="nope"),
         grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope"),
        (server.predictions.Regress, regression_request(signature="nope"),
         grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope"),
        (server.predictions.Classify, classification_request(signature=""),
         grpc.StatusCode.INVALID_ARGUMENT, "No classification inputs found in SignatureDef"),
        (server.predictions.Regress, regression_request(signature="classify_x_to_y"),
         grpc.StatusCode.INVALID_ARGUMENT, "No regression outputs found in SignatureDef"),
        (server.predictions.Classify, classification_request(xs=()),
         grpc.StatusCode.INVALID_ARGUMENT, "Input is empty."),
        (server.predictions.Regress, example_input(regression_request(xs=()), 2.0, feature="y"),
         grpc.StatusCode.INVALID_ARGUMENT, "Feature: x (data type: float) is required but could not be found."),
    ]
    for call, request, code, message in cases:
        error = rpc_error(call, request)
        assert error.code() == code and message in error.details(), error.details()


def test_multi_inference_errors(server):
    def request(*tasks):
        r = example_input(inference_pb2.MultiInferenceRequest(), 2.0)
        for name, signature, method in tasks:
            task = r.tasks.add(method_name=method)
            task.model_spec.name = name
            task.model_spec.signature_name = signature
        return r

    regress = "tensorflow/serving/regress"
    cases = [
        (request(), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
        (request(("default", "regress_x_to_y", regress), ("", "classify_x_to_y", regress)),
         grpc.StatusCode.INVALID_ARGUMENT, "Found ModelSpec with an empty model name."),
        (request(("default", "regress_x_to_y", regress), ("two_versions", "regress_x_to_y", regress)),
         grpc.StatusCode.INVALID_ARGUMENT,
         "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
        (request(("default", "regress_x_to_y", regress), ("default", "regress_x_to_y", regress)),
         grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: regress_x_to_y"),
        (request(("default", "nope", regress)),
         grpc.StatusCode.INVALID_ARGUMENT, "Requested signature not found in model graph: nope"),
        (request(("default", "regress_x_to_y", "tensorflow/serving/predict")),
         grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict"),
    ]
    for r, code, message in cases:
        error = rpc_error(server.predictions.MultiInference, r)
        assert (error.code(), error.details()) == (code, message)


def test_metadata_field_errors(server):
    request = _with_spec("metadata")
    del request.metadata_field[:]
    error = rpc_error(server.predictions.GetModelMetadata, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "GetModelMetadataRequest must specify at least one metadata_field")
    request.metadata_field.append("foo")
    assert rpc_error(server.predictions.GetModelMetadata, request).details() == "Metadata field foo is not supported"


def test_client_deadline_is_the_run_timeout(server):
    request = predict_request("slow", x=(30.0,))
    error = rpc_error(server.predictions.Predict, request, timeout=0.5)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_undecodable_request_bytes(server):
    raw = server.raw_grpc("/tensorflow.serving.PredictionService/Predict")
    error = rpc_error(raw, predict_request().SerializeToString()[:-3])
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "Failed to parse request as tensorflow.serving.PredictRequest" in error.details()


def test_unknown_method(server):
    error = rpc_error(server.raw_grpc("/tensorflow.serving.PredictionService/Nope"), b"")
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("text, code, message", [
    ("custom_model_config {}", grpc.StatusCode.INVALID_ARGUMENT,
     "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported"),
    ('model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } '
     'config { name: "a" base_path: "/a" model_platform: "tensorflow" } }',
     grpc.StatusCode.INVALID_ARGUMENT, "Illegal to list model a multiple times in config list"),
    ('model_config_list { config { name: "a" base_path: "relative" model_platform: "tensorflow" } }',
     grpc.StatusCode.INVALID_ARGUMENT, "Expected model a to have an absolute path or URI; got base_path()=relative"),
    ('model_config_list { config { name: "a" base_path: "/no/such/dir" model_platform: "tensorflow" } }',
     grpc.StatusCode.NOT_FOUND, "Could not find base path /no/such/dir for servable a"),
])
def test_rejected_config_reloads_change_nothing(server, text, code, message):
    from serving.config import parse_model_server_config

    request = model_management_pb2.ReloadConfigRequest(config=parse_model_server_config(text))
    error = rpc_error(server.models.HandleReloadConfigRequest, request)
    assert (error.code(), error.details()) == (code, message)
    assert server.predictions.Predict(predict_request("two_versions"), timeout=20).outputs["y"].float_val == [4.0]
