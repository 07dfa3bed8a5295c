"""Scaling policies: PutScalingPolicy, DescribeScalingPolicies, DeleteScalingPolicy.

A target tracking policy gets its two CloudWatch alarms the way AWS makes them (docs/autoscaling.md,
"Target tracking"): ``TargetTracking-<ResourceId>-AlarmHigh-<uuid>`` (above the target for 3 of 3
one-minute datapoints) and ``…-AlarmLow-<uuid>`` (below 90 % of it for 15 of 15; none when
DisableScaleIn), both invoking the policy. A step scaling policy runs when a user's alarm lists its
ARN among its actions.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform import sagemaker_metrics as sm
from neurondock_platform.models import MetricAlarm, ScalableTarget, ScalingPolicy
from neurondock_platform.services import pagination, statistics
from neurondock_platform.services.autoscaling import resources
from neurondock_platform.services.autoscaling.errors import (
    NotImplementedFeature,
    ObjectNotFoundException,
    ValidationException,
)
from neurondock_platform.services.cloudwatch import alarms
from neurondock_platform.services.cloudwatch.errors import CloudWatchError
from neurondock_platform.services.cloudwatch.evaluation import Timing

TARGET_TRACKING = "TargetTrackingScaling"
STEP = "StepScaling"
PREDICTIVE = "PredictiveScaling"
INVOCATIONS_PER_INSTANCE = "SageMakerVariantInvocationsPerInstance"
# Predefined SageMaker metric types neurondock does not publish (serverless, high-resolution concurrency,
# inference components).
_UNPUBLISHED = frozenset(
    {
        "SageMakerVariantProvisionedConcurrencyUtilization",
        "SageMakerVariantConcurrentRequestsPerModelHighResolution",
        "SageMakerInferenceComponentInvocationsPerCopy",
        "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution",
    }
)
DEFAULT_COOLDOWN = 300
HIGH_PERIODS = 3
LOW_PERIODS = 15
LOW_FRACTION = 0.9
ALARM_PERIOD = 60


@dataclass(frozen=True)
class TrackedMetric:
    """The metric a target tracking policy keeps at its target."""

    namespace: str
    metric_name: str
    dimensions: list[dict[str, str]]
    statistic: str
    unit: str | None

    @property
    def invocations_per_instance(self) -> bool:
        return self.namespace == sm.SAGEMAKER and self.metric_name == "InvocationsPerInstance"


def tracked_metric(configuration: dict[str, Any], target: ScalableTarget) -> TrackedMetric:
    """The metric of a (checked) target tracking configuration."""
    predefined = configuration.get("PredefinedMetricSpecification")
    if predefined is not None:
        dims = [{"Name": n, "Value": v} for n, v in sm.variant_dimensions(target.endpoint_name, target.variant_name)]
        return TrackedMetric(sm.SAGEMAKER, "InvocationsPerInstance", dims, "Sum", None)
    custom = configuration["CustomizedMetricSpecification"]
    dims = [{"Name": d["Name"], "Value": d["Value"]} for d in custom.get("Dimensions") or []]
    return TrackedMetric(custom["Namespace"], custom["MetricName"], dims, custom["Statistic"], custom.get("Unit"))


def _check_target_tracking(config: dict[str, Any] | None) -> dict[str, Any]:
    if config is None:
        raise ValidationException(
            "TargetTrackingScalingPolicyConfiguration is required for a TargetTrackingScaling policy."
        )
    predefined, custom = config.get("PredefinedMetricSpecification"), config.get("CustomizedMetricSpecification")
    if (predefined is None) == (custom is None):
        raise ValidationException(
            "Exactly one of PredefinedMetricSpecification and CustomizedMetricSpecification must be given."
        )
    if predefined is not None:
        kind = predefined["PredefinedMetricType"]
        if kind in _UNPUBLISHED:
            raise NotImplementedFeature(
                f"PredefinedMetricType {kind} is not implemented by neurondock; use "
                f"{INVOCATIONS_PER_INSTANCE} or a CustomizedMetricSpecification."
            )
        if kind != INVOCATIONS_PER_INSTANCE:
            raise ValidationException(
                f"PredefinedMetricType {kind} is not valid for ScalableDimension {resources.DIMENSION}."
            )
        if predefined.get("ResourceLabel") is not None:
            raise ValidationException("ResourceLabel applies only to the ALBRequestCountPerTarget metric type.")
    elif custom is not None:
        if custom.get("Metrics") is not None:
            raise NotImplementedFeature(
                "Metric math in CustomizedMetricSpecification (Metrics) is not implemented by neurondock."
            )
        for key in ("MetricName", "Namespace", "Statistic"):
            if not custom.get(key):
                raise ValidationException(f"CustomizedMetricSpecification.{key} is required.")
    if float(config["TargetValue"]) <= 0:
        raise ValidationException("TargetValue must be greater than 0.")
    for key in ("ScaleOutCooldown", "ScaleInCooldown"):
        if config.get(key) is not None and int(config[key]) < 0:
            raise ValidationException(f"{key} must not be negative.")
    return dict(config)


def _check_step(config: dict[str, Any] | None) -> dict[str, Any]:
    if config is None:
        raise ValidationException("StepScalingPolicyConfiguration is required for a StepScaling policy.")
    if not config.get("AdjustmentType"):
        raise ValidationException("StepScalingPolicyConfiguration.AdjustmentType is required.")
    steps = config.get("StepAdjustments") or []
    if not steps:
        raise ValidationException("StepScalingPolicyConfiguration.StepAdjustments must hold at least one step.")
    if config.get("MinAdjustmentMagnitude") is not None and config["AdjustmentType"] != "PercentChangeInCapacity":
        raise ValidationException("MinAdjustmentMagnitude applies only to AdjustmentType PercentChangeInCapacity.")
    if config.get("Cooldown") is not None and int(config["Cooldown"]) < 0:
        raise ValidationException("Cooldown must not be negative.")
    _check_steps(steps)
    return dict(config)


def _check_steps(steps: Sequence[dict[str, Any]]) -> None:
    # AWS's rules: no overlap, no gap, one open lower end and one open upper end at most, and a step that
    # reaches below (above) the threshold needs the open lower (upper) one.
    inf = float("inf")
    spans = []
    for step in steps:
        low, high = step.get("MetricIntervalLowerBound"), step.get("MetricIntervalUpperBound")
        if low is None and high is None:
            raise ValidationException("A step adjustment cannot have both a null lower bound and a null upper bound.")
        lo, hi = -inf if low is None else float(low), inf if high is None else float(high)
        if lo >= hi:
            raise ValidationException(f"Step adjustment lower bound {lo} must be less than its upper bound {hi}.")
        spans.append((lo, hi))
    if sum(lo == -inf for lo, _ in spans) > 1 or sum(hi == inf for _, hi in spans) > 1:
        raise ValidationException(
            "Only one step adjustment can have a null lower bound, and only one a null upper bound."
        )
    spans.sort()
    for (_, hi1), (lo2, _) in itertools.pairwise(spans):
        if lo2 < hi1:
            raise ValidationException("Step adjustments must not overlap.")
        if lo2 > hi1:
            raise ValidationException("Step adjustments must not have a gap between them.")
    if spans[0][0] != -inf and spans[0][0] < 0:
        raise ValidationException("A step adjustment below the threshold requires one with a null lower bound.")
    if spans[-1][1] != inf and spans[-1][1] > 0:
        raise ValidationException("A step adjustment above the threshold requires one with a null upper bound.")


def find_by_arn(session: Session, account_id: str, arn: str) -> ScalingPolicy | None:
    """The caller's policy with this ARN (another account's policy is not found)."""
    return session.scalar(select(ScalingPolicy).where(ScalingPolicy.account_id == account_id, ScalingPolicy.arn == arn))


def put(
    session: Session,
    *,
    account_id: str,
    region: str,
    namespace: str,
    resource_id: str,
    dimension: str,
    name: str,
    policy_type: str | None,
    target_tracking: dict[str, Any] | None,
    step: dict[str, Any] | None,
    predictive: dict[str, Any] | None,
    now: dt.datetime,
    timing: Timing,
) -> ScalingPolicy:
    """PutScalingPolicy: create or update; a target tracking policy (re)creates its alarms."""
    target = resources.get_target(session, account_id, namespace, resource_id, dimension)
    kind = policy_type or STEP
    if kind == PREDICTIVE or predictive is not None:
        raise NotImplementedFeature("PredictiveScaling policies are not implemented by neurondock.")
    if kind == TARGET_TRACKING:
        if step is not None:
            raise ValidationException(
                "StepScalingPolicyConfiguration cannot be given with a TargetTrackingScaling policy."
            )
        configuration = _check_target_tracking(target_tracking)
    else:
        if target_tracking is not None:
            raise ValidationException(
                "TargetTrackingScalingPolicyConfiguration cannot be given with a StepScaling policy."
            )
        configuration = _check_step(step)
    policy = next((p for p in target.policies if p.name == name), None)
    if policy is None:
        policy = ScalingPolicy(
            account_id=account_id,
            name=name,
            arn=resources.policy_arn(region, account_id, resource_id, name),
            policy_type=kind,
            configuration=configuration,
            alarms=[],
            created_at=now,
        )
        target.policies.append(policy)
    elif policy.policy_type != kind:
        _delete_alarms(session, policy, now)
    policy.policy_type, policy.configuration = kind, configuration
    session.flush()
    if kind == TARGET_TRACKING:
        _put_alarms(session, policy, target, region, now, timing)
    return policy


def _alarm_name(policy: ScalingPolicy, which: str) -> str:
    for alarm in policy.alarms:
        if f"-{which}-" in alarm["AlarmName"]:
            return str(alarm["AlarmName"])
    return f"TargetTracking-{policy.target.resource_id}-{which}-{uuid.uuid4()}"


def _put_alarms(
    session: Session, policy: ScalingPolicy, target: ScalableTarget, region: str, now: dt.datetime, timing: Timing
) -> None:
    config = policy.configuration
    metric = tracked_metric(config, target)
    goal = float(config["TargetValue"])
    wanted = [("AlarmHigh", HIGH_PERIODS, goal, "GreaterThanThreshold")]
    if not config.get("DisableScaleIn"):
        wanted.append(("AlarmLow", LOW_PERIODS, goal * LOW_FRACTION, "LessThanThreshold"))
    made = []
    for which, periods, threshold, operator in wanted:
        name = _alarm_name(policy, which)
        simple = metric.statistic in statistics.SIMPLE
        spec = alarms.AlarmSpec(
            name=name,
            namespace=metric.namespace,
            metric_name=metric.metric_name,
            dimensions=metric.dimensions,
            statistic=metric.statistic if simple else None,
            extended_statistic=None if simple else metric.statistic,
            period=ALARM_PERIOD,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            threshold=threshold,
            comparison_operator=operator,
            unit=metric.unit,
            description=f"DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {policy.arn}.",
            alarm_actions=[policy.arn],
        )
        try:
            alarm = alarms.put_metric_alarm(
                session,
                account_id=policy.account_id,
                region=region,
                spec=spec,
                now=now,
                timing=timing,
                managed_by=policy.arn,
            )
        except CloudWatchError as exc:
            raise ValidationException(f"The policy's metric cannot be alarmed on: {exc.message}") from exc
        made.append({"AlarmName": alarm.name, "AlarmARN": alarm.arn})
    stale = [a["AlarmName"] for a in policy.alarms if a["AlarmName"] not in {m["AlarmName"] for m in made}]
    if stale:
        alarms.delete_alarms(session, account_id=policy.account_id, names=stale, now=now)
    policy.alarms = made


def _delete_alarms(session: Session, policy: ScalingPolicy, now: dt.datetime) -> None:
    if policy.alarms:
        alarms.delete_alarms(
            session, account_id=policy.account_id, names=[a["AlarmName"] for a in policy.alarms], now=now
        )
    policy.alarms = []


def alarms_of(session: Session, policy: ScalingPolicy) -> list[dict[str, str]]:
    """The alarms that invoke the policy: its own (target tracking), or the user's that list it (step)."""
    if policy.policy_type == TARGET_TRACKING:
        return list(policy.alarms)
    out = []
    for alarm in session.scalars(select(MetricAlarm).where(MetricAlarm.account_id == policy.account_id)):
        if policy.arn in (*alarm.alarm_actions, *alarm.ok_actions, *alarm.insufficient_data_actions):
            out.append({"AlarmName": alarm.name, "AlarmARN": alarm.arn})
    return out


