"""InvokeEndpointAsync with unmodified boto3 on a live platform: S3 and inline inputs, failures, accounts.

The slow tests kill the Celery worker mid-request (the result is still written exactly once) and let
a queued request outlive its RequestTTLSeconds.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.support.platform import ACCOUNT_ID, Platform, running_platform
from tests.support.processes import platform_pids
from tests.support.torch_models import pack_model
from tests.support.waiting import wait_for

ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/SageMakerRole"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
WAIT = {"Delay": 0.2, "MaxAttempts": 600}
BUCKET = "nd-async"
HANDLER = """
import json
import time

def model_fn(model_dir):
    return None

def transform_fn(model, data, content_type, accept):
    text = data.decode() if isinstance(data, (bytes, bytearray)) else str(data)
    if text.startswith("fail"):
        raise RuntimeError("the model gave up on " + text)
    if text.startswith("sleep:"):
        time.sleep(float(text.split(":")[1]))
    return json.dumps({"echo": text, "content_type": content_type}).encode(), "application/json"
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    # Backlog gauges every second, and replicas allowed to run the slow tests' long request.
    yield from running_platform(
        tmp_path_factory.mktemp("nd-async"),
        extra_env={
            "NEURONDOCK_METRICS_FLUSH_SECONDS": "1",
            "NEURONDOCK_MODEL_TIMEOUT": "120",
            # Alarm periods of 60 s and cooldowns run 60 times faster (the scale-to-zero test).
            "NEURONDOCK_SCALING_SPEEDUP": "60",
        },
    )


@pytest.fixture(scope="module")
def clients(platform):
    s3 = platform.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return platform.client("sagemaker"), platform.client("sagemaker-runtime"), s3


def deploy_async(platform, clients, tmp_path, *, per_instance: int = 2, topics: bool = True) -> str:
    """An async endpoint running HANDLER; returns its name once InService."""
    sm, _, s3 = clients
    name = f"async-{uuid.uuid4().hex[:8]}"
    s3.upload_file(
        str(pack_model(tmp_path / f"{name}.tar.gz", None, code={"inference.py": HANDLER})),
        BUCKET,
        f"{name}/model.tar.gz",
    )
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{name}/model.tar.gz"},
        ExecutionRoleArn=ROLE,
    )
    output = {"S3OutputPath": f"s3://{BUCKET}/{name}/out", "S3FailurePath": f"s3://{BUCKET}/{name}/failed"}
    if topics:
        output["NotificationConfig"] = {
            "SuccessTopic": f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:{name}-ok",
            "ErrorTopic": f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:{name}-error",
        }
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.c5.large"}
        ],
        AsyncInferenceConfig={
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": per_instance},
            "OutputConfig": output,
        },
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    return name


def split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def wait_object(platform, s3, uri: str, timeout: float = 60.0) -> bytes:
    """The object's bytes once a worker has written it."""
    bucket, key = split(uri)
    return wait_for(
        lambda: s3.get_object(Bucket=bucket, Key=key)["Body"].read(),
        timeout,
        what=f"{uri} to be written",
        ignoring=(s3.exceptions.NoSuchKey,),
        state=platform.logs,
    )


@pytest.fixture(scope="module")
def endpoint(platform, clients, tmp_path_factory) -> str:
    return deploy_async(platform, clients, tmp_path_factory.mktemp("models"))


