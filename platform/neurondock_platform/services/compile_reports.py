"""What a compilation job left for operators to read: its compile log, and the projection an endpoint serves.

The report itself is stored with the job (``CompilationJob.report``); the admin API's shapes turn it
into views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform.config import Settings
from neurondock_platform.errors import PlatformError
from neurondock_platform.models import CompilationJob, CompilationJobStatus, Endpoint
from neurondock_platform.services import compilation_jobs, objects


def compile_log(settings: Settings, job: CompilationJob) -> tuple[str, str]:
    """Return a job's compile log and where it came from (the stored object, else the stored tail)."""
    uri = compilation_jobs.report_uris(job.model_artifacts).get("compile.log") if job.model_artifacts else None
    if uri and not settings.s3_endpoint_url:
        bucket, key = compilation_jobs.split_s3_uri(uri)
        try:
            data = objects.ObjectStore(settings.objects_dir).get_object(bucket, key)
        except (PlatformError, OSError):
            pass
        else:
            return data.decode("utf-8", "replace"), uri
    return job.log_tail or "", "log tail stored with the job"


@dataclass(frozen=True)
class ServedProjection:
    """The projection of the compile job whose artifact an endpoint serves, and which job it was."""

    projection: dict[str, Any]
    source: str


def _served_urls(endpoint: Endpoint) -> set[str]:
    return {url for v in endpoint.variants if isinstance(url := v.container.get("ModelDataUrl"), str) and url}


def projections_for_endpoints(session: Session, endpoints: Sequence[Endpoint]) -> dict[int, ServedProjection]:
    """Return, per endpoint id, the projection of the newest completed job whose artifact it serves (one query)."""
    wanted = {e.id: _served_urls(e) for e in endpoints}
    urls = set().union(*wanted.values()) if wanted else set()
    accounts = {e.account_id for e in endpoints}
    if not urls:
        return {}
    jobs = session.scalars(
        select(CompilationJob)
        .where(
            CompilationJob.account_id.in_(accounts),
            CompilationJob.status == CompilationJobStatus.COMPLETED,
            CompilationJob.model_artifacts.in_(urls),
        )
        .order_by(CompilationJob.last_modified_at.desc(), CompilationJob.id.desc())
    )
    newest: dict[tuple[str, str], CompilationJob] = {}
    for job in jobs:
        newest.setdefault((job.account_id, job.model_artifacts), job)
    out: dict[int, ServedProjection] = {}
    for endpoint in endpoints:
        candidates = [
            newest[(endpoint.account_id, u)] for u in wanted[endpoint.id] if (endpoint.account_id, u) in newest
        ]
        if not candidates:
            continue
        job = max(candidates, key=lambda j: (j.last_modified_at, j.id))
        projection = job.report.get("projection") if isinstance(job.report, dict) else None
        if isinstance(projection, dict):
            out[endpoint.id] = ServedProjection(projection, f"compilation job {job.name}")
    return out
