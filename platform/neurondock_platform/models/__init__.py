"""Typed ORM models; shaping into wire responses lives in ``api/shapes.py``."""

from neurondock_platform.models.account import AccessKey, Account
from neurondock_platform.models.async_inference import AsyncInference
from neurondock_platform.models.autoscaling import ScalableTarget, ScalingActivity, ScalingPolicy, ScheduledAction
from neurondock_platform.models.bucket import Bucket
from neurondock_platform.models.cloudwatch import AlarmHistoryItem, MetricAlarm
from neurondock_platform.models.compilation_job import CompilationJob
from neurondock_platform.models.endpoint import Endpoint, EndpointVariant
from neurondock_platform.models.endpoint_config import EndpointConfig
from neurondock_platform.models.endpoint_event import EndpointEvent, InvocationErrorRecord
from neurondock_platform.models.hosting import Host, Replica
from neurondock_platform.models.lease import Lease
from neurondock_platform.models.metrics import MetricDatapoint, MetricStream
from neurondock_platform.models.model import Model
from neurondock_platform.models.revoked_token import RevokedToken
from neurondock_platform.models.status import (
    AccessKeyStatus,
    AlarmState,
    AsyncInferenceStatus,
    CompilationJobStatus,
    EndpointStatus,
    ReplicaState,
    ScalingActivityStatus,
    VariantStatus,
)
from neurondock_platform.models.store_access import StoreAccess
from neurondock_platform.models.tag import Tag
from neurondock_platform.models.temporary_credential import TemporaryCredential

__all__ = [
    "AccessKey",
    "AccessKeyStatus",
    "Account",
    "AlarmHistoryItem",
    "AlarmState",
    "AsyncInference",
    "AsyncInferenceStatus",
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
    "Lease",
    "MetricAlarm",
    "MetricDatapoint",
    "MetricStream",
    "Model",
    "Replica",
    "ReplicaState",
    "RevokedToken",
    "ScalableTarget",
    "ScalingActivity",
    "ScalingActivityStatus",
    "ScalingPolicy",
    "ScheduledAction",
    "StoreAccess",
    "Tag",
    "TemporaryCredential",
    "VariantStatus",
]
