"""Invoke a deployed endpoint and tear it down, with the SageMaker SDK's call sequences."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from neurondock.deserializers import BaseDeserializer, NumpyDeserializer
from neurondock.errors import AwsError, SdkError, translate_client_errors
from neurondock.serializers import BaseSerializer, NumpySerializer
from neurondock.session import Session


class Predictor:
    """Send requests to one endpoint; NPY in and out by default (like SageMaker's PyTorchPredictor)."""

    def __init__(
        self,
        endpoint_name: str,
        session: Session | None = None,
        serializer: BaseSerializer | None = None,
        deserializer: BaseDeserializer | None = None,
    ) -> None:
        self.endpoint_name = endpoint_name
        self.session = session if session is not None else Session()
        self.serializer: BaseSerializer = serializer if serializer is not None else NumpySerializer()
        self.deserializer: BaseDeserializer = deserializer if deserializer is not None else NumpyDeserializer()
        self._endpoint_config_name: str | None = None
        self._model_names: list[str] | None = None
        self.last_response: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Predictor(endpoint_name={self.endpoint_name!r})"

    @property
    def content_type(self) -> str:
        """The ``ContentType`` sent with each request."""
        return self.serializer.CONTENT_TYPE

    @property
    def accept(self) -> tuple[str, ...]:
        """The ``Accept`` values sent with each request."""
        return self.deserializer.ACCEPT

    def predict(
        self,
        data: Any,
        target_variant: str | None = None,
        custom_attributes: str | None = None,
        inference_id: str | None = None,
        target_model: str | None = None,
        initial_args: dict[str, Any] | None = None,
    ) -> Any:
        """Serialize ``data``, call InvokeEndpoint once and return the deserialized response."""
        request = self._request(data, initial_args, target_model, target_variant, inference_id, custom_attributes)
        with translate_client_errors():
            response = self.session.sagemaker_runtime_client.invoke_endpoint(**request)
        # Keep the headers a caller may want (InvokedProductionVariant, CustomAttributes) without the body.
        self.last_response = {key: value for key, value in response.items() if key != "Body"}
        content_type = response.get("ContentType", "application/octet-stream")
        return self.deserializer.deserialize(response["Body"], content_type)

    def predict_stream(
        self,
        data: Any,
        target_variant: str | None = None,
        custom_attributes: str | None = None,
        inference_id: str | None = None,
        initial_args: dict[str, Any] | None = None,
    ) -> Iterator[bytes]:
        """Serialize ``data``, call InvokeEndpointWithResponseStream and yield each part's bytes as it arrives.

        An error before the first part raises at once (``ModelError``, ``ValidationError``, …); one after it
        raises ``ModelStreamError`` from the iteration. Parts are byte slices of the answer: neurondock sends
        one per item the model yields, SageMaker may split or merge them, so decode whole records only.
        """
        request = self._request(data, initial_args, None, target_variant, inference_id, custom_attributes)
        with translate_client_errors():
            response = self.session.sagemaker_runtime_client.invoke_endpoint_with_response_stream(**request)
        self.last_response = {key: value for key, value in response.items() if key != "Body"}
        return _payload_parts(response["Body"])

    def _request(
        self,
        data: Any,
        initial_args: dict[str, Any] | None,
        target_model: str | None,
        target_variant: str | None,
        inference_id: str | None,
        custom_attributes: str | None,
    ) -> dict[str, Any]:
        args = dict(initial_args or {})
        args.setdefault("EndpointName", self.endpoint_name)
        args.setdefault("ContentType", self.content_type)
        args.setdefault("Accept", ", ".join(self.accept))
        optional = {
            "TargetModel": target_model,
            "TargetVariant": target_variant,
            "InferenceId": inference_id,
            "CustomAttributes": custom_attributes,
        }
        args.update({key: value for key, value in optional.items() if value is not None})
        args["Body"] = self.serializer.serialize(data)
        return args

    def endpoint_config_name(self) -> str:
        """Return (and cache) the endpoint's current EndpointConfigName via DescribeEndpoint."""
        if self._endpoint_config_name is None:
            with translate_client_errors():
                description = self.session.sagemaker_client.describe_endpoint(EndpointName=self.endpoint_name)
            self._endpoint_config_name = str(description["EndpointConfigName"])
        return self._endpoint_config_name

    def model_names(self) -> list[str]:
        """Return the model names behind the endpoint's production variants."""
        if self._model_names is None:
            with translate_client_errors():
                config = self.session.sagemaker_client.describe_endpoint_config(
                    EndpointConfigName=self.endpoint_config_name()
                )
            self._model_names = [
                variant["ModelName"] for variant in config["ProductionVariants"] if variant.get("ModelName")
            ]
        return self._model_names

    def delete_endpoint(self, delete_endpoint_config: bool = True) -> None:
        """Delete the endpoint and its config: DescribeEndpoint, DeleteEndpointConfig, DeleteEndpoint."""
        if delete_endpoint_config:
            config_name = self.endpoint_config_name()
            with translate_client_errors():
                self.session.sagemaker_client.delete_endpoint_config(EndpointConfigName=config_name)
        with translate_client_errors():
            self.session.sagemaker_client.delete_endpoint(EndpointName=self.endpoint_name)

    def delete_model(self) -> None:
        """Delete every model behind the endpoint; call this before ``delete_endpoint``."""
        failures: dict[str, AwsError] = {}
        for model_name in self.model_names():
            try:
                with translate_client_errors():
                    self.session.sagemaker_client.delete_model(ModelName=model_name)
            except AwsError as exc:
                failures[model_name] = exc
        if failures:
            details = "; ".join(f"{name}: {exc.code}: {exc.message}" for name, exc in failures.items())
            raise SdkError(f"One or more models cannot be deleted, please retry. Failed models: {details}")


def _payload_parts(events: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    with translate_client_errors():
        for event in events:
            part = event.get("PayloadPart")
            if part is not None:
                yield part.get("Bytes", b"")
