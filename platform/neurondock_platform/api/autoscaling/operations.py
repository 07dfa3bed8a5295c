"""Application Auto Scaling's operations: request members in, response members out."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from neurondock_platform.api import context
from neurondock_platform.api.aws_json import OperationTable
from neurondock_platform.db import utcnow
from neurondock_platform.models import ScalableTarget, ScalingActivity, ScalingPolicy, ScheduledAction
from neurondock_platform.services import monitor, validation
from neurondock_platform.services.autoscaling import activities, policies, resources, scheduled, targets
from neurondock_platform.services.autoscaling.errors import ValidationException

OPERATIONS = OperationTable()
operation = OPERATIONS.operation


def _owner() -> dict[str, str]:
    return {"account_id": context.auth().account_id, "region": context.settings().region}


def _scope(params: dict[str, Any]) -> dict[str, str]:
    return {
        "namespace": params["ServiceNamespace"],
        "resource_id": params["ResourceId"],
        "dimension": params["ScalableDimension"],
    }


def _time(params: dict[str, Any], key: str) -> dt.datetime | None:
    value = params.get(key)
    if value is None:
        return None
    try:
        return validation.to_datetime(value)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise ValidationException(f"{key} is not a valid timestamp.") from exc


def _page(key: str, items: list[dict[str, Any]], token: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {key: items}
    if token:
        out["NextToken"] = token
    return out


# ------------------------------------------------------------------------------------------ targets


def target_shape(target: ScalableTarget) -> dict[str, Any]:
    return {
        "ServiceNamespace": target.service_namespace,
        "ResourceId": target.resource_id,
        "ScalableDimension": target.scalable_dimension,
        "MinCapacity": target.min_capacity,
        "MaxCapacity": target.max_capacity,
        "RoleARN": target.role_arn,
        "CreationTime": target.created_at,
        "SuspendedState": {
            "DynamicScalingInSuspended": target.dynamic_scaling_in_suspended,
            "DynamicScalingOutSuspended": target.dynamic_scaling_out_suspended,
            "ScheduledScalingSuspended": target.scheduled_scaling_suspended,
        },
        "ScalableTargetARN": target.arn,
    }


@operation("RegisterScalableTarget")
def register_scalable_target(params: dict[str, Any]) -> dict[str, Any]:
    target = targets.register(
        context.db(),
        **_owner(),
        **_scope(params),
        min_capacity=params.get("MinCapacity"),
        max_capacity=params.get("MaxCapacity"),
        role_arn=params.get("RoleARN"),
        suspended=params.get("SuspendedState"),
        tags=params.get("Tags"),
        now=utcnow(),
    )
    return {"ScalableTargetARN": target.arn}


@operation("DescribeScalableTargets")
def describe_scalable_targets(params: dict[str, Any]) -> dict[str, Any]:
    page = targets.describe(
        context.db(),
        account_id=context.auth().account_id,
        namespace=params["ServiceNamespace"],
        resource_ids=params.get("ResourceIds") or [],
        dimension=params.get("ScalableDimension"),
        max_results=params.get("MaxResults"),
        next_token=params.get("NextToken"),
    )
    return _page("ScalableTargets", [target_shape(t) for t in page.items], page.next_token)


@operation("DeregisterScalableTarget")
def deregister_scalable_target(params: dict[str, Any]) -> dict[str, Any]:
    targets.deregister(context.db(), account_id=context.auth().account_id, **_scope(params), now=utcnow())
    return {}


# ----------------------------------------------------------------------------------------- policies


def policy_shape(session: Session, policy: ScalingPolicy) -> dict[str, Any]:
    target = policy.target
    config_key = (
        "TargetTrackingScalingPolicyConfiguration"
        if policy.policy_type == policies.TARGET_TRACKING
        else "StepScalingPolicyConfiguration"
    )
    return {
        "PolicyARN": policy.arn,
        "PolicyName": policy.name,
        "ServiceNamespace": target.service_namespace,
        "ResourceId": target.resource_id,
        "ScalableDimension": target.scalable_dimension,
        "PolicyType": policy.policy_type,
        config_key: policy.configuration,
        "Alarms": policies.alarms_of(session, policy),
        "CreationTime": policy.created_at,
    }


@operation("PutScalingPolicy")
def put_scaling_policy(params: dict[str, Any]) -> dict[str, Any]:
    session = context.db()
    policy = policies.put(
        session,
        **_owner(),
        **_scope(params),
        name=params["PolicyName"],
        policy_type=params.get("PolicyType"),
        target_tracking=params.get("TargetTrackingScalingPolicyConfiguration"),
        step=params.get("StepScalingPolicyConfiguration"),
        predictive=params.get("PredictiveScalingPolicyConfiguration"),
        now=utcnow(),
        timing=monitor.timing(context.settings()),
    )
    return {"PolicyARN": policy.arn, "Alarms": policies.alarms_of(session, policy)}


@operation("DescribeScalingPolicies")
def describe_scaling_policies(params: dict[str, Any]) -> dict[str, Any]:
    session = context.db()
    page = policies.describe(
        session,
        account_id=context.auth().account_id,
        namespace=params["ServiceNamespace"],
        names=params.get("PolicyNames") or [],
        resource_id=params.get("ResourceId"),
        dimension=params.get("ScalableDimension"),
        max_results=params.get("MaxResults"),
        next_token=params.get("NextToken"),
    )
    return _page("ScalingPolicies", [policy_shape(session, p) for p in page.items], page.next_token)


@operation("DeleteScalingPolicy")
def delete_scaling_policy(params: dict[str, Any]) -> dict[str, Any]:
    policies.delete(
        context.db(), account_id=context.auth().account_id, **_scope(params), name=params["PolicyName"], now=utcnow()
    )
    return {}


# ---------------------------------------------------------------------------------------- activities


def activity_shape(activity: ScalingActivity) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ActivityId": activity.activity_id,
        "ServiceNamespace": activity.service_namespace,
        "ResourceId": activity.resource_id,
        "ScalableDimension": activity.scalable_dimension,
        "Description": activity.description,
        "Cause": activity.cause,
        "StartTime": activity.start_time,
        "StatusCode": str(activity.status_code),
    }
    if activity.end_time is not None:
        out["EndTime"] = activity.end_time
    if activity.status_message:
        out["StatusMessage"] = activity.status_message
    if activity.details:
        out["Details"] = activity.details
    if activity.not_scaled_reasons:
        out["NotScaledReasons"] = activity.not_scaled_reasons
    return out


@operation("DescribeScalingActivities")
def describe_scaling_activities(params: dict[str, Any]) -> dict[str, Any]:
    if params.get("ScalableDimension") is not None and params.get("ResourceId") is None:
        raise ValidationException("If you specify a scalable dimension, you must also specify a resource ID.")
    resources.check_scope(params["ServiceNamespace"], params.get("ResourceId"), params.get("ScalableDimension"))
    page = activities.describe(
        context.db(),
        account_id=context.auth().account_id,
        resource_id=params.get("ResourceId"),
        include_not_scaled=bool(params.get("IncludeNotScaledActivities")),
        max_results=params.get("MaxResults"),
        next_token=params.get("NextToken"),
    )
    return _page("ScalingActivities", [activity_shape(a) for a in page.items], page.next_token)


# ----------------------------------------------------------------------------------- scheduled actions


def scheduled_shape(action: ScheduledAction) -> dict[str, Any]:
    target = action.target
    out: dict[str, Any] = {
        "ScheduledActionName": action.name,
        "ScheduledActionARN": action.arn,
        "ServiceNamespace": target.service_namespace,
        "Schedule": action.schedule,
        "ResourceId": target.resource_id,
        "ScalableDimension": target.scalable_dimension,
        "CreationTime": action.created_at,
    }
    if action.timezone:
        out["Timezone"] = action.timezone
    if action.start_time is not None:
        out["StartTime"] = action.start_time
    if action.end_time is not None:
        out["EndTime"] = action.end_time
    bounds = {
        k: v for k, v in (("MinCapacity", action.min_capacity), ("MaxCapacity", action.max_capacity)) if v is not None
    }
    if bounds:
        out["ScalableTargetAction"] = bounds
    return out


@operation("PutScheduledAction")
def put_scheduled_action(params: dict[str, Any]) -> dict[str, Any]:
    bounds = params.get("ScalableTargetAction") or {}
    scheduled.put(
        context.db(),
        **_owner(),
        **_scope(params),
        name=params["ScheduledActionName"],
        schedule=params.get("Schedule"),
        timezone=params.get("Timezone"),
        start_time=_time(params, "StartTime"),
        end_time=_time(params, "EndTime"),
        min_capacity=bounds.get("MinCapacity"),
        max_capacity=bounds.get("MaxCapacity"),
        now=utcnow(),
    )
    return {}


@operation("DescribeScheduledActions")
def describe_scheduled_actions(params: dict[str, Any]) -> dict[str, Any]:
    page = scheduled.describe(
        context.db(),
        account_id=context.auth().account_id,
        namespace=params["ServiceNamespace"],
        names=params.get("ScheduledActionNames") or [],
        resource_id=params.get("ResourceId"),
        dimension=params.get("ScalableDimension"),
        max_results=params.get("MaxResults"),
        next_token=params.get("NextToken"),
    )
    return _page("ScheduledActions", [scheduled_shape(a) for a in page.items], page.next_token)


@operation("DeleteScheduledAction")
def delete_scheduled_action(params: dict[str, Any]) -> dict[str, Any]:
    scheduled.delete(
        context.db(), account_id=context.auth().account_id, **_scope(params), name=params["ScheduledActionName"]
    )
    return {}
