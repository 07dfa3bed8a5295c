"""Typed ORM models; shaping into wire responses lives in ``api/shapes.py``."""

from neurondock_platform.models.account import AccessKey, Account
from neurondock_platform.models.bucket import Bucket
from neurondock_platform.models.compilation_job import CompilationJob
from neurondock_platform.models.endpoint import Endpoint, EndpointVariant
from neurondock_platform.models.endpoint_config import EndpointConfig
from neurondock_platform.models.endpoint_event import EndpointEvent, InvocationErrorRecord
from neurondock_platform.models.hosting import Host, Replica
from neurondock_platform.models.metrics import MetricPoint
from neurondock_platform.models.model import Model
from neurondock_platform.models.revoked_token import RevokedToken
from neurondock_platform.models.status import (
    AccessKeyStatus,
    CompilationJobStatus,
    EndpointStatus,
    ReplicaState,
    VariantStatus,
)
from neurondock_platform.models.tag import Tag

__all__ = [
    "AccessKey",
    "AccessKeyStatus",
    "Account",
    "Bucket",
    "CompilationJob",
    "CompilationJobStatus",
    "Endpoint",
    "EndpointConfig",
    "EndpointEvent",
    "EndpointStatus",
    "EndpointVariant",
    "Host",
    "InvocationErrorRecord",
    "MetricPoint",
    "Model",
    "Replica",
    "ReplicaState",
    "RevokedToken",
    "Tag",
    "VariantStatus",
]
