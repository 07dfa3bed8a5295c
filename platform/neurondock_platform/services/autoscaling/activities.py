"""Scaling activities: every change of a variant's capacity, from request to outcome.

An activity starts ``Pending`` and asks SageMaker for the new count exactly as
UpdateEndpointWeightsAndCapacities does (``services.endpoints.update_weights_and_capacities``); it
is ``InProgress`` while the endpoint is ``Updating``, then ``Successful`` when the variant runs the
new count, or ``Unfulfilled`` when the fleet has no capacity for it (the reconciler's
InsufficientInstanceCapacity reason), after which it asks again whenever enough emulated chips are
free and completes then. A newer activity on the same target overrides an unfinished one. Wording as
AWS's (docs/autoscaling.md, "Activities").
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from neurondock_platform.errors import ValidationException
from neurondock_platform.models import (
    Endpoint,
    EndpointStatus,
    EndpointVariant,
    ScalableTarget,
    ScalingActivity,
    ScalingActivityStatus,
)
from neurondock_platform.services import endpoints, pagination, placement
from neurondock_platform.services.autoscaling import resources
from neurondock_platform.services.instance_types import chips_for

RETENTION = dt.timedelta(weeks=6)
# How long an Unfulfilled activity waits between attempts even when chips look free.
RETRY_SECONDS = 10.0
UNFINISHED = (ScalingActivityStatus.PENDING, ScalingActivityStatus.IN_PROGRESS, ScalingActivityStatus.UNFULFILLED)
NOT_SCALED_DESCRIPTION = "Attempting to scale due to alarm triggered"


def _region(target: ScalableTarget) -> str:
    return target.arn.split(":")[3]


def _endpoint(session: Session, target: ScalableTarget) -> Endpoint | None:
    return endpoints.find_endpoint(
        session, target.account_id, endpoints.endpoint_arn(_region(target), target.account_id, target.endpoint_name)
    )


def variant_of(session: Session, target: ScalableTarget) -> EndpointVariant | None:
    """The variant a target scales, or None when its endpoint or variant is gone."""
    endpoint = _endpoint(session, target)
    if endpoint is None:
        return None
    return next((v for v in endpoint.variants if v.name == target.variant_name), None)


def current_capacity(session: Session, target: ScalableTarget) -> int | None:
    """The variant's desired instance count (what Application Auto Scaling calls current capacity)."""
    variant = variant_of(session, target)
    return None if variant is None else variant.desired_instance_count


def start(
    session: Session,
    target: ScalableTarget,
    *,
    desired: int,
    description: str,
    cause: str,
    now: dt.datetime,
) -> ScalingActivity:
    """Record a new activity (overriding unfinished ones) and ask SageMaker for ``desired`` at once if it can."""
    for older in session.scalars(_unfinished(target)):
        older.status_code = ScalingActivityStatus.OVERRIDDEN
        older.status_message = "The desired capacity was updated by a newer scaling activity."
        older.end_time = now
    activity = ScalingActivity(
        activity_id=str(uuid.uuid4()),
        account_id=target.account_id,
        service_namespace=target.service_namespace,
        resource_id=target.resource_id,
        scalable_dimension=target.scalable_dimension,
        description=description,
        cause=cause,
        start_time=now,
        status_code=ScalingActivityStatus.PENDING,
        desired_capacity=desired,
    )
    session.add(activity)
    session.flush()
    _request(session, target, activity, now)
    return activity


