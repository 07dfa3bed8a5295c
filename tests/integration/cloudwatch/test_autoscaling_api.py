"""Application Auto Scaling with real boto3: targets, target tracking (and its CloudWatch alarms), step
scaling, scheduled actions, activities through to SageMaker, the SageMaker hooks, isolation.

The reconciler does not run here (the dispatcher only records): ``_converge`` plays its part, setting
the variant's running count to what was asked, or failing it for capacity as the reconciler does.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select
from tests.integration.cloudwatch import cw_helpers
from tests.support.autoscaling import track_invocations, variant_target

from neurondock_platform.services.cloudwatch.evaluation import Timing

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
RESOURCE = "endpoint/ep/variant/AllTraffic"
TARGET = variant_target("ep")
TIMING = Timing(speedup=1.0, flush_seconds=10)
# SQLite only: the store and the evaluator run on PostgreSQL in the cloudwatch tests beside these.
pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)


@pytest.fixture
def sm(clients):
    return clients("sagemaker")


def _endpoint_row(db, name: str, fn) -> None:
    from neurondock_platform.models import Endpoint

    def apply(session):
        fn(session.scalar(select(Endpoint).where(Endpoint.name == name)))

    db(apply)


def _converge(db, name: str = "ep", *, capacity_reason: str | None = None) -> None:
    """What the reconciler does with a capacity change: InService at the new count, or a capacity failure."""
    from neurondock_platform.models import EndpointStatus

    def apply(endpoint):
        endpoint.status = EndpointStatus.IN_SERVICE
        for v in endpoint.variants:
            v.variant_status = None
            if capacity_reason is None:
                v.current_instance_count = v.desired_instance_count
                v.current_weight = v.desired_weight
        endpoint.failure_reason = capacity_reason

    _endpoint_row(db, name, apply)


@pytest.fixture
def endpoint(sm, db):
    sm.create_model(
        ModelName="m",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://b/m.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="c",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.c5.large", "InitialInstanceCount": 1}
        ],
    )
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c")
    _converge(db)
    return "ep"


def _register(aas, lo: int = 1, hi: int = 4, **kw):
    return aas.register_scalable_target(**TARGET, MinCapacity=lo, MaxCapacity=hi, **kw)


def _monitor(session_factory, now: dt.datetime) -> None:
    """One monitor pass as the lease holder would run it (alarms, then activities)."""
    from neurondock_platform.db import session_scope
    from neurondock_platform.services.autoscaling import activities, scheduled
    from neurondock_platform.services.cloudwatch import evaluator

    evaluator.evaluate_due(session_factory, now, TIMING)
    with session_scope(session_factory) as session:
        scheduled.run_due(session, now)
        activities.progress(session, now, retry_seconds=0.0, heartbeat_timeout=15.0)


def _store_ipi(session_factory, account: str, minute: dt.datetime, value: float, endpoint: str = "ep") -> None:
    from neurondock_platform import sagemaker_metrics as sm_metrics
    from neurondock_platform.db import session_scope
    from neurondock_platform.services import metrics

    row = {
        "account_id": account,
        "namespace": "AWS/SageMaker",
        "metric_name": "InvocationsPerInstance",
        "dimensions": sm_metrics.variant_dimensions(endpoint, "AllTraffic"),
        "period_start": minute,
        "period_seconds": 60,
        "sample_count": value,
        "sum": value,
        "minimum": 1.0,
        "maximum": 1.0,
        "unit": "None",
    }
    with session_scope(session_factory) as session:
        metrics.write_points(session, [row])


def test_register_describe_deregister(aas, endpoint):
    arn = _register(aas, 1, 4, Tags={"team": "ml"})["ScalableTargetARN"]
    assert arn.startswith("arn:aws:application-autoscaling:us-east-1:123456789012:scalable-target/")
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"], target["ScalableTargetARN"]) == (1, 4, arn)
    assert target["RoleARN"].endswith("AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint")
    assert target["SuspendedState"] == {
        "DynamicScalingInSuspended": False,
        "DynamicScalingOutSuspended": False,
        "ScheduledScalingSuspended": False,
    }
    aas.register_scalable_target(**TARGET, MaxCapacity=6, SuspendedState={"DynamicScalingInSuspended": True})
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[RESOURCE])["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 6)
    assert target["SuspendedState"]["DynamicScalingInSuspended"] is True
    aas.deregister_scalable_target(**TARGET)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    with pytest.raises(aas.exceptions.ObjectNotFoundException, match="No scalable target registered"):
        aas.deregister_scalable_target(**TARGET)


def test_validation(aas, endpoint):
    from botocore.exceptions import ClientError

    with pytest.raises(aas.exceptions.ValidationException, match="Unsupported service namespace"):
        aas.register_scalable_target(
            ServiceNamespace="ecs",
            ResourceId="service/c/s",
            ScalableDimension="ecs:service:DesiredCount",
            MinCapacity=1,
            MaxCapacity=2,
        )
    with pytest.raises(aas.exceptions.ValidationException, match="Could not find endpoint"):
        aas.register_scalable_target(
            **{**TARGET, "ResourceId": "endpoint/nope/variant/AllTraffic"}, MinCapacity=1, MaxCapacity=2
        )
    with pytest.raises(aas.exceptions.ValidationException, match="MinCapacity and MaxCapacity are required"):
        aas.register_scalable_target(**TARGET, MinCapacity=1)
    with pytest.raises(aas.exceptions.ValidationException, match="cannot be greater"):
        _register(aas, 5, 2)
    # Only an asynchronous endpoint's variant may scale to 0 (tests/e2e/test_async_inference.py).
    with pytest.raises(aas.exceptions.ValidationException, match="real-time SageMaker variant keeps"):
        _register(aas, 0, 2)
    with pytest.raises(ClientError) as err:
        aas.register_scalable_target(
            **{**TARGET, "ScalableDimension": "sagemaker:variant:DesiredProvisionedConcurrency"},
            MinCapacity=1,
            MaxCapacity=2,
        )
    assert err.value.response["Error"]["Code"] == "NotImplemented"
    with pytest.raises(aas.exceptions.ObjectNotFoundException):
        track_invocations(aas, TARGET, 10.0)
    _register(aas)
    with pytest.raises(aas.exceptions.ValidationException, match="overlap"):
        aas.put_scaling_policy(
            PolicyName="s",
            **TARGET,
            PolicyType="StepScaling",
            StepScalingPolicyConfiguration={
                "AdjustmentType": "ChangeInCapacity",
                "StepAdjustments": [
                    {"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1},
                    {"MetricIntervalLowerBound": 5, "MetricIntervalUpperBound": 10, "ScalingAdjustment": 2},
                ],
            },
        )
    with pytest.raises(aas.exceptions.ValidationException, match="not valid for ScalableDimension"):
        aas.put_scaling_policy(
            PolicyName="p",
            **TARGET,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 10.0,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
            },
        )


def test_target_tracking_creates_aws_alarms_and_scales_out_and_in(aas, cw, sm, db, endpoint, session_factory):
    from tests.conftest import ACCOUNT_ID

    _register(aas, 1, 4)
    put = track_invocations(aas, TARGET, 100.0, name="invocations", ScaleInCooldown=0, ScaleOutCooldown=0)
    assert ":scalingPolicy:" in put["PolicyARN"] and put["PolicyARN"].endswith(
        f"resource/sagemaker/{RESOURCE}:policyName/invocations"
    )
    names = sorted(a["AlarmName"] for a in put["Alarms"])
    assert names[0].startswith(f"TargetTracking-{RESOURCE}-AlarmHigh-")
    assert names[1].startswith(f"TargetTracking-{RESOURCE}-AlarmLow-")
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix="TargetTracking-")["MetricAlarms"]}
    high, low = alarms[names[0]], alarms[names[1]]
    assert (high["MetricName"], high["Namespace"], high["Statistic"], high["Period"]) == (
        "InvocationsPerInstance",
        "AWS/SageMaker",
        "Sum",
        60,
    )
    assert (high["EvaluationPeriods"], high["Threshold"], high["ComparisonOperator"]) == (
        3,
        100.0,
        "GreaterThanThreshold",
    )
    assert (low["EvaluationPeriods"], low["Threshold"], low["ComparisonOperator"]) == (15, 90.0, "LessThanThreshold")
    assert high["AlarmActions"] == [put["PolicyARN"]] and high["AlarmDescription"].startswith("DO NOT EDIT OR DELETE.")
    described = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]
    assert described["Alarms"] == put["Alarms"] and described["PolicyType"] == "TargetTrackingScaling"

    now = cw_helpers.soon()
    cw_helpers.backdate(db, cw_helpers.minute(now, -20))
    for offset in (-3, -2, -1):
        _store_ipi(session_factory, ACCOUNT_ID, cw_helpers.minute(now, offset), 350.0)  # 3.5 x the target on 1 instance
    _monitor(session_factory, now + dt.timedelta(seconds=11))
    (activity,) = aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"]
    assert activity["Description"] == "Setting desired instance count to 4."
    assert activity["Cause"] == f"monitor alarm {names[0]} in state ALARM triggered policy invocations"
    assert activity["StatusCode"] == "InProgress"
    described = sm.describe_endpoint(EndpointName="ep")
    assert described["EndpointStatus"] == "Updating"
    variant = described["ProductionVariants"][0]
    assert (variant["DesiredInstanceCount"], variant["CurrentInstanceCount"]) == (4, 1)
    assert variant["VariantStatus"][0]["StatusMessage"] == "Scaling out desired instance count to 4."
    _converge(db)
    _monitor(session_factory, now + dt.timedelta(seconds=12))
    (activity,) = aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"]
    assert activity["StatusCode"] == "Successful"
    assert (
        activity["StatusMessage"]
        == "Successfully set desired instance count to 4. Change successfully fulfilled by sagemaker."
    )
    history = cw.describe_alarm_history(AlarmName=names[0], HistoryItemType="Action")["AlarmHistoryItems"]
    assert history[0]["HistorySummary"] == f"Successfully executed action {put['PolicyARN']}"

    # Quiet but not idle for 15 minutes (4 instances at 30 each): AlarmLow scales in to ceil(4 x 30 / 100) = 2.
    later = now + dt.timedelta(minutes=20)
    for offset in range(-15, 0):
        _store_ipi(session_factory, ACCOUNT_ID, cw_helpers.minute(later, offset), 30.0)
    _monitor(session_factory, later + dt.timedelta(seconds=11))
    newest = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=RESOURCE)["ScalingActivities"][0]
    assert newest["Description"] == "Setting desired instance count to 2."
    assert newest["Cause"] == f"monitor alarm {names[1]} in state ALARM triggered policy invocations"
    assert sm.describe_endpoint(EndpointName="ep")["ProductionVariants"][0]["VariantStatus"][0]["StatusMessage"] == (
        "Scaling in desired instance count to 2."
    )


def test_no_traffic_means_no_scale_in(aas, cw, db, endpoint, session_factory):
    """SageMaker publishes nothing without traffic: AlarmLow stays INSUFFICIENT_DATA and nothing scales in."""
    _register(aas, 1, 4)
    aas.register_scalable_target(**TARGET, MinCapacity=3)  # the new minimum scales out at once
    (activity,) = aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"]
    assert (activity["Description"], activity["Cause"]) == (
        "Setting desired instance count to 3.",
        "minimum capacity was set to 3",
    )
    _converge(db)
    aas.register_scalable_target(**TARGET, MinCapacity=1)
    track_invocations(aas, TARGET, 100.0, ScaleInCooldown=0)
    now = cw_helpers.soon()
    cw_helpers.backdate(db, cw_helpers.minute(now, -20))
    _monitor(session_factory, now + dt.timedelta(seconds=11))
    states = {a["AlarmName"].split("-")[-6]: a["StateValue"] for a in cw.describe_alarms()["MetricAlarms"]}
    assert set(states.values()) == {"INSUFFICIENT_DATA"}
    assert len(aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"]) == 1


def test_step_scaling_on_a_users_alarm_with_limits_and_suspension(aas, cw, db, endpoint, session_factory):
    _register(aas, 1, 3)
    arn = aas.put_scaling_policy(
        PolicyName="errors-step",
        **TARGET,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "Cooldown": 0,
            "StepAdjustments": [
                {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 10, "ScalingAdjustment": 1},
                {"MetricIntervalLowerBound": 10, "ScalingAdjustment": 3},
            ],
        },
    )["PolicyARN"]
    cw.put_metric_alarm(
        AlarmName="errors",
        Namespace="App",
        MetricName="Errors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanThreshold",
        AlarmActions=[arn],
    )
    assert (
        aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]["Alarms"][0]["AlarmName"]
        == "errors"
    )
    # SetAlarmState invokes the policy at the threshold: the first step adds one instance.
    cw.set_alarm_state(AlarmName="errors", StateValue="ALARM", StateReason="test")
    (activity,) = aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"]
    assert activity["Description"] == "Setting desired instance count to 2."
    _converge(db)
    # 20 errors are 15 over the threshold: +3, clamped to the maximum of 3.
    now = cw_helpers.soon()
    cw.put_metric_data(
        Namespace="App", MetricData=[{"MetricName": "Errors", "Value": 20.0, "Timestamp": cw_helpers.minute(now, -1)}]
    )
    cw_helpers.backdate(db, cw_helpers.minute(now, -5))
    _monitor(session_factory, now + dt.timedelta(seconds=11))
    newest = aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"][0]
    assert newest["Description"] == "Setting desired instance count to 3."
    _converge(db)
    _monitor(session_factory, now + dt.timedelta(seconds=12))
    # At the maximum: a not scaled activity, shown only when asked for.
    cw_helpers.backdate(db, cw_helpers.minute(now, -5))
    _monitor(session_factory, now + dt.timedelta(seconds=13))
    shown = aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"]
    assert all("NotScaledReasons" not in a for a in shown)
    every = aas.describe_scaling_activities(ServiceNamespace="sagemaker", IncludeNotScaledActivities=True)[
        "ScalingActivities"
    ]
    assert every[0]["NotScaledReasons"] == [{"Code": "AlreadyAtMaxCapacity", "MaxCapacity": 3}]
    assert (
        every[0]["Description"] == "Attempting to scale due to alarm triggered" and every[0]["StatusCode"] == "Failed"
    )
    # Deleting the policy removes the action from the user's alarm, not the alarm.
    aas.delete_scaling_policy(PolicyName="errors-step", **TARGET)
    (alarm,) = cw.describe_alarms(AlarmNames=["errors"])["MetricAlarms"]
    assert alarm["AlarmActions"] == []


def test_unfulfilled_activity_completes_when_capacity_appears(aas, sm, db, endpoint, session_factory):
    reason = (
        "InsufficientInstanceCapacity: no live host has 1 adjacent free emulated Inferentia chip(s) for ml.inf1.xlarge."
    )
    _register(aas, 1, 4)
    aas.register_scalable_target(**TARGET, MinCapacity=3)
    now = cw_helpers.soon()
    _converge(db, capacity_reason=reason)
    _monitor(session_factory, now)
    (activity,) = aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"]
    assert activity["StatusCode"] == "Unfulfilled"
    assert activity["StatusMessage"] == f"Failed to set desired instance count to 3. Reason: {reason}"
    # The retry asks SageMaker again (ml.c5 needs no chips: capacity is there now), then completes.
    _monitor(session_factory, now + dt.timedelta(seconds=20))
    assert sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "Updating"
    _converge(db)
    _monitor(session_factory, now + dt.timedelta(seconds=21))
    (activity,) = aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"]
    assert activity["StatusCode"] == "Successful"


def test_scheduled_action_sets_bounds_and_scales(aas, db, endpoint, session_factory):
    _register(aas, 1, 4)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    at = (now + dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S")
    aas.put_scheduled_action(
        ScheduledActionName="morning",
        **TARGET,
        Schedule=f"at({at})",
        ScalableTargetAction={"MinCapacity": 2, "MaxCapacity": 5},
    )
    (action,) = aas.describe_scheduled_actions(ServiceNamespace="sagemaker")["ScheduledActions"]
    assert action["Schedule"] == f"at({at})" and action["ScalableTargetAction"] == {"MinCapacity": 2, "MaxCapacity": 5}
    assert action["ScheduledActionARN"].endswith(f"resource/sagemaker/{RESOURCE}:scheduledActionName/morning")
    _monitor(session_factory, now + dt.timedelta(minutes=1))
    assert aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"] == []
    _monitor(session_factory, now + dt.timedelta(minutes=2, seconds=1))
    (activity,) = aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"]
    assert activity["Description"] == "Setting desired instance count to 2."
    assert activity["Cause"] == "scheduled action name morning was triggered; minimum capacity was set to 2"
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 5)
    with pytest.raises(aas.exceptions.ValidationException, match="cron"):
        aas.put_scheduled_action(ScheduledActionName="bad", **TARGET, Schedule="cron(0 9 * * MON *)")
    aas.delete_scheduled_action(ScheduledActionName="morning", **TARGET)
    assert aas.describe_scheduled_actions(ServiceNamespace="sagemaker")["ScheduledActions"] == []


def test_sagemaker_hooks(aas, cw, sm, db, endpoint):
    _register(aas, 1, 4)
    track_invocations(aas, TARGET, 100.0)
    sm.update_endpoint_weights_and_capacities(
        EndpointName="ep", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}]
    )
    _converge(db)
    sm.create_endpoint_config(
        EndpointConfigName="bigger",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.c5.xlarge", "InitialInstanceCount": 1}
        ],
    )
    with pytest.raises(sm.exceptions.ClientError, match="registered for automatic scaling"):
        sm.update_endpoint(EndpointName="ep", EndpointConfigName="bigger")
    # A model-only change is allowed, and RetainAllVariantProperties keeps the autoscaled count.
    sm.create_model(
        ModelName="m2",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/r",
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://b/m2.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="newer",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "m2", "InstanceType": "ml.c5.large", "InitialInstanceCount": 1}
        ],
    )
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="newer", RetainAllVariantProperties=True)
    from neurondock_platform.models import Endpoint

    pending = db(lambda s: s.scalar(select(Endpoint).where(Endpoint.name == "ep")).extra["pending"])
    assert pending["ProductionVariants"][0]["DesiredInstanceCount"] == 3
    _converge(db)
    # DeleteEndpoint deregisters the target, and the policy's alarms go with it.
    sm.delete_endpoint(EndpointName="ep")
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    assert cw.describe_alarms()["MetricAlarms"] == []


def test_another_account_sees_none_of_it(aas, cw, clients, other, endpoint):
    _register(aas)
    track_invocations(aas, TARGET, 100.0)
    keys = {"access_key": other["access_key"], "secret_key": other["secret_key"]}
    theirs = clients("application-autoscaling", **keys)
    assert theirs.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert theirs.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    assert theirs.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"] == []
    with pytest.raises(theirs.exceptions.ObjectNotFoundException):
        theirs.deregister_scalable_target(**TARGET)
    with pytest.raises(theirs.exceptions.ValidationException, match="Could not find endpoint"):
        theirs.register_scalable_target(**TARGET, MinCapacity=1, MaxCapacity=9)
    # Their alarm naming our policy's ARN cannot drive our endpoint.
    policy_arn = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]["PolicyARN"]
    their_cw = clients("cloudwatch", **keys)
    their_cw.put_metric_alarm(
        AlarmName="hijack",
        Namespace="X",
        MetricName="Y",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0,
        ComparisonOperator="GreaterThanThreshold",
        AlarmActions=[policy_arn],
    )
    their_cw.set_alarm_state(AlarmName="hijack", StateValue="ALARM", StateReason="hijack")
    history = their_cw.describe_alarm_history(AlarmName="hijack", HistoryItemType="Action")["AlarmHistoryItems"]
    assert history[0]["HistorySummary"] == f"Failed to execute action {policy_arn}"
    assert "exists in account" in json.loads(history[0]["HistoryData"])["error"]
    assert aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"] == []
    assert len(cw.describe_alarms()["MetricAlarms"]) == 2