def test_async_through_s3_and_inline_with_failure_object_and_metrics(platform, clients, endpoint):
    sm, rt, s3 = clients
    assert sm.describe_endpoint_config(EndpointConfigName=endpoint)["AsyncInferenceConfig"]["ClientConfig"] == {
        "MaxConcurrentInvocationsPerInstance": 2
    }
    s3.put_object(Bucket=BUCKET, Key=f"{endpoint}/in/request.txt", Body=b"from s3")
    via_s3 = rt.invoke_endpoint_async(
        EndpointName=endpoint,
        InputLocation=f"s3://{BUCKET}/{endpoint}/in/request.txt",
        ContentType="text/plain",
        InferenceId="trace-42",
    )
    assert via_s3["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert via_s3["InferenceId"] == "trace-42"
    out_name = via_s3["OutputLocation"].rsplit("/", 1)[1]
    assert via_s3["OutputLocation"] == f"s3://{BUCKET}/{endpoint}/out/{out_name}" and out_name.endswith(".out")
    generated = out_name.removesuffix(".out")
    assert str(uuid.UUID(generated)) == generated
    assert via_s3["FailureLocation"] == f"s3://{BUCKET}/{endpoint}/failed/{generated}-error.out"

    inline = rt.invoke_endpoint_async(EndpointName=endpoint, Body=b"inline body", ContentType="text/plain")
    failing = rt.invoke_endpoint_async(EndpointName=endpoint, Body=b"fail now")
    assert str(uuid.UUID(inline["InferenceId"])) == inline["InferenceId"]

    assert json.loads(wait_object(platform, s3, via_s3["OutputLocation"])) == {
        "echo": "from s3",
        "content_type": "text/plain",
    }
    assert json.loads(wait_object(platform, s3, inline["OutputLocation"]))["echo"] == "inline body"
    assert b"the model gave up on fail now" in wait_object(platform, s3, failing["FailureLocation"])
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=BUCKET, Key=split(failing["OutputLocation"])[1])

    record = json.loads(wait_object(platform, s3, via_s3["OutputLocation"] + ".notification.json"))
    message = json.loads(record["Message"])
    assert record["TopicArn"] == f"arn:aws:sns:us-east-1:{ACCOUNT_ID}:{endpoint}-ok"
    assert message["invocationStatus"] == "Completed" and message["inferenceId"] == "trace-42"
    assert message["requestParameters"]["inputLocation"] == f"s3://{BUCKET}/{endpoint}/in/request.txt"
    error = json.loads(
        json.loads(wait_object(platform, s3, failing["FailureLocation"] + ".notification.json"))["Message"]
    )
    assert error["invocationStatus"] == "Failed" and "gave up" in error["failureReason"]

    # The runtime checks the request as botocore's model does.
    with pytest.raises(rt.exceptions.ClientError) as too_big:
        rt.invoke_endpoint_async(EndpointName=endpoint, Body=b"x" * 128_001)
    assert too_big.value.response["Error"]["Code"] == "ValidationError"
    unchecked = platform.client("sagemaker-runtime", parameter_validation=False)
    with pytest.raises(rt.exceptions.ClientError) as short_ttl:
        unchecked.invoke_endpoint_async(EndpointName=endpoint, Body=b"x", RequestTTLSeconds=59)
    assert "greater than or equal to 60" in short_ttl.value.response["Error"]["Message"]

    # An async endpoint stays async.
    sm.create_endpoint_config(
        EndpointConfigName=f"{endpoint}-rt",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": endpoint,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.c5.large",
            }
        ],
    )
    with pytest.raises(sm.exceptions.ClientError) as kept:
        sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-rt")
    assert kept.value.response["Error"]["Message"] == (
        f"The AsyncInferenceConfig parameter cannot be removed from this endpoint {endpoint}."
    )

    cw = platform.client("cloudwatch")
    variant = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}]
    wait_for(lambda: total(cw, "InvocationsProcesssed", variant) == 2, 30, what="InvocationsProcesssed = 2")
    assert total(cw, "InvocationFailures", variant) == 1
    # The monitor samples the backlog once a flush period (1 s here): all three are done now.
    wait_for(
        lambda: cw.list_metrics(
            Namespace="AWS/SageMaker",
            MetricName="ApproximateBacklogSize",
            Dimensions=[{"Name": "EndpointName", "Value": endpoint}],
        )["Metrics"],
        30,
        what="ApproximateBacklogSize to be published",
    )


def test_other_account_cannot_invoke_it_nor_make_it_read_data_it_cannot_read(platform, clients, endpoint):
    _, rt, s3 = clients
    token = platform.api_token()
    conn = http.client.HTTPConnection("127.0.0.1", platform.port, timeout=30)
    conn.request(
        "POST",
        "/api/v1/accounts",
        body=json.dumps({"name": f"async-other-{uuid.uuid4().hex[:6]}"}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    created = json.loads(response.read())
    conn.close()
    assert response.status == 201, created
    keys = created["access_key"]
    other = {"access_key": keys["access_key_id"], "secret_key": keys["secret_access_key"]}
    other_rt, other_s3 = platform.client("sagemaker-runtime", **other), platform.client("s3", **other)

    # B cannot invoke A's endpoint: to B it does not exist.
    with pytest.raises(other_rt.exceptions.ClientError) as hidden:
        other_rt.invoke_endpoint_async(EndpointName=endpoint, Body=b"hello")
    assert hidden.value.response["Error"]["Code"] == "ValidationError"
    assert f"of account {keys['account_id']} not found" in hidden.value.response["Error"]["Message"]

    # Data only B can read: A's endpoint reads inputs as A, so it cannot read B's object either.
    private = f"async-private-{uuid.uuid4().hex[:6]}"
    other_s3.create_bucket(Bucket=private)
    other_s3.put_object(Bucket=private, Key="secret.txt", Body=b"B's secret")
    with pytest.raises(s3.exceptions.ClientError):
        s3.get_object(Bucket=private, Key="secret.txt")
    sent = rt.invoke_endpoint_async(EndpointName=endpoint, InputLocation=f"s3://{private}/secret.txt")
    failure = wait_object(platform, s3, sent["FailureLocation"])
    assert b"Could not read the input" in failure and b"AccessDenied" in failure and b"B's secret" not in failure
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=BUCKET, Key=split(sent["OutputLocation"])[1])
    # And B cannot read A's results.
    with pytest.raises(other_s3.exceptions.ClientError) as denied:
        other_s3.get_object(Bucket=BUCKET, Key=split(sent["FailureLocation"])[1])
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def total(cw, metric: str, dimensions: list[dict[str, str]], statistic: str = "Sum") -> float:
    """The metric's statistic over the last ten minutes, summed over its datapoints."""
    now = dt.datetime.now(dt.UTC)
    points = cw.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName=metric,
        Dimensions=dimensions,
        StartTime=now - dt.timedelta(minutes=10),
        EndTime=now + dt.timedelta(minutes=1),
        Period=60,
        Statistics=[statistic],
    )["Datapoints"]
    return sum(p[statistic] for p in points)


