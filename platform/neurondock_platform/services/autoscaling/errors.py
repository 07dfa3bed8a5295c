"""Application Auto Scaling's errors (awsJson1.1: ``{"__type": code, "Message": text}``, HTTP 400)."""

from __future__ import annotations

from typing import Any

from neurondock_platform.errors import PlatformError


class AutoScalingError(PlatformError):
    code = "InternalServiceException"
    http_status = 500

    def body(self) -> dict[str, Any]:
        return {"__type": self.code, "Message": self.message, "message": self.message}


class ValidationException(AutoScalingError):
    code = "ValidationException"
    http_status = 400


class ObjectNotFoundException(AutoScalingError):
    code = "ObjectNotFoundException"
    http_status = 400


class LimitExceededException(AutoScalingError):
    code = "LimitExceededException"
    http_status = 400


class ConcurrentUpdateException(AutoScalingError):
    code = "ConcurrentUpdateException"
    http_status = 400


class InvalidNextTokenException(AutoScalingError):
    code = "InvalidNextTokenException"
    http_status = 400
    fmt = "The NextToken is not valid for this request."


class ResourceNotFoundException(AutoScalingError):
    code = "ResourceNotFoundException"
    http_status = 400


class NotImplementedFeature(AutoScalingError):
    """A part of Application Auto Scaling neurondock does not implement: refused, never ignored."""

    code = "NotImplemented"
    http_status = 501
