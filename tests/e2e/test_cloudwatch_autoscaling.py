"""CloudWatch and Application Auto Scaling on a live `neurondock up`, driven by real boto3 and the AWS CLI.

One platform for the module, with the operator's speed-up knob on (``NEURONDOCK_SCALING_SPEEDUP=30``:
a 60 s alarm period is judged over 2 s of data, cooldowns of 300 s last 10 s) and the data plane
flushing every second, so alarms and scaling run in seconds instead of minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.autoscaling import deploy
from tests.support.cloudwatch import write_query_model
from tests.support.load import InvokeLoad, signed_headers
from tests.support.platform import ACCESS_KEY, ACCOUNT_ID, REGION, SECRET_KEY, Platform, running_platform

WAIT = {"Delay": 0.2, "MaxAttempts": 600}
SPEEDUP = "30"
FAILING_HANDLER = """
def model_fn(model_dir):
    return None

def transform_fn(model, data, content_type, accept):
    if data == b"fail":
        raise RuntimeError("the model gave up")
    return b"ok", "text/plain"
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    yield from running_platform(
        tmp_path_factory.mktemp("nd-cw"),
        extra_env={"NEURONDOCK_SCALING_SPEEDUP": SPEEDUP, "NEURONDOCK_METRICS_FLUSH_SECONDS": "1"},
    )


@pytest.fixture(scope="module")
def cw(platform):
    return platform.client("cloudwatch")


@pytest.fixture(scope="module")
def aas(platform):
    return platform.client("application-autoscaling")


def _until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll ``check`` until it returns something truthy (no fixed sleeps stand in for readiness)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _load(platform: Platform, name: str, body: bytes, content_type: str, *, rate: float) -> InvokeLoad:
    path = f"/endpoints/{name}/invocations"
    headers = signed_headers(platform.url, REGION, ACCESS_KEY, SECRET_KEY, path, body, content_type)
    return InvokeLoad(platform.port, path, body, headers, threads=4, rate=rate)


def _dims(name: str) -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}]


def test_invocations_are_cloudwatch_metrics(platform, sm, rt, s3, bucket, cw, tmp_path):
    name = deploy(sm, s3, bucket, tmp_path)
    body = json.dumps([[0.5] * 16])
    started = dt.datetime.now(dt.UTC)
    for _ in range(25):
        rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=body)
    query = {
        "Id": "invocations",
        "MetricStat": {
            "Metric": {"Namespace": "AWS/SageMaker", "MetricName": "Invocations", "Dimensions": _dims(name)},
            "Period": 60,
            "Stat": "Sum",
        },
    }

    def counted() -> list[dict[str, Any]] | None:
        (result,) = cw.get_metric_data(
            MetricDataQueries=[query],
            StartTime=started - dt.timedelta(minutes=1),
            EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
        )["MetricDataResults"]
        return result if sum(result["Values"]) == 25 else None

    result = _until("the 25 invocations in GetMetricData", counted, 30)
    assert result["Timestamps"] == sorted(result["Timestamps"], reverse=True)  # newest first
    stats = cw.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName="ModelLatency",
        Dimensions=_dims(name),
        StartTime=started - dt.timedelta(minutes=1),
        EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
        Period=60,
        ExtendedStatistics=["p50", "p99"],
    )
    assert stats["Datapoints"] and all(p["Unit"] == "Microseconds" for p in stats["Datapoints"])
    assert all(0 < p["ExtendedStatistics"]["p50"] <= p["ExtendedStatistics"]["p99"] for p in stats["Datapoints"])
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="AWS/SageMaker", Dimensions=_dims(name))["Metrics"]}
    assert {"Invocations", "InvocationsPerInstance", "ModelLatency", "OverheadLatency"} <= names

    def instance_metrics() -> set[str]:
        listed = cw.list_metrics(Namespace="/aws/sagemaker/Endpoints", Dimensions=_dims(name))["Metrics"]
        return {m["MetricName"] for m in listed} >= {"CPUUtilization", "MemoryUtilization"}

    _until("the host agent's instance metrics", instance_metrics, 30)
    memory = cw.get_metric_statistics(
        Namespace="/aws/sagemaker/Endpoints",
        MetricName="MemoryUtilization",
        Dimensions=_dims(name),
        StartTime=started - dt.timedelta(minutes=1),
        EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
        Period=300,
        Statistics=["Maximum"],
    )["Datapoints"]
    # A replica's resident memory, in percent of ml.c5.large's 4 GiB.
    assert memory and all(0 < p["Maximum"] < 100 and p["Unit"] == "Percent" for p in memory)
    sm.delete_endpoint(EndpointName=name)


