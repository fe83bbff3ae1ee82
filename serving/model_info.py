"""Model status and metadata responses, shared by gRPC (protos) and REST (their JSON forms).

Spec §2.3 / §3.3 GetModelStatus: every tracked version, highest first, printed over REST with
all fields, int64 as strings and enum names. Spec §2.4 / §3.3 GetModelMetadata: the served version's
``SignatureDefMap`` packed in ``metadata["signature_def"]``; over REST, proto field names are kept and
the body is assembled the way ``http_rest_api_util.cc`` does it.
"""
from __future__ import annotations

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving.errors import invalid_argument
from serving.model_manager import VersionStatus
from serving.servable import Servable

SIGNATURE_DEF_FIELD = "signature_def"


def status_response(versions: list[tuple[int, VersionStatus]]) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for number, status in versions:
        entry = response.model_version_status.add(version=number, state=int(status.state))
        entry.status.error_code = int(status.code)
        entry.status.error_message = status.message
    return response


def status_json(response: get_model_status_pb2.GetModelStatusResponse) -> bytes:
    return json_format.MessageToJson(response, including_default_value_fields=True, indent=1).encode("utf-8")


def check_metadata_fields(fields) -> None:
    # get_model_metadata_impl.cc
    if not fields:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")


def metadata_response(model_name: str, servable: Servable) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model_name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(servable.signature_def_any)
    return response


def metadata_json(model_name: str, servable: Servable) -> bytes:
    spec = model_pb2.ModelSpec(name=model_name)
    spec.version.value = servable.version
    spec_json = json_format.MessageToJson(spec, including_default_value_fields=True,
                                          preserving_proto_field_name=True, indent=1)
    return (
        "{\n"
        f'"model_spec":{spec_json},\n'
        f'"metadata": {{"signature_def": {servable.signature_def_json}}}\n'
        "}\n"
    ).encode()