def not_scaled(
    session: Session, target: ScalableTarget, *, cause: str, reason: dict[str, Any], now: dt.datetime
) -> None:
    """Record a not scaled activity (shown with IncludeNotScaledActivities), once per unchanged reason."""
    latest = session.scalar(
        select(ScalingActivity)
        .where(ScalingActivity.account_id == target.account_id, ScalingActivity.resource_id == target.resource_id)
        .order_by(ScalingActivity.start_time.desc(), ScalingActivity.id.desc())
        .limit(1)
    )
    if latest is not None and latest.not_scaled_reasons == [reason] and latest.cause == cause:
        return
    session.add(
        ScalingActivity(
            activity_id=str(uuid.uuid4()),
            account_id=target.account_id,
            service_namespace=target.service_namespace,
            resource_id=target.resource_id,
            scalable_dimension=target.scalable_dimension,
            description=NOT_SCALED_DESCRIPTION,
            cause=cause,
            start_time=now,
            end_time=now,
            status_code=ScalingActivityStatus.FAILED,
            not_scaled_reasons=[reason],
        )
    )


def _unfinished(target: ScalableTarget) -> Any:
    return select(ScalingActivity).where(
        ScalingActivity.account_id == target.account_id,
        ScalingActivity.resource_id == target.resource_id,
        ScalingActivity.status_code.in_([s.value for s in UNFINISHED]),
    )


def _finish(activity: ScalingActivity, status: ScalingActivityStatus, message: str, now: dt.datetime) -> None:
    activity.status_code = status
    activity.status_message = message
    activity.end_time = now


def _request(session: Session, target: ScalableTarget, activity: ScalingActivity, now: dt.datetime) -> None:
    """Ask SageMaker for the activity's count if the endpoint takes changes now; else it stays Pending."""
    endpoint = _endpoint(session, target)
    desired = int(activity.desired_capacity or 0)
    if endpoint is None:
        _finish(
            activity,
            ScalingActivityStatus.FAILED,
            f"Failed to set desired instance count to {desired}. Reason: the endpoint "
            f"{target.endpoint_name} no longer exists.",
            now,
        )
        return
    if endpoint.status != EndpointStatus.IN_SERVICE:
        return
    try:
        # It checks everything before it changes anything, so a refusal leaves no half-written state.
        endpoints.update_weights_and_capacities(
            session,
            account_id=target.account_id,
            region=_region(target),
            name=target.endpoint_name,
            desired=[{"VariantName": target.variant_name, "DesiredInstanceCount": desired}],
        )
    except ValidationException as exc:
        _finish(
            activity,
            ScalingActivityStatus.FAILED,
            f"Failed to set desired instance count to {desired}. Reason: {exc.message}",
            now,
        )
        return
    activity.status_code = ScalingActivityStatus.IN_PROGRESS
    activity.requested_at = now