def test_an_invocation_5xx_alarm_fires_when_the_model_starts_failing(platform, sm, rt, s3, bucket, cw, tmp_path):
    name = deploy(sm, s3, bucket, tmp_path, code={"inference.py": FAILING_HANDLER})
    alarm = f"{name}-5xx"
    cw.put_metric_alarm(
        AlarmName=alarm,
        Namespace="AWS/SageMaker",
        MetricName="Invocation5XXErrors",
        Dimensions=_dims(name),
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",
    )
    cw.get_waiter("alarm_exists").wait(AlarmNames=[alarm], WaiterConfig={"Delay": 1, "MaxAttempts": 5})

    def state() -> str:
        return str(cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["StateValue"])

    # Healthy traffic: the alarm leaves INSUFFICIENT_DATA for OK.
    with _load(platform, name, b"fine", "text/plain", rate=10) as healthy:
        _until("the alarm to be OK", lambda: state() == "OK", 30)
    assert healthy.statuses.keys() == {200}
    with _load(platform, name, b"fail", "text/plain", rate=10) as failing:
        _until("the alarm to fire", lambda: state() == "ALARM", 30)
    assert set(failing.statuses) == {424}  # ModelError: the container answered 500
    (described,) = cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
    assert described["StateReason"].startswith("Threshold Crossed: 1 datapoint [")
    history = cw.describe_alarm_history(AlarmName=alarm, HistoryItemType="StateUpdate", ScanBy="TimestampAscending")
    assert [h["HistorySummary"] for h in history["AlarmHistoryItems"]][-2:] == [
        "Alarm updated from INSUFFICIENT_DATA to OK",
        "Alarm updated from OK to ALARM",
    ]
    cw.delete_alarms(AlarmNames=[alarm])
    sm.delete_endpoint(EndpointName=name)


# Most of a minute even with the speed-up knob: the slow run has it; the API tests scale in seconds.
@pytest.mark.slow
def test_target_tracking_scales_out_under_load_and_back_in(platform, sm, s3, bucket, cw, aas, tmp_path):
    """1 → 3 instances under a load generator, back to 1 on a trickle, with no failed invocation."""
    name = deploy(sm, s3, bucket, tmp_path)
    resource = f"endpoint/{name}/variant/AllTraffic"
    # The operator CLI's one-liner (RegisterScalableTarget + PutScalingPolicy through boto3): 500
    # invocations per instance per minute; 20/s is 1,200 a minute, three instances' worth.
    autoscale = ["autoscale", name, "--min", "1", "--max", "3", "--target", "500", "--policy-name", "invocations"]
    policy = _neurondock(platform, "endpoints", *autoscale)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])["ScalableTargets"]
    high = next(a["AlarmName"] for a in policy["Alarms"] if "-AlarmHigh-" in a["AlarmName"])
    low = next(a["AlarmName"] for a in policy["Alarms"] if "-AlarmLow-" in a["AlarmName"])

    def count() -> int:
        variant = sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]
        return (
            int(variant["CurrentInstanceCount"])
            if variant["DesiredInstanceCount"] == variant["CurrentInstanceCount"]
            else -1
        )

    body = json.dumps([[0.25] * 16]).encode()
    with _load(platform, name, body, "application/json", rate=20) as load:
        _until("scale-out to 3 instances", lambda: count() == 3, 120)
        load.set_rate(2)  # a trickle: SageMaker publishes nothing without traffic, so none would scale in
        _until("scale-in to 1 instance", lambda: count() == 1, 180)
    assert load.errors == [] and set(load.statuses) == {200}, (load.statuses, load.errors[:3])

    def finished() -> list[dict[str, Any]] | None:
        found = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=resource)["ScalingActivities"]
        return found if found[0]["StatusCode"] == "Successful" else None

    activities = _until("the scale-in activity to be recorded as done", finished, 30)
    done = [(a["Description"], a["StatusCode"]) for a in reversed(activities)]
    assert ("Setting desired instance count to 3.", "Successful") in done
    assert done[-1] == ("Setting desired instance count to 1.", "Successful")
    out = next(a for a in activities if a["Description"] == "Setting desired instance count to 3.")
    assert out["Cause"] == f"monitor alarm {high} in state ALARM triggered policy invocations"
    assert (
        out["StatusMessage"]
        == "Successfully set desired instance count to 3. Change successfully fulfilled by sagemaker."
    )
    assert activities[0]["Cause"] == f"monitor alarm {low} in state ALARM triggered policy invocations"
    for alarm in (high, low):
        changes = cw.describe_alarm_history(AlarmName=alarm, HistoryItemType="StateUpdate")["AlarmHistoryItems"]
        assert any(h["HistorySummary"].endswith("to ALARM") for h in changes), alarm
    shown = _neurondock(platform, "endpoints", "scaling", name)
    newest = shown["ScalingActivities"][0]
    assert shown["ScalableTarget"]["MaxCapacity"] == 3
    assert (newest["ActivityId"], newest["StatusCode"]) == (activities[0]["ActivityId"], "Successful")
    assert set(shown["AlarmStates"]) == {high, low}
    # The instance count over time is a metric like the others.
    counts = cw.get_metric_statistics(
        Namespace="neurondock/Endpoints",
        MetricName="InstanceCount",
        Dimensions=_dims(name),
        StartTime=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10),
        EndTime=dt.datetime.now(dt.UTC),
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    assert max(p["Maximum"] for p in counts) == 3
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=WAIT)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])["ScalableTargets"] == []
    assert cw.describe_alarms(AlarmNames=[high, low])["MetricAlarms"] == []


