"""Scheduled actions: PutScheduledAction, DescribeScheduledActions, DeleteScheduledAction, and running
them when due (docs/autoscaling.md, "Scheduled actions").

A run sets the target's MinCapacity/MaxCapacity to the action's and, when the variant's count falls
outside them, scales it inside. Each run moves ``next_run_at`` by compare-and-set, so a run happens
once however many monitors look.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from neurondock_platform.models import ScalingActivity, ScalingActivityStatus, ScheduledAction
from neurondock_platform.services import pagination
from neurondock_platform.services.autoscaling import activities, resources, schedules, targets
from neurondock_platform.services.autoscaling.errors import (
    ObjectNotFoundException,
    ValidationException,
)


def _next(action: ScheduledAction, after: dt.datetime) -> dt.datetime | None:
    schedule = schedules.parse(action.schedule)
    tz = schedules.zone(action.timezone)
    when = schedules.next_run(schedule, after, tz, anchor=action.start_time or action.created_at)
    if when is not None and action.start_time is not None and when < action.start_time and schedule.kind == "cron":
        when = schedules.next_run(schedule, action.start_time - dt.timedelta(seconds=1), tz)
    if when is not None and action.end_time is not None and when > action.end_time:
        return None
    return when


def put(
    session: Session,
    *,
    account_id: str,
    region: str,
    namespace: str,
    resource_id: str,
    dimension: str,
    name: str,
    schedule: str | None,
    timezone: str | None,
    start_time: dt.datetime | None,
    end_time: dt.datetime | None,
    min_capacity: int | None,
    max_capacity: int | None,
    now: dt.datetime,
) -> ScheduledAction:
    """PutScheduledAction: create, or update what is given of an existing one."""
    target = resources.get_target(session, account_id, namespace, resource_id, dimension)
    action = next((a for a in target.scheduled_actions if a.name == name), None)
    if action is None:
        if schedule is None:
            raise ValidationException("Schedule is required to create a scheduled action.")
        action = ScheduledAction(
            account_id=account_id,
            name=name,
            arn=resources.scheduled_action_arn(region, account_id, resource_id, name),
            schedule=schedule,
            created_at=now,
        )
        target.scheduled_actions.append(action)
    if schedule is not None:
        action.schedule = schedule
    if timezone is not None:
        action.timezone = timezone
    if start_time is not None:
        action.start_time = start_time
    if end_time is not None:
        action.end_time = end_time
    if min_capacity is not None:
        action.min_capacity = min_capacity
    if max_capacity is not None:
        action.max_capacity = max_capacity
    if (
        action.min_capacity is not None
        and action.max_capacity is not None
        and action.min_capacity > action.max_capacity
    ):
        raise ValidationException("The scheduled action's MinCapacity cannot be greater than its MaxCapacity.")
    if action.min_capacity is not None and action.min_capacity < 1:
        raise ValidationException("MinCapacity must be at least 1: a real-time SageMaker variant keeps one instance.")
    if action.start_time and action.end_time and action.start_time > action.end_time:
        raise ValidationException("StartTime must be before EndTime.")
    action.next_run_at = _next(action, now)
    session.flush()
    return action


def delete(session: Session, *, account_id: str, namespace: str, resource_id: str, dimension: str, name: str) -> None:
    """DeleteScheduledAction."""
    resources.check_scope(namespace, resource_id, dimension)
    target = resources.find_target(session, account_id, resource_id)
    action = None if target is None else next((a for a in target.scheduled_actions if a.name == name), None)
    if action is None:
        raise ObjectNotFoundException(
            f"No scheduled action found for service namespace: {namespace}, resource ID: {resource_id}, "
            f"scalable dimension: {dimension}, scheduled action name: {name}"
        )
    action.target.scheduled_actions.remove(action)  # delete-orphan: gone at the flush
    session.flush()


def describe(
    session: Session,
    *,
    account_id: str,
    namespace: str,
    names: Sequence[str],
    resource_id: str | None,
    dimension: str | None,
    max_results: int | None,
    next_token: str | None,
) -> pagination.Page[ScheduledAction]:
    """DescribeScheduledActions: oldest first."""
    return resources.describe_attached(
        session,
        ScheduledAction,
        op="DescribeScheduledActions",
        account_id=account_id,
        namespace=namespace,
        names=names,
        resource_id=resource_id,
        dimension=dimension,
        max_results=max_results,
        next_token=next_token,
    )


def run_due(session: Session, now: dt.datetime) -> int:
    """Run every scheduled action whose time has come; returns how many this call ran."""
    ran = 0
    due = list(
        session.scalars(
            select(ScheduledAction).where(ScheduledAction.next_run_at.is_not(None), ScheduledAction.next_run_at <= now)
        )
    )
    for action in due:
        planned = action.next_run_at
        following = _next(action, now)
        won = session.execute(
            update(ScheduledAction)
            .where(ScheduledAction.id == action.id, ScheduledAction.next_run_at == planned)
            .values(next_run_at=following)
            .execution_options(synchronize_session=False)
        )
        if not won.rowcount:  # type: ignore[attr-defined]
            continue
        action.next_run_at = following
        if action.target.scheduled_scaling_suspended:
            continue
        _apply(session, action, now)
        ran += 1
    return ran


def next_run(session: Session) -> dt.datetime | None:
    """When the next scheduled action is due (None when none is)."""
    return session.scalar(select(func.min(ScheduledAction.next_run_at)))


def _apply(session: Session, action: ScheduledAction, now: dt.datetime) -> None:
    target = action.target
    if action.min_capacity is not None:
        target.min_capacity = action.min_capacity
    if action.max_capacity is not None:
        target.max_capacity = action.max_capacity
    if target.min_capacity > target.max_capacity:
        # The action gave one bound past the other: the one it gave wins, as the newer intent.
        if action.min_capacity is not None:
            target.max_capacity = target.min_capacity
        else:
            target.min_capacity = target.max_capacity
    cause = f"scheduled action name {action.name} was triggered"
    current = activities.current_capacity(session, target)
    if current is not None and not target.min_capacity <= current <= target.max_capacity:
        targets.clamp(session, target, current, now, cause_prefix=f"{cause}; ")
        return
    bounds = f"min capacity to {target.min_capacity} and max capacity to {target.max_capacity}"
    session.add(
        ScalingActivity(
            activity_id=str(uuid.uuid4()),
            account_id=target.account_id,
            service_namespace=target.service_namespace,
            resource_id=target.resource_id,
            scalable_dimension=target.scalable_dimension,
            description=f"Setting {bounds}",
            cause=cause,
            start_time=now,
            end_time=now,
            status_code=ScalingActivityStatus.SUCCESSFUL,
            status_message=f"Successfully set {bounds}. Change successfully fulfilled by sagemaker.",
        )
    )
