"""ARNs for SageMaker resources (AWS lower-cases the name part, docs/sagemaker-api.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = {
    "model": "model",
    "endpoint-config": "endpoint configuration",
    "endpoint": "endpoint",
    "compilation-job": "compilation job",
}
_ARN_RE = re.compile(
    r"arn:aws[a-z\-]*:sagemaker:(?P<region>[a-z0-9-]*):(?P<account>\d{12}):(?P<kind>[a-z-]+)/(?P<name>.+)"
)


@dataclass(frozen=True)
class Arn:
    region: str
    account_id: str
    kind: str
    name: str


def make_arn(region: str, account_id: str, kind: str, name: str) -> str:
    """Return the ARN of a SageMaker resource."""
    return f"arn:aws:sagemaker:{region}:{account_id}:{kind}/{name.lower()}"


def parse_arn(value: str) -> Arn | None:
    """Parse a SageMaker ARN, or return None when it is not one."""
    m = _ARN_RE.fullmatch(value)
    if not m:
        return None
    return Arn(m["region"], m["account"], m["kind"], m["name"])