def _request_row(platform, inference_id: str) -> dict:
    engine = create_engine(platform.database_url or f"sqlite:///{platform.data_dir / 'neurondock.db'}")
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("select status, attempts from async_inferences where inference_id = :i"), {"i": inference_id}
            ).one()
    finally:
        engine.dispose()
    return {"status": row[0], "attempts": row[1]}


@pytest.mark.slow
def test_worker_killed_mid_request_still_writes_the_result_exactly_once(platform, clients, endpoint):
    _, rt, s3 = clients
    cw = platform.client("cloudwatch")
    variant = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}]
    before = total(cw, "InvocationsProcesssed", variant)
    inference_id = f"killed-{uuid.uuid4().hex[:6]}"
    sent = rt.invoke_endpoint_async(EndpointName=endpoint, Body=b"sleep:4", InferenceId=inference_id)
    wait_for(lambda: _request_row(platform, inference_id)["status"] == "InProgress", 30, what="the request to start")
    # The worker runs in the host process beside the agent: its replica dies with it, and the request is
    # put back (uncounted) until the restarted agent has it Ready again.
    workers = platform_pids(platform.data_dir, "neurondock_workers host")
    assert workers, "no worker process found"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    body = wait_object(platform, s3, sent["OutputLocation"], timeout=120)
    assert json.loads(body)["echo"] == "sleep:4"
    wait_for(lambda: _request_row(platform, inference_id)["status"] == "Completed", 30, what="the outcome")
    assert _request_row(platform, inference_id)["attempts"] == 2
    assert set(platform_pids(platform.data_dir, "neurondock_workers host")).isdisjoint(workers)
    # Counted once, although two workers ran it.
    assert total(cw, "InvocationsProcesssed", variant) == before + 1


@pytest.mark.slow
def test_request_queued_past_its_ttl_writes_an_expiry_failure(platform, clients, tmp_path):
    _, rt, s3 = clients
    name = deploy_async(platform, clients, tmp_path, per_instance=1, topics=False)
    blocking = f"blocker-{uuid.uuid4().hex[:6]}"
    blocker = rt.invoke_endpoint_async(
        EndpointName=name, Body=b"sleep:62", InvocationTimeoutSeconds=120, InferenceId=blocking
    )
    # Requests are not taken in arrival order: the late one must find the only slot already held.
    wait_for(lambda: _request_row(platform, blocking)["status"] == "InProgress", 30, what="the blocker to start")
    late = rt.invoke_endpoint_async(EndpointName=name, Body=b"too late", RequestTTLSeconds=60)
    failure = wait_object(platform, s3, late["FailureLocation"], timeout=150)
    assert b"RequestTTLSeconds (60 s)" in failure
    assert json.loads(wait_object(platform, s3, blocker["OutputLocation"], timeout=60))["echo"] == "sleep:62"
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=BUCKET, Key=split(late["OutputLocation"])[1])


@pytest.mark.slow
def test_scaled_to_zero_comes_back_when_work_arrives(platform, clients, tmp_path):
    """AWS's recipe: MinCapacity 0, a step policy on HasBacklogWithoutCapacity to come back from 0."""
    sm, rt, s3 = clients
    name = deploy_async(platform, clients, tmp_path, per_instance=1, topics=False)
    aas, cw = platform.client("application-autoscaling"), platform.client("cloudwatch")
    target = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": f"endpoint/{name}/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    aas.register_scalable_target(**target, MinCapacity=0, MaxCapacity=1)
    policy = aas.put_scaling_policy(
        PolicyName="has-backlog-without-capacity",
        PolicyType="StepScaling",
        **target,
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": 300,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )["PolicyARN"]
    cw.put_metric_alarm(
        AlarmName=f"{name}-has-backlog-without-capacity",
        Namespace="AWS/SageMaker",
        MetricName="HasBacklogWithoutCapacity",
        Dimensions=[{"Name": "EndpointName", "Value": name}],
        Statistic="Average",
        Period=60,
        EvaluationPeriods=2,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="missing",
        AlarmActions=[policy],
    )
    # A real-time endpoint keeps an instance; this async one goes to none.
    sm.update_endpoint_weights_and_capacities(
        EndpointName=name, DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}]
    )
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    assert sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]["CurrentInstanceCount"] == 0

    sent = rt.invoke_endpoint_async(EndpointName=name, Body=b"wake up")
    body = wait_object(platform, s3, sent["OutputLocation"], timeout=120)
    assert json.loads(body)["echo"] == "wake up"
    assert sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    activities = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=target["ResourceId"])
    assert any("has-backlog-without-capacity" in a["Cause"] for a in activities["ScalingActivities"]), activities
    had = total(cw, "HasBacklogWithoutCapacity", [{"Name": "EndpointName", "Value": name}], "Maximum")
    assert had >= 1
