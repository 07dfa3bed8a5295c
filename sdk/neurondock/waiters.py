"""Wait for endpoints and compilation jobs: quick polling, a progress display, a timeout, typed errors.

The SageMaker SDK sleeps 30 s (endpoints) or 5 s (compilation) before every describe; neurondock
finishes most transitions in a few seconds, so we describe at once and then every ``poll_interval``
seconds, backing off gently (up to ``MAX_POLL_INTERVAL``) only while the status stays the same.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TextIO

from neurondock.errors import (
    ResourceNotFound,
    UnexpectedStatusError,
    WaitTimeoutError,
    translate_client_errors,
)

DEFAULT_POLL_INTERVAL = 0.5
MAX_POLL_INTERVAL = 5.0
_BACKOFF = 1.25
# boto3's endpoint_in_service waiter gives up after 120 x 30 s.
ENDPOINT_TIMEOUT = 3600.0
# CreateCompilationJob's suggested MaxRuntimeInSeconds (900) plus a minute for the status to land.
COMPILATION_TIMEOUT = 960.0

ENDPOINT_PENDING = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})
COMPILATION_PENDING = frozenset({"STARTING", "INPROGRESS", "STOPPING"})


@dataclass(frozen=True)
class PollPolicy:
    """How a wait polls: its first interval (backing off while nothing changes) and whether it shows progress."""

    interval: float = DEFAULT_POLL_INTERVAL
    progress: bool = True


# A neurondock server may add the failing replica's or compiler's last log lines to Describe*
# responses under this key; botocore drops unmodelled keys, so a hook copies it from the raw body.
LOG_TAIL_KEY = "LogTail"
MAX_LOG_LINES = 20
_LOG_TAIL_OPERATIONS = ("DescribeEndpoint", "DescribeCompilationJob")


def _copy_log_tail(http_response: Any = None, parsed: Any = None, **_: Any) -> None:
    content = getattr(http_response, "content", None)
    if not content or not isinstance(parsed, dict) or LOG_TAIL_KEY in parsed:
        return
    try:
        body = json.loads(content)
    except ValueError:
        return
    if isinstance(body, dict) and body.get(LOG_TAIL_KEY):
        parsed[LOG_TAIL_KEY] = body[LOG_TAIL_KEY]


def install_log_tail_hook(sagemaker_client: Any) -> None:
    """Make the client keep a server-sent ``LogTail`` in DescribeEndpoint/DescribeCompilationJob results."""
    events = getattr(getattr(sagemaker_client, "meta", None), "events", None)
    if events is None:
        return
    for operation in _LOG_TAIL_OPERATIONS:
        events.register(
            f"after-call.sagemaker.{operation}", _copy_log_tail, unique_id=f"neurondock-log-tail-{operation}"
        )


def log_lines(description: dict[str, Any]) -> list[str]:
    """Return the last log lines a Describe* response carried, if any."""
    tail = description.get(LOG_TAIL_KEY)
    if isinstance(tail, str):
        lines = tail.splitlines()
    elif isinstance(tail, list):
        lines = [str(line) for line in tail]
    else:
        lines = []
    return lines[-MAX_LOG_LINES:]


class _Display:
    """Print each status change to stderr; on a terminal also keep a bouncing text bar going."""

    _WIDTH = 20

    def __init__(self, kind: str, name: str, stream: TextIO | None, enabled: bool) -> None:
        self.kind = kind
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.bar = enabled and _isatty(self.stream)
        self._last: object = object()
        self._tick = 0
        self._drawn = False

    def update(self, status: str | None, elapsed: float) -> None:
        if not self.enabled:
            return
        if status != self._last:
            self._clear()
            self.stream.write(f"{self.kind} {self.name}: {status} ({elapsed:.1f}s)\n")
            self._last = status
        if self.bar:
            span = self._WIDTH - 3
            pos = self._tick % (2 * span)
            pos = pos if pos < span else 2 * span - pos
            cells = "." * pos + "###" + "." * (span - pos)
            self.stream.write(f"\r[{cells}] {status} {elapsed:6.1f}s")
            self._drawn = True
            self._tick += 1
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._clear()
            self.stream.flush()

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def poll(
    describe: Callable[[], dict[str, Any] | None],
    *,
    kind: str,
    name: str,
    status_key: str,
    settled: Callable[[dict[str, Any] | None], bool],
    timeout: float,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    progress: bool = True,
    stream: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any] | None:
    """Call ``describe`` until ``settled`` says so; raise ``WaitTimeoutError`` after ``timeout`` seconds."""
    display = _Display(kind, name, stream, progress)
    start = clock()
    interval = poll_interval
    last_status: str | None = None
    try:
        while True:
            description = describe()
            status = None if description is None else description.get(status_key)
            display.update(status if description is not None else "gone", clock() - start)
            if settled(description):
                return description
            elapsed = clock() - start
            if elapsed >= timeout:
                raise WaitTimeoutError(
                    f"Timed out after {timeout:g}s waiting for {kind} {name!r}; last status {status}",
                    resource_name=name,
                    status=status,
                    timeout=timeout,
                )
            interval = poll_interval if status != last_status else min(interval * _BACKOFF, MAX_POLL_INTERVAL)
            interval = max(interval, poll_interval)
            last_status = status
            sleep(min(interval, timeout - elapsed))
    finally:
        display.close()


@dataclass(frozen=True)
class _Kind:
    """What is waited for: its name in messages and the status member of its Describe* response."""

    name: str
    status_key: str


ENDPOINT = _Kind("endpoint", "EndpointStatus")
COMPILATION_JOB = _Kind("compilation job", "CompilationJobStatus")


def _wait(
    kind: _Kind,
    name: str,
    describe: Callable[[], dict[str, Any] | None],
    settled: Callable[[dict[str, Any] | None], bool],
    policy: PollPolicy,
    timeout: float,
    stream: TextIO | None,
) -> dict[str, Any] | None:
    return poll(
        describe,
        kind=kind.name,
        name=name,
        status_key=kind.status_key,
        settled=settled,
        timeout=timeout,
        poll_interval=policy.interval,
        progress=policy.progress,
        stream=stream,
    )


def _failure(name: str, description: dict[str, Any], status_key: str, headline: str) -> UnexpectedStatusError:
    status = description.get(status_key)
    reason = description.get("FailureReason") or None
    lines = log_lines(description)
    message = f"{headline}: {reason}" if reason else headline
    if lines:
        message += "\nLast log lines:\n" + "\n".join(f"  {line}" for line in lines)
    return UnexpectedStatusError(message, resource_name=name, status=status, failure_reason=reason, log_lines=lines)


def wait_for_endpoint(
    sagemaker_client: Any,
    endpoint_name: str,
    *,
    policy: PollPolicy = PollPolicy(),
    timeout: float = ENDPOINT_TIMEOUT,
    expected_config: str | None = None,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Wait until the endpoint is InService (on ``expected_config`` after an update); return it."""

    def describe() -> dict[str, Any]:
        with translate_client_errors():
            return dict(sagemaker_client.describe_endpoint(EndpointName=endpoint_name))

    def settled(description: dict[str, Any] | None) -> bool:
        assert description is not None
        status = description.get("EndpointStatus")
        if status in ENDPOINT_PENDING:
            return False
        # Right after UpdateEndpoint the old config may still show as InService without a failure.
        return not (
            expected_config
            and status == "InService"
            and description.get("EndpointConfigName") != expected_config
            and not description.get("FailureReason")
        )

    description = _wait(ENDPOINT, endpoint_name, describe, settled, policy, timeout, stream)
    assert description is not None
    status = description.get("EndpointStatus")
    if status == "InService":
        if not expected_config or description.get("EndpointConfigName") == expected_config:
            return description
        # A failed update leaves the endpoint InService on its old config with FailureReason set.
        headline = (
            f"Update of endpoint {endpoint_name!r} to {expected_config!r} failed; it still serves "
            f"{description.get('EndpointConfigName')!r}"
        )
    else:
        headline = f"Endpoint {endpoint_name!r} ended in status {status}"
    raise _failure(endpoint_name, description, "EndpointStatus", headline)


