"""Predictor: InvokeEndpoint per serializer/deserializer pair, and the delete call sequences.

moto decodes every request body as UTF-8, so binary request bodies (NPY, tensor/pt) cannot reach it;
those pairs are checked with botocore's Stubber, which also pins the exact InvokeEndpoint parameters.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
import torch
from botocore.stub import ANY

from neurondock import (
    BytesDeserializer,
    CSVSerializer,
    IdentitySerializer,
    JSONDeserializer,
    JSONSerializer,
    Model,
    ModelError,
    NumpyDeserializer,
    NumpySerializer,
    Predictor,
    ResourceNotFound,
    SdkError,
    Session,
    StringDeserializer,
    TorchTensorDeserializer,
    TorchTensorSerializer,
)

from .conftest import IMAGE, ROLE, SeedResult, Stubbed, streaming

ENDPOINT = "resnet-ep"
LOG_GROUP = "/aws/sagemaker/Endpoints/resnet-ep"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _capture_invocations(session: Session) -> list[dict[str, Any]]:
    """Record the headers and body of each InvokeEndpoint request as it leaves botocore."""
    seen: list[dict[str, Any]] = []

    def record(request: Any, **_: Any) -> None:
        seen.append({"headers": dict(request.headers), "body": request.body, "url": request.url})

    session.sagemaker_runtime_client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", record)
    return seen


def test_default_pair_is_numpy(session: Session) -> None:
    predictor = Predictor(ENDPOINT, session)
    assert isinstance(predictor.serializer, NumpySerializer)
    assert isinstance(predictor.deserializer, NumpyDeserializer)
    assert (predictor.content_type, predictor.accept) == ("application/x-npy", ("application/x-npy",))


def test_json_pair_under_moto(session: Session, seed_result: SeedResult) -> None:
    seed_result('{"predictions": [0.9, 0.1]}', "application/json", custom_attributes="trace=1")
    predictor = Predictor(ENDPOINT, session, serializer=JSONSerializer(), deserializer=JSONDeserializer())
    seen = _capture_invocations(session)
    result = predictor.predict(
        np.array([[1.0, 2.0]]), target_variant="AllTraffic", custom_attributes="c=1", inference_id="inf-1"
    )
    assert result == {"predictions": [0.9, 0.1]}
    assert predictor.last_response["InvokedProductionVariant"] == "AllTraffic"
    assert predictor.last_response["CustomAttributes"] == "trace=1"
    (request,) = seen
    assert request["url"].endswith(f"/endpoints/{ENDPOINT}/invocations")
    assert json.loads(request["body"]) == [[1.0, 2.0]]
    headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in request["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    assert headers["x-amzn-sagemaker-target-variant"] == "AllTraffic"
    assert headers["x-amzn-sagemaker-custom-attributes"] == "c=1"
    assert headers["x-amzn-sagemaker-inference-id"] == "inf-1"


def test_numpy_response_under_moto(session: Session, seed_result: SeedResult) -> None:
    expected = np.arange(6, dtype=np.float32).reshape(2, 3)
    seed_result(_npy(expected), "application/x-npy")
    predictor = Predictor(ENDPOINT, session, serializer=JSONSerializer())
    assert np.array_equal(predictor.predict([[1, 2, 3]]), expected)


def test_csv_to_string_pair_under_moto(session: Session, seed_result: SeedResult) -> None:
    seed_result("0.25,0.75", "text/csv")
    predictor = Predictor(ENDPOINT, session, serializer=CSVSerializer(), deserializer=StringDeserializer())
    seen = _capture_invocations(session)
    assert predictor.predict([[1, 2], [3, 4]]) == "0.25,0.75"
    assert seen[0]["body"] in (b"1,2\n3,4", "1,2\n3,4")


def test_identity_to_bytes_pair_under_moto(session: Session, seed_result: SeedResult) -> None:
    seed_result(b"\x89PNG-ish", "application/octet-stream")
    predictor = Predictor(
        ENDPOINT, session, serializer=IdentitySerializer("text/plain"), deserializer=BytesDeserializer()
    )
    assert predictor.predict(b"hello") == b"\x89PNG-ish"


def test_numpy_pair_with_stubber(stubbed: Stubbed) -> None:
    array = np.ones((1, 3), dtype=np.float32)
    answer = np.array([[0.2, 0.8]], dtype=np.float32)
    stubbed.runtime.add_response(
        "invoke_endpoint",
        {
            "Body": streaming(_npy(answer)),
            "ContentType": "application/x-npy",
            "InvokedProductionVariant": "v1",
        },
        {
            "EndpointName": ENDPOINT,
            "ContentType": "application/x-npy",
            "Accept": "application/x-npy",
            "Body": _npy(array),
            "TargetVariant": "v1",
            "TargetModel": "m.tar.gz",
        },
    )
    result = Predictor(ENDPOINT, stubbed.session).predict(array, target_variant="v1", target_model="m.tar.gz")
    assert np.array_equal(result, answer)


def test_torch_tensor_pair_with_stubber(stubbed: Stubbed) -> None:
    tensor = torch.arange(4, dtype=torch.float32)
    stubbed.runtime.add_response(
        "invoke_endpoint",
        {"Body": streaming(_npy(tensor.numpy() * 2)), "ContentType": "tensor/pt"},
        {
            "EndpointName": ENDPOINT,
            "ContentType": "tensor/pt",
            "Accept": "tensor/pt",
            "Body": _npy(tensor.numpy()),
        },
    )
    predictor = Predictor(
        ENDPOINT, stubbed.session, serializer=TorchTensorSerializer(), deserializer=TorchTensorDeserializer()
    )
    assert torch.equal(predictor.predict(tensor), tensor * 2)


def test_accept_tuple_is_joined_and_missing_content_type_defaults(stubbed: Stubbed) -> None:
    stubbed.runtime.add_response(
        "invoke_endpoint",
        {"Body": streaming(b"[1]")},
        {
            "EndpointName": ENDPOINT,
            "ContentType": "application/json",
            "Accept": "application/json, text/csv",
            "Body": "[1]",
        },
    )
    predictor = Predictor(
        ENDPOINT,
        stubbed.session,
        serializer=JSONSerializer(),
        deserializer=BytesDeserializer(("application/json", "text/csv")),
    )
    assert predictor.predict([1]) == b"[1]"


def test_model_error_is_typed(stubbed: Stubbed) -> None:
    stubbed.runtime.add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        service_message='Received client error (400) from primary with message "bad input".',
        http_status_code=424,
        modeled_fields={
            "OriginalStatusCode": 400,
            "OriginalMessage": "bad input",
            "LogStreamArn": f"arn:aws:logs:us-east-1:123456789012:log-group:{LOG_GROUP}",
        },
    )
    with pytest.raises(ModelError) as caught:
        Predictor(ENDPOINT, stubbed.session, serializer=JSONSerializer()).predict([1])
    assert (caught.value.code, caught.value.original_status_code, caught.value.original_message) == (
        "ModelError",
        400,
        "bad input",
    )
    assert caught.value.status_code == 424


def test_runtime_not_found_is_typed(stubbed: Stubbed) -> None:
    stubbed.runtime.add_client_error(
        "invoke_endpoint", "ValidationError", "Endpoint nope of account 123456789012 not found.", 400
    )
    with pytest.raises(ResourceNotFound) as caught:
        Predictor("nope", stubbed.session, serializer=JSONSerializer()).predict([1])
    assert caught.value.code == "ValidationError"


def _deploy(session: Session, s3_model: str) -> Predictor:
    model = Model(model_data=s3_model, image_uri=IMAGE, role=ROLE, name="resnet", session=session)
    return model.deploy(1, "ml.inf1.xlarge", endpoint_name=ENDPOINT)


def test_delete_model_then_endpoint_under_moto(session: Session, s3_model: str) -> None:
    predictor = _deploy(session, s3_model)
    client = session.sagemaker_client
    predictor.delete_model()
    assert client.list_models()["Models"] == []
    predictor.delete_endpoint()
    assert client.list_endpoints()["Endpoints"] == []
    assert client.list_endpoint_configs()["EndpointConfigs"] == []


def test_delete_endpoint_can_keep_the_config(session: Session, s3_model: str) -> None:
    _deploy(session, s3_model).delete_endpoint(delete_endpoint_config=False)
    client = session.sagemaker_client
    assert client.list_endpoints()["Endpoints"] == []
    assert [c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]] == [ENDPOINT]


def test_delete_call_sequence_matches_sagemaker_sdk(stubbed: Stubbed) -> None:
    """delete_model: DescribeEndpoint, DescribeEndpointConfig, DeleteModel per variant; delete_endpoint then
    reuses the cached config name: DeleteEndpointConfig before DeleteEndpoint."""
    sm = stubbed.sagemaker
    sm.add_response(
        "describe_endpoint",
        {
            "EndpointName": ENDPOINT,
            "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/resnet-ep",
            "EndpointConfigName": "cfg",
            "EndpointStatus": "InService",
            "CreationTime": 0,
            "LastModifiedTime": 0,
        },
        {"EndpointName": ENDPOINT},
    )
    sm.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": "cfg",
            "EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/cfg",
            "CreationTime": 0,
            "ProductionVariants": [
                {
                    "VariantName": "a",
                    "ModelName": "m-a",
                    "InstanceType": "ml.inf1.xlarge",
                    "InitialInstanceCount": 1,
                },
                {
                    "VariantName": "b",
                    "ModelName": "m-b",
                    "InstanceType": "ml.c5.xlarge",
                    "InitialInstanceCount": 1,
                },
            ],
        },
        {"EndpointConfigName": "cfg"},
    )
    sm.add_response("delete_model", {}, {"ModelName": "m-a"})
    sm.add_response("delete_model", {}, {"ModelName": "m-b"})
    sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": "cfg"})
    sm.add_response("delete_endpoint", {}, {"EndpointName": ENDPOINT})
    predictor = Predictor(ENDPOINT, stubbed.session)
    predictor.delete_model()
    predictor.delete_endpoint()


def test_delete_model_reports_every_failure(stubbed: Stubbed) -> None:
    predictor = Predictor(ENDPOINT, stubbed.session)
    predictor._model_names = ["m-a", "m-b"]
    stubbed.sagemaker.add_client_error("delete_model", "ValidationException", "Could not find model m-a", 400)
    stubbed.sagemaker.add_response("delete_model", {}, {"ModelName": ANY})
    with pytest.raises(SdkError, match="Failed models: m-a: ValidationException"):
        predictor.delete_model()