def _cli(env: dict[str, str], *args: str) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "awscli", *args, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def _neurondock(platform: Platform, *args: str) -> Any:
    """The operator CLI, configured from the banner's export lines, with JSON output."""
    proc = subprocess.run(
        [sys.executable, "-m", "neurondock_platform.cli", *args, "-o", "json"],
        env=_banner_env(platform),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _banner_env(platform: Platform) -> dict[str, str]:
    """The environment the `export` lines `up` printed give a shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    for line in platform.output:
        if line.startswith("export "):
            env.update(pair.split("=", 1) for pair in line.split()[1:])
    return env


def test_the_aws_cli_in_both_protocols(platform, tmp_path):
    env = _banner_env(platform)
    assert env["AWS_ENDPOINT_URL_CLOUDWATCH"] == platform.url
    assert env["AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING"] == platform.url
    # The installed AWS CLI v1 sends AWS JSON 1.0 (its botocore is ≥ 1.42.7).
    _cli(env, "cloudwatch", "put-metric-data", "--namespace", "Cli", "--metric-name", "Jobs", "--value", "3")
    metrics = _cli(env, "cloudwatch", "list-metrics", "--namespace", "Cli")["Metrics"]
    assert [m["MetricName"] for m in metrics] == ["Jobs"]
    assert _cli(env, "application-autoscaling", "describe-scalable-targets", "--service-namespace", "sagemaker") == {
        "ScalableTargets": []
    }
    # Older CLIs speak Query: the same CLI with a model that lists only the query protocol.
    write_query_model(tmp_path / "models")
    legacy = {**env, "AWS_DATA_PATH": str(tmp_path / "models")}
    _cli(
        legacy,
        "cloudwatch",
        "put-metric-alarm",
        "--alarm-name",
        "cli-jobs",
        "--namespace",
        "Cli",
        "--metric-name",
        "Jobs",
        "--statistic",
        "Sum",
        "--period",
        "60",
        "--evaluation-periods",
        "1",
        "--threshold",
        "5",
        "--comparison-operator",
        "GreaterThanThreshold",
    )
    alarms = _cli(legacy, "cloudwatch", "describe-alarms", "--alarm-names", "cli-jobs")["MetricAlarms"]
    assert [(a["AlarmName"], a["StateValue"]) for a in alarms] == [("cli-jobs", "INSUFFICIENT_DATA")]
    _cli(legacy, "cloudwatch", "delete-alarms", "--alarm-names", "cli-jobs")
    assert _cli(env, "cloudwatch", "describe-alarms")["MetricAlarms"] == []


def test_another_account_sees_none_of_it(platform, cw, aas):
    key = _neurondock(platform, "accounts", "create", "tenant-b")["access_key"]
    theirs = {"access_key": key["access_key_id"], "secret_key": key["secret_access_key"]}
    cw.put_metric_alarm(
        AlarmName="mine",
        Namespace="Mine",
        MetricName="M",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanThreshold",
    )
    cw.put_metric_data(Namespace="Mine", MetricData=[{"MetricName": "M", "Value": 1.0}])
    their_cw = platform.client("cloudwatch", **theirs)
    their_aas = platform.client("application-autoscaling", **theirs)
    assert their_cw.describe_alarms()["MetricAlarms"] == []
    assert their_cw.list_metrics()["Metrics"] == []
    assert their_cw.describe_alarm_history()["AlarmHistoryItems"] == []
    assert their_aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    with pytest.raises(their_cw.exceptions.ResourceNotFound):
        their_cw.set_alarm_state(AlarmName="mine", StateValue="ALARM", StateReason="not theirs")
    assert cw.describe_alarms(AlarmNames=["mine"])["MetricAlarms"][0]["StateValue"] == "INSUFFICIENT_DATA"
    assert ACCOUNT_ID in cw.describe_alarms(AlarmNames=["mine"])["MetricAlarms"][0]["AlarmArn"]
    cw.delete_alarms(AlarmNames=["mine"])