def wait_for_endpoint_deleted(
    sagemaker_client: Any,
    endpoint_name: str,
    *,
    policy: PollPolicy = PollPolicy(),
    timeout: float = ENDPOINT_TIMEOUT,
    stream: TextIO | None = None,
) -> None:
    """Wait until DescribeEndpoint reports the endpoint gone (a Failed endpoint raises)."""

    def describe() -> dict[str, Any] | None:
        try:
            with translate_client_errors():
                return dict(sagemaker_client.describe_endpoint(EndpointName=endpoint_name))
        except ResourceNotFound:
            return None

    def settled(description: dict[str, Any] | None) -> bool:
        return description is None or description.get("EndpointStatus") == "Failed"

    description = _wait(ENDPOINT, endpoint_name, describe, settled, policy, timeout, stream)
    if description is not None:
        raise _failure(endpoint_name, description, "EndpointStatus", f"Endpoint {endpoint_name!r} is Failed")


def wait_for_compilation_job(
    sagemaker_client: Any,
    job_name: str,
    *,
    policy: PollPolicy = PollPolicy(),
    timeout: float = COMPILATION_TIMEOUT,
    success: Collection[str] = ("COMPLETED",),
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Wait until the compilation job leaves STARTING/INPROGRESS/STOPPING; return its description."""

    def describe() -> dict[str, Any]:
        with translate_client_errors():
            return dict(sagemaker_client.describe_compilation_job(CompilationJobName=job_name))

    def settled(description: dict[str, Any] | None) -> bool:
        assert description is not None
        return description.get("CompilationJobStatus") not in COMPILATION_PENDING

    description = _wait(COMPILATION_JOB, job_name, describe, settled, policy, timeout, stream)
    assert description is not None
    status = description.get("CompilationJobStatus")
    if status in success:
        return description
    raise _failure(
        job_name,
        description,
        "CompilationJobStatus",
        f"Compilation job {job_name!r} ended in status {status}",
    )
