"""Typed errors raised by the neurondock SDK.

Every AWS error response is re-raised as a subclass of both ``SdkError`` and botocore's
``ClientError``, so ``except ClientError`` keeps working and the AWS code stays on ``.code``::

    SdkError
    ├── ConfigurationError          (also ValueError) bad arguments or local setup
    ├── AwsError                    (also botocore ClientError) .code .message .response .operation_name
    │   ├── ValidationError         ValidationException (control plane), ValidationError (runtime)
    │   │   └── ResourceNotFound    "Could not find …", "… not found.", ResourceNotFound
    │   ├── ResourceInUse           duplicate compilation job name
    │   ├── ResourceLimitExceeded   quota reached
    │   ├── ThrottlingError         ThrottlingException after botocore's retries
    │   ├── ModelError              424 from the model: original_status_code, original_message, log_stream_arn
    │   ├── ModelStreamError        a response stream broke after its first part (also InternalStreamFailure)
    │   └── ServiceError            InternalFailure, ServiceUnavailable, other 5xx
    └── WaitError                   .resource_name .status
        ├── UnexpectedStatusError   ended Failed/FAILED/STOPPED: .failure_reason .log_lines
        └── WaitTimeoutError        still pending when the timeout ran out: .timeout
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from botocore.exceptions import ClientError


class SdkError(Exception):
    """Base of every error the neurondock SDK raises on purpose."""


class ConfigurationError(SdkError, ValueError):
    """The SDK was called with arguments or a local setup it cannot work with."""


class AwsError(SdkError, ClientError):
    """An AWS-style error response from SageMaker, SageMaker Runtime, S3 or STS."""

    codes: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, error_response: dict[str, Any], operation_name: str) -> None:
        super().__init__(error_response, operation_name)

    @property
    def code(self) -> str:
        """The AWS error code, e.g. ``ValidationException``."""
        return str(self.response.get("Error", {}).get("Code", "Unknown"))

    @property
    def message(self) -> str:
        """The service's error message."""
        return str(self.response.get("Error", {}).get("Message", ""))

    @property
    def status_code(self) -> int | None:
        """The HTTP status of the error response, when known."""
        status = self.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None

    def __reduce__(self) -> tuple[Any, ...]:
        # ClientError pickles as a plain ClientError; keep the subclass across process boundaries.
        return type(self), (self.response, self.operation_name)


class ValidationError(AwsError):
    """The request was rejected as invalid (SageMaker reports most not-found cases this way too)."""

    codes = frozenset({"ValidationException", "ValidationError"})


class ResourceNotFound(ValidationError):
    """The named model, endpoint, endpoint config or compilation job does not exist."""

    codes = frozenset({"ResourceNotFound", "ResourceNotFoundException", "NoSuchBucket", "NoSuchKey", "404"})


class ResourceInUse(AwsError):
    """A resource with that name already exists or is busy."""

    codes = frozenset({"ResourceInUse", "ResourceInUseException"})


class ResourceLimitExceeded(AwsError):
    """An account quota was reached."""

    codes = frozenset({"ResourceLimitExceeded", "ResourceLimitExceededException"})


class ThrottlingError(AwsError):
    """The service kept throttling after botocore's retries."""

    codes = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException"})


class ModelError(AwsError):
    """The model container answered with an error (runtime HTTP 424)."""

    codes = frozenset({"ModelError"})

    @property
    def original_status_code(self) -> int | None:
        """The status code the model itself returned."""
        value = self.response.get("OriginalStatusCode")
        return int(value) if value is not None else None

    @property
    def original_message(self) -> str | None:
        """The body the model itself returned."""
        value = self.response.get("OriginalMessage")
        return str(value) if value is not None else None

    @property
    def log_stream_arn(self) -> str | None:
        """Where the endpoint's logs live."""
        value = self.response.get("LogStreamArn")
        return str(value) if value is not None else None


class ModelStreamError(AwsError):
    """A response stream ended with an exception event after some of its parts had arrived."""

    codes = frozenset({"ModelStreamError", "InternalStreamFailure"})


class ServiceError(AwsError):
    """The service failed on its side (5xx)."""

    codes = frozenset({"InternalFailure", "InternalServerError", "ServiceUnavailable", "InternalDependencyException"})


# Message prefixes SageMaker uses for not-found, which it reports as ValidationException
# (docs/sagemaker-api.md; the SageMaker SDK string-matches them the same way).
_NOT_FOUND_MARKERS = ("could not find", "not found")

_BY_CODE: dict[str, type[AwsError]] = {
    code: cls
    for cls in (
        ValidationError,
        ResourceNotFound,
        ResourceInUse,
        ResourceLimitExceeded,
        ThrottlingError,
        ModelError,
        ModelStreamError,
        ServiceError,
    )
    for code in cls.codes
}


def from_client_error(error: ClientError) -> AwsError:
    """Return the typed SDK error for a botocore ``ClientError``."""
    if isinstance(error, AwsError):
        return error
    response = error.response
    code = str(response.get("Error", {}).get("Code", ""))
    message = str(response.get("Error", {}).get("Message", "")).lower()
    cls = _BY_CODE.get(code)
    if cls is ValidationError and any(marker in message for marker in _NOT_FOUND_MARKERS):
        cls = ResourceNotFound
    if cls is None:
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        cls = ServiceError if isinstance(status, int) and status >= 500 else AwsError
    return cls(response, error.operation_name)


class WaitError(SdkError):
    """Waiting for an endpoint or compilation job did not end in the wanted state."""

    def __init__(self, message: str, *, resource_name: str, status: str | None) -> None:
        super().__init__(message)
        self.resource_name = resource_name
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, self.__dict__)


class UnexpectedStatusError(WaitError):
    """The resource reached a terminal status other than the one waited for."""

    def __init__(
        self,
        message: str,
        *,
        resource_name: str,
        status: str | None,
        failure_reason: str | None = None,
        log_lines: Sequence[str] = (),
    ) -> None:
        super().__init__(message, resource_name=resource_name, status=status)
        self.failure_reason = failure_reason
        self.log_lines = list(log_lines)


class WaitTimeoutError(WaitError, TimeoutError):
    """The resource was still pending when the timeout ran out."""

    def __init__(self, message: str, *, resource_name: str, status: str | None, timeout: float) -> None:
        super().__init__(message, resource_name=resource_name, status=status)
        self.timeout = timeout


def _rebuild(cls: type[WaitError], args: tuple[Any, ...], state: dict[str, Any]) -> WaitError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


@contextlib.contextmanager
def translate_client_errors() -> Iterator[None]:
    """Re-raise botocore ``ClientError`` inside the block as the matching typed ``AwsError``."""
    try:
        yield
    except AwsError:
        raise
    except ClientError as exc:
        raise from_client_error(exc) from exc
