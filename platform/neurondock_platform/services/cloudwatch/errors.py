"""CloudWatch's errors: each carries its Query error code, its JSON shape name and its HTTP status.

boto3 (AWS JSON 1.0 with ``awsQueryCompatible``) reads the code from the ``x-amzn-query-error``
header and raises the modeled class (``cw.exceptions.ResourceNotFound``); Query clients read it from
the XML ``<Code>`` (docs/cloudwatch.md, "Errors").
"""

from __future__ import annotations

from typing import ClassVar

from neurondock_platform.errors import PlatformError


class CloudWatchError(PlatformError):
    """Base of CloudWatch's errors; ``shape`` is the error shape's name in botocore's model."""

    code = "InternalServiceError"
    shape: ClassVar[str] = "InternalServiceFault"
    http_status = 500
    sender: ClassVar[bool] = False


class InvalidParameterValue(CloudWatchError):
    code = "InvalidParameterValue"
    shape = "InvalidParameterValueException"
    http_status = 400
    sender = True


class InvalidParameterCombination(CloudWatchError):
    code = "InvalidParameterCombination"
    shape = "InvalidParameterCombinationException"
    http_status = 400
    sender = True


class MissingParameter(CloudWatchError):
    code = "MissingParameter"
    shape = "MissingRequiredParameterException"
    http_status = 400
    sender = True


class ResourceNotFound(CloudWatchError):
    code = "ResourceNotFound"
    shape = "ResourceNotFound"
    http_status = 404
    sender = True


class InvalidNextToken(CloudWatchError):
    code = "InvalidNextToken"
    shape = "InvalidNextToken"
    http_status = 400
    sender = True
    fmt = "The service cannot return the next page: NextToken is not one this request returned."


class InvalidFormat(CloudWatchError):
    code = "InvalidFormat"
    shape = "InvalidFormatFault"
    http_status = 400
    sender = True


class LimitExceeded(CloudWatchError):
    code = "LimitExceeded"
    shape = "LimitExceededFault"
    http_status = 400
    sender = True


class ValidationError(CloudWatchError):
    """A request that breaks the model's constraints (lengths, enums, ranges)."""

    code = "ValidationError"
    shape = "ValidationException"
    http_status = 400
    sender = True


class NotImplementedFeature(CloudWatchError):
    """A part of CloudWatch neurondock does not implement: refused, never ignored."""

    code = "NotImplemented"
    shape = "NotImplemented"
    http_status = 501
    sender = True


class InvalidAction(CloudWatchError):
    """An operation name CloudWatch does not have."""

    code = "InvalidAction"
    shape = "InvalidAction"
    http_status = 400
    sender = True
