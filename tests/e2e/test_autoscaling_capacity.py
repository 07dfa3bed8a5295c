"""Scaling past the free emulated chips: the activity waits Unfulfilled, then completes on a new host.

Its own `neurondock up` whose host has one emulated chip (``NEURONDOCK_HOST_CHIPS=1``), serving on
ml.inf1.xlarge (one chip an instance). Raising the minimum to 2 asks for a second instance that no
host can take: the activity is Unfulfilled with SageMaker's capacity reason. A second host agent
with a free chip joins, the retry places the instance, and the activity ends Successful.
Marked slow: the default run covers the same path on capacity that is already there
(tests/e2e/test_cloudwatch_autoscaling.py) and the Unfulfilled wording in the integration tests.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.autoscaling import deploy, variant_target
from tests.support.platform import Platform, running_platform

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    env = {"NEURONDOCK_HOST_CHIPS": "1", "NEURONDOCK_SCALING_SPEEDUP": "30", "NEURONDOCK_METRICS_FLUSH_SECONDS": "1"}
    yield from running_platform(tmp_path_factory.mktemp("nd-capacity"), extra_env=env)


def _activity(aas: Any, resource: str, *codes: str) -> dict[str, Any] | None:
    found = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=resource)["ScalingActivities"]
    return next((a for a in found if a["StatusCode"] in codes), None)


def _until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return got


def test_unfulfilled_until_a_host_with_free_chips_joins(platform, tmp_path):
    sm, s3 = platform.client("sagemaker"), platform.client("s3")
    aas = platform.client("application-autoscaling")
    s3.create_bucket(Bucket="capacity")
    name = deploy(
        sm, s3, "capacity", tmp_path, instance_type="ml.inf1.xlarge", environment={"NEURON_RT_NUM_CORES": "4"}
    )
    target = variant_target(name)
    aas.register_scalable_target(**target, MinCapacity=2, MaxCapacity=3)

    unfulfilled = _until("an Unfulfilled activity", lambda: _activity(aas, target["ResourceId"], "Unfulfilled"), 120)
    assert unfulfilled["Description"] == "Setting desired instance count to 2."
    assert unfulfilled["StatusMessage"].startswith("Failed to set desired instance count to 2. Reason: ")
    assert "capacity" in unfulfilled["StatusMessage"].lower()
    variant = sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == 1

    second = platform.start_agent("host-b")
    try:
        done = _until("the activity to complete", lambda: _activity(aas, target["ResourceId"], "Successful"), 240)
        assert done["ActivityId"] == unfulfilled["ActivityId"]
        assert (
            done["StatusMessage"]
            == "Successfully set desired instance count to 2. Change successfully fulfilled by sagemaker."
        )
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 0.5, "MaxAttempts": 240})
        variant = sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]
        assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (2, 2)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(30)