def remove(session: Session, policy: ScalingPolicy, now: dt.datetime) -> None:
    """Delete a policy: its own alarms go with it; a user's alarm only loses the action (as on AWS)."""
    if policy.policy_type == TARGET_TRACKING:
        _delete_alarms(session, policy, now)
    else:
        for alarm in session.scalars(select(MetricAlarm).where(MetricAlarm.account_id == policy.account_id)):
            for column in ("alarm_actions", "ok_actions", "insufficient_data_actions"):
                actions = getattr(alarm, column)
                if policy.arn in actions:
                    setattr(alarm, column, [a for a in actions if a != policy.arn])
    policy.target.policies.remove(policy)  # delete-orphan: gone at the flush
    session.flush()


def delete(
    session: Session,
    *,
    account_id: str,
    namespace: str,
    resource_id: str,
    dimension: str,
    name: str,
    now: dt.datetime,
) -> None:
    """DeleteScalingPolicy."""
    resources.check_scope(namespace, resource_id, dimension)
    target = resources.find_target(session, account_id, resource_id)
    policy = None if target is None else next((p for p in target.policies if p.name == name), None)
    if policy is None:
        raise ObjectNotFoundException(
            f"No scaling policy found for service namespace: {namespace}, resource ID: {resource_id}, "
            f"scalable dimension: {dimension}, policy name: {name}"
        )
    remove(session, policy, now)


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
) -> pagination.Page[ScalingPolicy]:
    """DescribeScalingPolicies: oldest first."""
    return resources.describe_attached(
        session,
        ScalingPolicy,
        op="DescribeScalingPolicies",
        account_id=account_id,
        namespace=namespace,
        names=names,
        resource_id=resource_id,
        dimension=dimension,
        max_results=max_results,
        next_token=next_token,
    )