def _capacity_free(session: Session, target: ScalableTarget, missing: int, heartbeat_timeout: float) -> bool:
    variant = variant_of(session, target)
    if variant is None:
        return False
    need = chips_for(variant.instance_type)
    if need == 0:
        return True
    free = placement.free_chips(session, heartbeat_timeout)
    return sum(chips // need for chips in free.values()) >= missing


def progress(session: Session, now: dt.datetime, *, retry_seconds: float, heartbeat_timeout: float) -> int:
    """Move every unfinished activity on; returns how many changed status."""
    changed = 0
    rows = list(
        session.scalars(select(ScalingActivity).where(ScalingActivity.status_code.in_([s.value for s in UNFINISHED])))
    )
    for activity in rows:
        before = activity.status_code
        target = resources.find_target(session, activity.account_id, activity.resource_id)
        endpoint = None
        if target is not None:
            endpoint = _endpoint(session, target)
        if target is None or endpoint is None:
            _finish(
                activity,
                ScalingActivityStatus.FAILED,
                f"Failed to set desired instance count to {activity.desired_capacity}. Reason: the scalable "
                "target or its endpoint no longer exists.",
                now,
            )
        elif activity.status_code == ScalingActivityStatus.PENDING:
            _request(session, target, activity, now)
        elif activity.status_code == ScalingActivityStatus.IN_PROGRESS:
            _check(session, target, endpoint, activity, now)
        elif _retry_due(activity, now, retry_seconds):
            variant = next((v for v in endpoint.variants if v.name == target.variant_name), None)
            missing = int(activity.desired_capacity or 0) - (variant.current_instance_count if variant else 0)
            if endpoint.status == EndpointStatus.IN_SERVICE and _capacity_free(
                session, target, missing, heartbeat_timeout
            ):
                _request(session, target, activity, now)
        if activity.status_code != before:
            changed += 1
            if activity.status_code == ScalingActivityStatus.SUCCESSFUL and target is not None:
                target.capacity_changed_at = now
    return changed


def any_unfinished(session: Session) -> bool:
    """Whether some activity is still Pending, InProgress or Unfulfilled (the monitor keeps moving it)."""
    query = select(ScalingActivity.id).where(ScalingActivity.status_code.in_([s.value for s in UNFINISHED]))
    return session.scalar(query.limit(1)) is not None


def _retry_due(activity: ScalingActivity, now: dt.datetime, retry_seconds: float) -> bool:
    return activity.requested_at is None or (now - activity.requested_at).total_seconds() >= retry_seconds


def _check(
    session: Session, target: ScalableTarget, endpoint: Endpoint, activity: ScalingActivity, now: dt.datetime
) -> None:
    variant = next((v for v in endpoint.variants if v.name == target.variant_name), None)
    desired = int(activity.desired_capacity or 0)
    if variant is None:
        _finish(
            activity,
            ScalingActivityStatus.FAILED,
            f"Failed to set desired instance count to {desired}. Reason: the variant "
            f"{target.variant_name} is gone from the endpoint.",
            now,
        )
        return
    if endpoint.status != EndpointStatus.IN_SERVICE:
        return
    if variant.desired_instance_count != desired:
        _finish(
            activity,
            ScalingActivityStatus.OVERRIDDEN,
            "The desired capacity was updated outside Application Auto Scaling.",
            now,
        )
    elif variant.current_instance_count == desired:
        _finish(
            activity,
            ScalingActivityStatus.SUCCESSFUL,
            f"Successfully set desired instance count to {desired}. Change successfully fulfilled by sagemaker.",
            now,
        )
    elif endpoint.failure_reason:
        activity.status_code = ScalingActivityStatus.UNFULFILLED
        activity.status_message = (
            f"Failed to set desired instance count to {desired}. Reason: {endpoint.failure_reason}"
        )


def describe(
    session: Session,
    *,
    account_id: str,
    resource_id: str | None,
    include_not_scaled: bool,
    max_results: int | None,
    next_token: str | None,
) -> pagination.Page[ScalingActivity]:
    """DescribeScalingActivities: newest first; not scaled activities only when asked for."""
    stmt = select(ScalingActivity).where(ScalingActivity.account_id == account_id)
    if resource_id is not None:
        stmt = stmt.where(ScalingActivity.resource_id == resource_id)
    if not include_not_scaled:
        stmt = stmt.where(ScalingActivity.not_scaled_reasons.is_(None))
    scope = pagination.fingerprint(op="DescribeScalingActivities", resource=resource_id, all=include_not_scaled)
    return resources.page(
        session,
        stmt,
        sort_column=ScalingActivity.start_time,
        id_column=ScalingActivity.id,
        scope=scope,
        max_results=max_results,
        next_token=next_token,
        order=pagination.DESCENDING,
    )


def for_resources(
    session: Session, account_id: str, resource_ids: Sequence[str], limit: int = 20
) -> list[ScalingActivity]:
    """The newest activities of some targets, for the console."""
    return list(
        session.scalars(
            select(ScalingActivity)
            .where(ScalingActivity.account_id == account_id, ScalingActivity.resource_id.in_(list(resource_ids)))
            .order_by(ScalingActivity.start_time.desc(), ScalingActivity.id.desc())
            .limit(limit)
        )
    )


def prune(session: Session, now: dt.datetime) -> int:
    """Delete activities older than six weeks."""
    result = session.execute(delete(ScalingActivity).where(ScalingActivity.start_time < now - RETENTION))
    return int(getattr(result, "rowcount", 0) or 0)
