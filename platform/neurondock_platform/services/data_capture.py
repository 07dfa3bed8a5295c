"""Data Capture configs: checking an EndpointConfig's DataCaptureConfig, the live settings, the summary.

The wire facts (members, defaults, what DescribeEndpoint shows, how UpdateEndpoint retains it) are
in docs/data-capture.md. The records and files themselves are written by the data plane
(``dataplane/capture.py``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform.db import utcnow
from neurondock_platform.errors import PlatformError
from neurondock_platform.models import Endpoint, EndpointVariant
from neurondock_platform.services import metrics, validation

PATH = "dataCaptureConfig"
STARTED = "Started"
STOPPED = "Stopped"
# The flusher's counters in the metric store (sagemaker_metrics.py): records written and records lost.
WRITTEN_METRIC = "DataCaptureWritten"
FAILED_METRIC = "DataCaptureFailed"


class CaptureNotImplemented(PlatformError):
    """A DataCaptureConfig member neurondock does not implement: refused, never ignored."""

    code = "NotImplemented"
    http_status = 501


@dataclass(frozen=True)
class CaptureSettings:
    """What the data plane needs to capture an endpoint's invocations (hashable: it sits in the routing table)."""

    enabled: bool
    percentage: int
    destination: str
    bucket: str
    prefix: str
    capture_input: bool
    capture_output: bool
    csv_types: frozenset[str]
    json_types: frozenset[str]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CaptureSettings:
        """Build settings from a DataCaptureConfig already checked by ``check_config``."""
        bucket, prefix = split_destination(str(config["DestinationS3Uri"]))
        modes = {str(option["CaptureMode"]) for option in config.get("CaptureOptions") or []}
        header = config.get("CaptureContentTypeHeader") or {}
        return cls(
            enabled=bool(config.get("EnableCapture", True)),
            percentage=int(config["InitialSamplingPercentage"]),
            destination=str(config["DestinationS3Uri"]),
            bucket=bucket,
            prefix=prefix,
            capture_input=bool(modes & {"Input", "InputAndOutput"}),
            capture_output=bool(modes & {"Output", "InputAndOutput"}),
            csv_types=frozenset(media_type(t) for t in header.get("CsvContentTypes") or []),
            json_types=frozenset(media_type(t) for t in header.get("JsonContentTypes") or []),
        )

    @property
    def active(self) -> bool:
        """Whether any invocation can be captured at all."""
        return self.enabled and self.percentage > 0 and (self.capture_input or self.capture_output)


def media_type(content_type: str) -> str:
    """``Text/CSV; charset=utf-8`` → ``text/csv``: the part a content-type list is matched on."""
    return content_type.split(";", 1)[0].strip().lower()


def split_destination(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix/`` into the bucket and the prefix without its slashes."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.strip("/")


def check_config(config: dict[str, Any]) -> None:
    """The rules botocore's shape cannot express (the shape itself is checked by ``validation``)."""
    if config.get("KmsKeyId"):
        raise CaptureNotImplemented(
            "DataCaptureConfig.KmsKeyId is not implemented by neurondock: capture files are written unencrypted "
            "with the store's own protection; leave KmsKeyId out."
        )
    uri = str(config.get("DestinationS3Uri", ""))
    if uri.startswith("https://"):
        raise CaptureNotImplemented(
            "An https:// DestinationS3Uri is not implemented by neurondock; give the destination as s3://bucket/prefix."
        )
    bucket, _ = split_destination(uri)
    if not uri.startswith("s3://") or not bucket:
        raise validation.invalid(
            uri, f"{PATH}.destinationS3Uri", "Member must be an S3 URI of the form s3://bucket/prefix"
        )


def summary(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """DescribeEndpoint's DataCaptureConfigSummary of an endpoint's live config (None without one)."""
    if not config:
        return None
    enabled = bool(config.get("EnableCapture", True))
    return {
        "EnableCapture": enabled,
        "CaptureStatus": STARTED if enabled else STOPPED,
        "CurrentSamplingPercentage": int(config["InitialSamplingPercentage"]),
        "DestinationS3Uri": config["DestinationS3Uri"],
    }


def execution_roles(session: Session, account_id: str, endpoint_name: str) -> dict[str, str | None]:
    """Each variant's execution role (the model's), which capture files are written with."""
    rows = session.execute(
        select(EndpointVariant.name, EndpointVariant.container)
        .join(Endpoint, Endpoint.id == EndpointVariant.endpoint_id)
        .where(Endpoint.account_id == account_id, Endpoint.name == endpoint_name)
    ).all()
    return {name: (container or {}).get("ExecutionRoleArn") for name, container in rows}


def capture_counts(session: Session, endpoint: Endpoint, *, hours: int = 24) -> dict[str, Any]:
    """Records written and lost over the last ``hours``, from the metric store (the admin API and console)."""
    if not endpoint.extra.get("DataCaptureConfig"):
        return {"window_hours": hours, "records_written": 0, "records_failed": 0}
    end = utcnow()
    start = end - dt.timedelta(hours=hours)
    key = (endpoint.account_id, endpoint.name)
    written = metrics.endpoint_sums(session, WRITTEN_METRIC, [key], start, end).get(key, 0.0)
    failed = metrics.endpoint_sums(session, FAILED_METRIC, [key], start, end).get(key, 0.0)
    return {"window_hours": hours, "records_written": int(written), "records_failed": int(failed)}
