"""Typed errors carrying their AWS code and HTTP status; one handler per protocol renders them.

Hierarchy::

    PlatformError                       code=InternalFailure, 500
    ├── ValidationException             400  bad input, not-found of models/configs/endpoints, duplicates
    ├── ResourceNotFound                400  compilation jobs
    ├── ResourceInUse                   400
    ├── ResourceLimitExceeded           400
    ├── ConflictException               400
    ├── UnknownOperationException       400
    ├── SerializationException          400  a body that is not the JSON object the operation takes
    ├── AuthError                       (SigV4 failures; S3 renders them with its own codes)
    │   ├── MissingAuthenticationTokenException  403
    │   ├── IncompleteSignatureException          400
    │   ├── UnrecognizedClientException           403
    │   ├── InvalidSecurityTokenException         403  (a session token that is not the key's)
    │   ├── ExpiredTokenException                 403  (temporary credentials past their expiry)
    │   ├── InvalidSignatureException             403
    │   └── SignatureExpiredException             403  (clock skew over 15 minutes)
    └── RuntimeApiError                 (sagemaker-runtime)
        ├── RuntimeValidationError      400  code "ValidationError"
        ├── ModelError                  424
        ├── ModelNotReadyException      429
        ├── ServiceUnavailable          503
        └── PayloadTooLarge             413  code "ValidationError"

Errors that belong to one service live beside it and subclass PlatformError the same way:
``services.rate_limits.ThrottlingException`` (429, sign-ins and tokens), ``services.objects.errors.S3Error``
and its S3 codes, ``services.external_artifacts.ExternalStoreError`` (502), and the not-found errors of
``services.fleet`` and friends.

Messages are templates filled from keyword arguments, and every error pickles (they cross Celery).
"""

from __future__ import annotations

from typing import Any, ClassVar


class PlatformError(Exception):
    """Base of every error the platform raises on purpose."""

    code: ClassVar[str] = "InternalFailure"
    http_status: ClassVar[int] = 500
    fmt: ClassVar[str] = "{message}"
    # S3 speaks its own codes; subclasses that S3 can raise override this.
    s3_code: ClassVar[str | None] = None

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.message = message if message is not None else self.fmt.format(**kwargs)
        super().__init__(self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.kwargs))

    def body(self) -> dict[str, Any]:
        """Return the awsJson1.1 error envelope."""
        return {"__type": self.code, "message": self.message}


def _rebuild(cls: type[PlatformError], message: str, kwargs: dict[str, Any]) -> PlatformError:
    err = cls(message)
    err.kwargs = kwargs
    return err


class ValidationException(PlatformError):
    code = "ValidationException"
    http_status = 400


class NotFoundError(ValidationException):
    """SageMaker reports a missing model, config or endpoint as a ValidationException."""

    fmt = 'Could not find {kind} "{arn}".'


class AlreadyExistsError(ValidationException):
    fmt = 'Cannot create already existing {kind} "{arn}".'


class ResourceNotFound(PlatformError):
    code = "ResourceNotFound"
    http_status = 400


class ResourceInUse(PlatformError):
    code = "ResourceInUse"
    http_status = 400


class ResourceLimitExceeded(PlatformError):
    code = "ResourceLimitExceeded"
    http_status = 400


class SandboxUnavailable(PlatformError):
    """Model code of an ordinary account may not run: a host cannot sandbox it (docs/sandbox.md)."""

    code = "AccessDeniedException"
    http_status = 400
    fmt = (
        "Account {account_id} cannot {action} now: the sandbox that isolates model code is unavailable "
        "({detail}), and until it works only admin accounts may run model code. Ask the operator to install "
        "bubblewrap, or to start neurondock with --unsafe-unsandboxed-user-code."
    )


class ConflictException(PlatformError):
    code = "ConflictException"
    http_status = 400


class UnknownOperationException(PlatformError):
    code = "UnknownOperationException"
    http_status = 400


class SerializationException(PlatformError):
    code = "SerializationException"
    http_status = 400


class AuthError(PlatformError):
    """A request whose signature or credentials cannot be accepted."""

    http_status = 403
    s3_code = "AccessDenied"


class MissingAuthenticationTokenException(AuthError):
    code = "MissingAuthenticationTokenException"
    fmt = "Missing Authentication Token"
    s3_code = "AccessDenied"


class IncompleteSignatureException(AuthError):
    code = "IncompleteSignatureException"
    http_status = 400
    s3_code = "AuthorizationHeaderMalformed"


class UnrecognizedClientException(AuthError):
    code = "UnrecognizedClientException"
    fmt = "The security token included in the request is invalid."
    s3_code = "InvalidAccessKeyId"


class InvalidSecurityTokenException(UnrecognizedClientException):
    """An ``X-Amz-Security-Token`` that does not belong to the access key (or a long-term key with one)."""

    s3_code = "InvalidToken"


class ExpiredTokenException(AuthError):
    code = "ExpiredTokenException"
    fmt = "The security token included in the request is expired"
    s3_code = "ExpiredToken"


class InvalidSignatureException(AuthError):
    code = "InvalidSignatureException"
    fmt = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )
    s3_code = "SignatureDoesNotMatch"


class SignatureExpiredException(AuthError):
    code = "InvalidSignatureException"
    fmt = "Signature expired: {request_time} is now earlier than {earliest} ({now} - 15 min.)"
    s3_code = "RequestTimeTooSkewed"


class RuntimeApiError(PlatformError):
    """Errors of the sagemaker-runtime (restJson1) protocol."""


class RuntimeValidationError(RuntimeApiError):
    code = "ValidationError"
    http_status = 400


class EndpointNotFoundError(RuntimeValidationError):
    fmt = "Endpoint {name} of account {account_id} not found."


class PayloadTooLarge(RuntimeValidationError):
    http_status = 413
    fmt = "Request body of {size} bytes exceeds the {limit}-byte (6 MiB) InvokeEndpoint limit."


class ModelError(RuntimeApiError):
    code = "ModelError"
    http_status = 424

    def __init__(
        self,
        message: str | None = None,
        *,
        original_status_code: int = 500,
        original_message: str = "",
        log_stream_arn: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.original_status_code = original_status_code
        self.original_message = original_message
        self.log_stream_arn = log_stream_arn

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_model_error,
            (self.message, self.original_status_code, self.original_message, self.log_stream_arn),
        )

    def body(self) -> dict[str, Any]:
        return {
            "__type": self.code,
            "Message": self.message,
            "message": self.message,
            "OriginalStatusCode": self.original_status_code,
            "OriginalMessage": self.original_message,
            "LogStreamArn": self.log_stream_arn,
        }


def _rebuild_model_error(message: str, status: int, original: str, log_arn: str) -> ModelError:
    return ModelError(message, original_status_code=status, original_message=original, log_stream_arn=log_arn)


class ModelStreamError(RuntimeApiError):
    """A response stream that broke after its first part: sent as an exception event (docs/streaming.md)."""

    code = "ModelStreamError"
    # Only a stream that has not started yet could carry a status; this one is past that point.
    http_status = 424

    def __init__(self, message: str | None = None, *, error_code: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.error_code = error_code


class ModelNotReadyException(RuntimeApiError):
    code = "ModelNotReadyException"
    http_status = 429


class ServiceUnavailable(RuntimeApiError):
    code = "ServiceUnavailable"
    http_status = 503
