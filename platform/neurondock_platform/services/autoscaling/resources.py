"""What Application Auto Scaling can scale here, and how targets, policies and actions are named.

neurondock scales one thing: a SageMaker variant's instance count (ServiceNamespace ``sagemaker``,
ScalableDimension ``sagemaker:variant:DesiredInstanceCount``, ResourceId
``endpoint/<endpoint>/variant/<variant>``; docs/autoscaling.md, "Scope").
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from neurondock_platform.models import ScalableTarget, ScalingPolicy, ScheduledAction
from neurondock_platform.services import pagination
from neurondock_platform.services.autoscaling.errors import (
    InvalidNextTokenException,
    NotImplementedFeature,
    ObjectNotFoundException,
    ValidationException,
)

NAMESPACE = "sagemaker"
# Every Describe* operation's page size when MaxResults is not given.
DEFAULT_MAX_RESULTS = 50
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# SageMaker dimensions neurondock does not scale (serverless concurrency, inference components).
_OTHER_SAGEMAKER_DIMENSIONS = (
    "sagemaker:variant:DesiredProvisionedConcurrency",
    "sagemaker:inference-component:DesiredCopyCount",
)
_RESOURCE_RE = re.compile(
    r"^endpoint/(?P<endpoint>[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})/variant/(?P<variant>[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})$"
)
ROLE_ARN = (
    "arn:aws:iam::{account}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)
UNSUPPORTED = (
    "Unsupported service namespace, resource type or scalable dimension: neurondock scales ServiceNamespace "
    f"{NAMESPACE}, ScalableDimension {DIMENSION}, ResourceId endpoint/<endpoint name>/variant/<variant name>."
)


@dataclass(frozen=True)
class Variant:
    """The endpoint variant a ResourceId names."""

    endpoint: str
    variant: str


def check_namespace(namespace: str) -> None:
    if namespace != NAMESPACE:
        raise ValidationException(UNSUPPORTED)


def check_dimension(dimension: str) -> None:
    if dimension in _OTHER_SAGEMAKER_DIMENSIONS:
        raise NotImplementedFeature(f"ScalableDimension {dimension} is not implemented by neurondock; use {DIMENSION}.")
    if dimension != DIMENSION:
        raise ValidationException(UNSUPPORTED)


def parse_resource(resource_id: str) -> Variant:
    """The variant of ``endpoint/<endpoint>/variant/<variant>``; ValidationException otherwise."""
    match = _RESOURCE_RE.match(resource_id)
    if match is None:
        if resource_id.startswith("inference-component/"):
            raise NotImplementedFeature("Inference components are not implemented by neurondock.")
        raise ValidationException(UNSUPPORTED)
    return Variant(match["endpoint"], match["variant"])


def check_scope(namespace: str, resource_id: str | None = None, dimension: str | None = None) -> Variant | None:
    """Check what a request names; returns the variant when a ResourceId was given."""
    check_namespace(namespace)
    if dimension is not None:
        check_dimension(dimension)
    return parse_resource(resource_id) if resource_id is not None else None


def not_registered(namespace: str, resource_id: str, dimension: str) -> ObjectNotFoundException:
    return ObjectNotFoundException(
        f"No scalable target registered for service namespace: {namespace}, resource ID: {resource_id}, "
        f"scalable dimension: {dimension}"
    )


def find_target(session: Session, account_id: str, resource_id: str) -> ScalableTarget | None:
    return session.scalar(
        select(ScalableTarget).where(
            ScalableTarget.account_id == account_id,
            ScalableTarget.service_namespace == NAMESPACE,
            ScalableTarget.resource_id == resource_id,
            ScalableTarget.scalable_dimension == DIMENSION,
        )
    )


def get_target(session: Session, account_id: str, namespace: str, resource_id: str, dimension: str) -> ScalableTarget:
    """The caller's registered target; ObjectNotFoundException (AWS's message) when there is none."""
    check_scope(namespace, resource_id, dimension)
    target = find_target(session, account_id, resource_id)
    if target is None:
        raise not_registered(namespace, resource_id, dimension)
    return target


def target_arn(region: str, account_id: str) -> str:
    return f"arn:aws:application-autoscaling:{region}:{account_id}:scalable-target/{secrets.token_hex(18)}"


def policy_arn(region: str, account_id: str, resource_id: str, name: str) -> str:
    return (
        f"arn:aws:autoscaling:{region}:{account_id}:scalingPolicy:{uuid.uuid4()}:resource/{NAMESPACE}/"
        f"{resource_id}:policyName/{name}"
    )


def scheduled_action_arn(region: str, account_id: str, resource_id: str, name: str) -> str:
    return (
        f"arn:aws:autoscaling:{region}:{account_id}:scheduledAction:{uuid.uuid4()}:resource/{NAMESPACE}/"
        f"{resource_id}:scheduledActionName/{name}"
    )


_T = TypeVar("_T")
# A scaling policy or a scheduled action: named, and attached to a scalable target.
_Attached = TypeVar("_Attached", ScalingPolicy, ScheduledAction)


def page(
    session: Session,
    stmt: Select[_T],
    *,
    sort_column: InstrumentedAttribute[Any],
    id_column: InstrumentedAttribute[int],
    scope: str,
    max_results: int | None,
    next_token: str | None,
    order: str = pagination.ASCENDING,
) -> pagination.Page[_T]:
    """One page of a Describe* answer, with Application Auto Scaling's page size and token error."""
    return pagination.keyset_page(
        session,
        stmt,
        sort_column=sort_column,
        id_column=id_column,
        max_results=max_results or DEFAULT_MAX_RESULTS,
        next_token=next_token,
        scope=scope,
        order=order,
        invalid_token=InvalidNextTokenException,
    )


def describe_attached(
    session: Session,
    model: type[_Attached],
    *,
    op: str,
    account_id: str,
    namespace: str,
    names: Sequence[str],
    resource_id: str | None,
    dimension: str | None,
    max_results: int | None,
    next_token: str | None,
) -> pagination.Page[_Attached]:
    """DescribeScalingPolicies / DescribeScheduledActions: the account's, by name and target, oldest first."""
    check_scope(namespace, resource_id, dimension)
    stmt = select(model).where(model.account_id == account_id)
    if names:
        stmt = stmt.where(model.name.in_(list(names)))
    if resource_id is not None:
        stmt = stmt.join(ScalableTarget).where(ScalableTarget.resource_id == resource_id)
    scope = pagination.fingerprint(op=op, names=sorted(names), resource=resource_id)
    return page(
        session,
        stmt,
        sort_column=model.created_at,
        id_column=model.id,
        scope=scope,
        max_results=max_results,
        next_token=next_token,
    )
