"""Waiting: quick polls, status changes on stderr, a text bar on a terminal, timeouts and typed failures.

moto has no intermediate states (endpoints are InService and compilation jobs COMPLETED at once), so
the transitions are driven through botocore's Stubber or a fake describe function.
"""

from __future__ import annotations

import io
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from neurondock import Session, UnexpectedStatusError, WaitTimeoutError, waiters

from .conftest import ACCOUNT, FAST_POLL, REGION, Stubbed

FAST_WITH_PROGRESS = waiters.PollPolicy(FAST_POLL, progress=True)


def _endpoint(status: str, reason: str | None = None, config: str = "ep") -> dict[str, Any]:
    description = {
        "EndpointName": "ep",
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/ep",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": 0,
        "LastModifiedTime": 0,
    }
    if reason:
        description["FailureReason"] = reason
    return description


class _Clock:
    """A fake monotonic clock advanced only by the fake sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_defaults_poll_quickly() -> None:
    assert waiters.DEFAULT_POLL_INTERVAL == 0.5
    assert waiters.MAX_POLL_INTERVAL <= 5.0
    assert Session(region_name=REGION).poll_interval == 0.5


def test_poll_describes_at_once_and_backs_off_gently() -> None:
    clock = _Clock()
    statuses = iter(["Creating"] * 30 + ["InService"])
    result = waiters.poll(
        lambda: {"EndpointStatus": next(statuses)},
        kind="endpoint",
        name="ep",
        status_key="EndpointStatus",
        settled=lambda d: d is not None and d["EndpointStatus"] == "InService",
        timeout=600,
        progress=False,
        sleep=clock.sleep,
        clock=lambda: clock.now,
    )
    assert result == {"EndpointStatus": "InService"}
    assert clock.sleeps[0] == 0.5
    assert max(clock.sleeps) == waiters.MAX_POLL_INTERVAL  # never the SageMaker SDK's 30 s
    assert clock.sleeps == sorted(clock.sleeps)


def test_poll_times_out_with_last_status() -> None:
    clock = _Clock()
    with pytest.raises(WaitTimeoutError) as caught:
        waiters.poll(
            lambda: {"CompilationJobStatus": "INPROGRESS"},
            kind="compilation job",
            name="j",
            status_key="CompilationJobStatus",
            settled=lambda d: False,
            timeout=3,
            progress=False,
            sleep=clock.sleep,
            clock=lambda: clock.now,
        )
    assert (caught.value.status, caught.value.timeout, caught.value.resource_name) == ("INPROGRESS", 3, "j")
    assert sum(clock.sleeps) == pytest.approx(3)
    assert isinstance(caught.value, TimeoutError)


def test_wait_timeout_against_a_stuck_endpoint() -> None:
    client = boto3.client("sagemaker", region_name=REGION)
    session = Session(sagemaker_client=client, poll_interval=0.001, progress=False)
    stubber = Stubber(client)
    for _ in range(500):  # more than the waiter can use up in 20 ms
        stubber.add_response("describe_endpoint", _endpoint("Creating"))
    with (
        stubber,
        pytest.raises(WaitTimeoutError, match=r"after 0\.02s waiting for endpoint 'ep'; last status Creating"),
    ):
        waiters.wait_for_endpoint(client, "ep", policy=session.poll_policy, timeout=0.02)


def test_status_changes_go_to_stderr(stubbed: Stubbed, capsys: pytest.CaptureFixture[str]) -> None:
    for status in ("Creating", "Creating", "InService"):
        stubbed.sagemaker.add_response("describe_endpoint", _endpoint(status))
    description = waiters.wait_for_endpoint(stubbed.session.sagemaker_client, "ep", policy=FAST_WITH_PROGRESS)
    assert description["EndpointStatus"] == "InService"
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["endpoint ep: Creating", "endpoint ep: InService"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_text_bar(stubbed: Stubbed) -> None:
    for status in ("Creating", "Creating", "InService"):
        stubbed.sagemaker.add_response("describe_endpoint", _endpoint(status))
    terminal = _Terminal()
    waiters.wait_for_endpoint(stubbed.session.sagemaker_client, "ep", policy=FAST_WITH_PROGRESS, stream=terminal)
    output = terminal.getvalue()
    assert "\r[" in output and "###" in output
    assert output.endswith("\r\x1b[K")  # the bar is cleared when waiting ends


def test_failed_endpoint_carries_reason(stubbed: Stubbed) -> None:
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    stubbed.sagemaker.add_response("describe_endpoint", _endpoint("Creating"))
    stubbed.sagemaker.add_response("describe_endpoint", _endpoint("Failed", reason))
    with pytest.raises(UnexpectedStatusError) as caught:
        waiters.wait_for_endpoint(stubbed.session.sagemaker_client, "ep", policy=stubbed.session.poll_policy)
    error = caught.value
    assert (error.failure_reason, error.status, error.log_lines) == (reason, "Failed", [])
    assert str(error) == f"Endpoint 'ep' ended in status Failed: {reason}"


def test_log_tail_hook_copies_unmodelled_key() -> None:
    class Response:
        content = b'{"EndpointStatus": "Failed", "LogTail": ["a", "b"]}'

    parsed: dict[str, Any] = {"EndpointStatus": "Failed"}
    waiters._copy_log_tail(http_response=Response(), parsed=parsed)
    assert waiters.log_lines(parsed) == ["a", "b"]
    untouched: dict[str, Any] = {}
    waiters._copy_log_tail(http_response=type("R", (), {"content": b"<xml/>"})(), parsed=untouched)
    assert untouched == {}


def test_compilation_failure_and_stopped(stubbed: Stubbed) -> None:
    def job(status: str, reason: str = "") -> dict[str, Any]:
        return {
            "CompilationJobName": "j",
            "CompilationJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:compilation-job/j",
            "CompilationJobStatus": status,
            "StoppingCondition": {"MaxRuntimeInSeconds": 900},
            "CreationTime": 0,
            "LastModifiedTime": 0,
            "FailureReason": reason,
            "ModelArtifacts": {"S3ModelArtifacts": "s3://o/model.tar.gz"},
            "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/R",
            "InputConfig": {"S3Uri": "s3://i/m.tar.gz", "DataInputConfig": "{}", "Framework": "PYTORCH"},
            "OutputConfig": {"S3OutputLocation": "s3://o/", "TargetDevice": "ml_inf1"},
        }

    stubbed.sagemaker.add_response("describe_compilation_job", job("STOPPED"))
    with pytest.raises(UnexpectedStatusError, match="ended in status STOPPED") as caught:
        waiters.wait_for_compilation_job(stubbed.session.sagemaker_client, "j", policy=stubbed.session.poll_policy)
    assert caught.value.failure_reason is None
    stubbed.sagemaker.add_response("describe_compilation_job", job("INPROGRESS"))
    stubbed.sagemaker.add_response("describe_compilation_job", job("COMPLETED"))
    assert stubbed.session.wait_for_compilation_job("j")["CompilationJobStatus"] == "COMPLETED"


def test_endpoint_deleted(stubbed: Stubbed, session: Session) -> None:
    stubbed.sagemaker.add_response("describe_endpoint", _endpoint("Deleting"))
    stubbed.sagemaker.add_client_error(
        "describe_endpoint",
        "ValidationException",
        'Could not find endpoint "arn:aws:sagemaker:...:endpoint/ep".',
    )
    waiters.wait_for_endpoint_deleted(stubbed.session.sagemaker_client, "ep", policy=stubbed.session.poll_policy)
    stubbed.sagemaker.add_response("describe_endpoint", _endpoint("Failed", "boom"))
    with pytest.raises(UnexpectedStatusError, match="is Failed: boom"):
        waiters.wait_for_endpoint_deleted(stubbed.session.sagemaker_client, "ep", policy=stubbed.session.poll_policy)
    # Under moto deletion is immediate.
    waiters.wait_for_endpoint_deleted(session.sagemaker_client, "never-existed", policy=session.poll_policy)
