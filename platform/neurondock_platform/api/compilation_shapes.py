"""Shaping CompilationJob rows into DescribeCompilationJob and CompilationJobSummary (epoch seconds)."""

from __future__ import annotations

from typing import Any

from neurondock_platform.api.shapes import epoch
from neurondock_platform.models import CompilationJob, CompilationJobStatus

# Not in SageMaker's model: botocore drops it, the neurondock SDK copies it from the raw body.
LOG_TAIL_KEY = "LogTail"


def describe_compilation_job(job: CompilationJob) -> dict[str, Any]:
    """Return DescribeCompilationJob's output; FailureReason and ModelArtifacts are always present."""
    out: dict[str, Any] = {
        "CompilationJobName": job.name,
        "CompilationJobArn": job.arn,
        "CompilationJobStatus": str(job.status),
    }
    if job.compilation_started_at is not None:
        out["CompilationStartTime"] = epoch(job.compilation_started_at)
    if job.compilation_ended_at is not None:
        out["CompilationEndTime"] = epoch(job.compilation_ended_at)
    out["StoppingCondition"] = job.stopping_condition
    if job.status == CompilationJobStatus.COMPLETED and job.inference_image:
        out["InferenceImage"] = job.inference_image
    out["CreationTime"] = epoch(job.created_at)
    out["LastModifiedTime"] = epoch(job.last_modified_at)
    out["FailureReason"] = job.failure_reason or ""
    # The object the artifact is written to; it exists once the job is COMPLETED.
    out["ModelArtifacts"] = {"S3ModelArtifacts": job.model_artifacts}
    if job.status == CompilationJobStatus.COMPLETED and job.artifact_sha256:
        out["ModelDigests"] = {"ArtifactDigest": f"sha256:{job.artifact_sha256}"}
    out["RoleArn"] = job.role_arn
    out["InputConfig"] = job.input_config
    out["OutputConfig"] = job.output_config
    if job.extra.get("VpcConfig"):
        out["VpcConfig"] = job.extra["VpcConfig"]
    if job.derived_data_input_config:
        out["DerivedInformation"] = {"DerivedDataInputConfig": job.derived_data_input_config}
    if job.status == CompilationJobStatus.FAILED and job.log_tail:
        out[LOG_TAIL_KEY] = job.log_tail
    return out


def compilation_job_summary(job: CompilationJob) -> dict[str, Any]:
    """Return one CompilationJobSummary of ListCompilationJobs."""
    out: dict[str, Any] = {
        "CompilationJobName": job.name,
        "CompilationJobArn": job.arn,
        "CreationTime": epoch(job.created_at),
    }
    if job.compilation_started_at is not None:
        out["CompilationStartTime"] = epoch(job.compilation_started_at)
    if job.compilation_ended_at is not None:
        out["CompilationEndTime"] = epoch(job.compilation_ended_at)
    out["CompilationTargetDevice"] = job.target_device
    out["LastModifiedTime"] = epoch(job.last_modified_at)
    out["CompilationJobStatus"] = str(job.status)
    return out
