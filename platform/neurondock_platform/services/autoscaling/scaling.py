"""What a policy does when its alarm invokes it (docs/autoscaling.md, "Target tracking", "Step scaling").

Target tracking: AlarmHigh in ALARM scales out to ``ceil(capacity × metric / target)``; AlarmLow in
ALARM scales in to the same figure (never below the minimum, never while DisableScaleIn or within
ScaleInCooldown). ``capacity`` is the instance count that produced the metric: a datapoint measured
before the last change was serving, during that change's ScaleOutCooldown, is read against the
capacity before it, so a scale-out in flight is not counted twice. Step scaling: the alarm's newest
datapoint minus its threshold picks the step; its Cooldown holds back a second scale-out unless it
is larger, and any further scale-in. Everything is clamped to [MinCapacity, MaxCapacity], and
suspended directions do nothing.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from neurondock_platform.models import AlarmState, MetricAlarm, ScalableTarget, ScalingPolicy
from neurondock_platform.services.autoscaling import activities, policies
from neurondock_platform.services.cloudwatch.evaluation import Datapoint, Timing


@dataclass(frozen=True)
class Invocation:
    """What invoking a policy did: started an activity (``acted``), nothing, or failed with ``error``."""

    acted: bool = False
    error: str | None = None


def _cause(alarm: MetricAlarm, policy: ScalingPolicy) -> str:
    return f"monitor alarm {alarm.name} in state {alarm.state_value} triggered policy {policy.name}"


def _within(since: dt.datetime | None, now: dt.datetime, seconds: float) -> bool:
    return since is not None and (now - since).total_seconds() < seconds


def invoke_policy(
    session: Session,
    arn: str,
    alarm: MetricAlarm,
    *,
    newest: Datapoint | None,
    now: dt.datetime,
    timing: Timing,
) -> Invocation:
    """Run the policy an alarm action names (only a policy of the alarm's own account)."""
    policy = policies.find_by_arn(session, alarm.account_id, arn)
    if policy is None:
        return Invocation(error=f"No scaling policy with ARN {arn} exists in account {alarm.account_id}")
    target = policy.target
    current = activities.current_capacity(session, target)
    if current is None:
        return Invocation(error=f"The endpoint {target.endpoint_name} or its variant {target.variant_name} is gone")
    if policy.policy_type == policies.TARGET_TRACKING:
        return _target_tracking(session, policy, target, alarm, current, newest, now, timing)
    return _step(session, policy, target, alarm, current, newest, now, timing)


def _start(session: Session, target: ScalableTarget, desired: int, cause: str, now: dt.datetime) -> None:
    serving = _serving(session, target)
    activities.start(
        session,
        target,
        desired=desired,
        description=f"Setting desired instance count to {desired}.",
        cause=cause,
        now=now,
    )
    target.capacity_before_change = serving
    target.capacity_changed_at = None


def _serving(session: Session, target: ScalableTarget) -> int:
    variant = activities.variant_of(session, target)
    return variant.current_instance_count if variant is not None else 0


def _basis(target: ScalableTarget, current: int, newest: Datapoint, now: dt.datetime, cooldown_out: float) -> int:
    """The instance count that produced ``newest``."""
    before = target.capacity_before_change
    if before is None or not _within(target.last_scale_out_at, now, cooldown_out):
        return current
    changed = target.capacity_changed_at
    return before if changed is None or newest.timestamp < changed else current


def _clamp(target: ScalableTarget, capacity: int) -> int:
    return max(target.min_capacity, min(target.max_capacity, capacity))


def _target_tracking(
    session: Session,
    policy: ScalingPolicy,
    target: ScalableTarget,
    alarm: MetricAlarm,
    current: int,
    newest: Datapoint | None,
    now: dt.datetime,
    timing: Timing,
) -> Invocation:
    if alarm.state_value != AlarmState.ALARM or newest is None:
        return Invocation()
    config = policy.configuration
    goal = float(config["TargetValue"])
    cooldown_out = timing.duration(float(config.get("ScaleOutCooldown", policies.DEFAULT_COOLDOWN)))
    cooldown_in = timing.duration(float(config.get("ScaleInCooldown", policies.DEFAULT_COOLDOWN)))
    basis = _basis(target, current, newest, now, cooldown_out)
    # A hair below the integer so that exactly-on-target does not round up (floating error).
    # Only a target whose minimum is 0 (an async endpoint's variant) may track down to no instance.
    wanted = max(min(1, target.min_capacity), math.ceil(basis * newest.value / goal - 1e-9))
    desired = _clamp(target, wanted)
    cause = _cause(alarm, policy)
    if "-AlarmHigh-" in alarm.name:
        if target.dynamic_scaling_out_suspended:
            return Invocation()
        if desired <= current:
            if wanted > current and current >= target.max_capacity:
                activities.not_scaled(
                    session,
                    target,
                    cause=cause,
                    reason={"Code": "AlreadyAtMaxCapacity", "MaxCapacity": target.max_capacity},
                    now=now,
                )
            return Invocation()
        _start(session, target, desired, cause, now)
        target.last_scale_out_at = now
        return Invocation(acted=True)
    if config.get("DisableScaleIn") or target.dynamic_scaling_in_suspended:
        return Invocation()
    if _within(target.last_scale_in_at, now, cooldown_in) and not _scaled_out_since(target):
        return Invocation()
    if desired >= current:
        if wanted < current and current <= target.min_capacity:
            activities.not_scaled(
                session,
                target,
                cause=cause,
                reason={"Code": "AlreadyAtMinCapacity", "MinCapacity": target.min_capacity},
                now=now,
            )
        return Invocation()
    _start(session, target, desired, cause, now)
    target.last_scale_in_at = now
    return Invocation(acted=True)


def _scaled_out_since(target: ScalableTarget) -> bool:
    # A scale-out ends a scale-in cooldown (AWS: the scale-out wins and the cooldown stops).
    return (
        target.last_scale_out_at is not None
        and target.last_scale_in_at is not None
        and target.last_scale_out_at > target.last_scale_in_at
    )


def _step_adjustment(steps: list[dict[str, Any]], delta: float) -> int | None:
    # Above the threshold the lower bound is inclusive; below it, the upper bound is.
    for step in steps:
        low, high = step.get("MetricIntervalLowerBound"), step.get("MetricIntervalUpperBound")
        lo = -math.inf if low is None else float(low)
        hi = math.inf if high is None else float(high)
        inside = lo <= delta < hi if delta >= 0 else lo < delta <= hi
        if inside:
            return int(step["ScalingAdjustment"])
    return None


def _percent_change(current: int, percent: int, minimum: int | None) -> int:
    change = current * percent / 100.0
    if 0 < change < 1:
        whole = 1
    elif -1 < change < 0:
        whole = -1
    else:
        whole = math.floor(change) if change > 0 else math.ceil(change)
    if minimum is not None and 0 < abs(whole) < minimum:
        whole = minimum if whole > 0 else -minimum
    return whole


def _step(
    session: Session,
    policy: ScalingPolicy,
    target: ScalableTarget,
    alarm: MetricAlarm,
    current: int,
    newest: Datapoint | None,
    now: dt.datetime,
    timing: Timing,
) -> Invocation:
    config = policy.configuration
    # A forced state (SetAlarmState) carries no datapoint: it counts as at the threshold.
    value = newest.value if newest is not None else alarm.threshold
    adjustment = _step_adjustment(list(config["StepAdjustments"]), value - alarm.threshold)
    if adjustment is None:
        return Invocation()
    kind = config["AdjustmentType"]
    if kind == "ExactCapacity":
        wanted = adjustment
    elif kind == "PercentChangeInCapacity":
        wanted = current + _percent_change(current, adjustment, config.get("MinAdjustmentMagnitude"))
    else:
        wanted = current + adjustment
    desired = _clamp(target, wanted)
    cooldown = timing.duration(float(config.get("Cooldown", policies.DEFAULT_COOLDOWN)))
    cause = _cause(alarm, policy)
    in_cooldown = _within(policy.last_adjusted_at, now, cooldown)
    if desired > current:
        if target.dynamic_scaling_out_suspended:
            return Invocation()
        last = policy.last_adjustment or 0
        base = target.capacity_before_change if target.capacity_before_change is not None else current
        if in_cooldown and last > 0 and desired - base <= last:
            return Invocation()
        _start(session, target, desired, cause, now)
        policy.last_adjusted_at, policy.last_adjustment = now, desired - current
        target.last_scale_out_at = now
        return Invocation(acted=True)
    if desired < current:
        if target.dynamic_scaling_in_suspended:
            return Invocation()
        if in_cooldown and (policy.last_adjustment or 0) < 0 and not _scaled_out_since(target):
            return Invocation()
        _start(session, target, desired, cause, now)
        policy.last_adjusted_at, policy.last_adjustment = now, desired - current
        target.last_scale_in_at = now
        return Invocation(acted=True)
    if wanted != current:
        code, bound = (
            ("AlreadyAtMaxCapacity", {"MaxCapacity": target.max_capacity})
            if wanted > current
            else ("AlreadyAtMinCapacity", {"MinCapacity": target.min_capacity})
        )
        activities.not_scaled(session, target, cause=cause, reason={"Code": code, **bound}, now=now)
    return Invocation()
