"""SageMaker CompilationJobs (Neo): accept, look up, list, stop and delete, and the worker's claim protocol.

Status moves ``STARTING → INPROGRESS → COMPLETED | FAILED`` and ``STOPPING → STOPPED``. The API side
only creates jobs (STARTING), asks running ones to stop (STOPPING) and deletes finished ones; a worker
owns everything after that through the functions at the end of this module:

* ``claim_job`` starts one *attempt*: it bumps ``attempts``, records the owner and a heartbeat and moves
  the job to INPROGRESS, all in one conditional UPDATE so two deliveries of the same task cannot both
  win. A job whose owner still heartbeats is left alone; one whose owner died is claimed again, at most
  ``MAX_ATTEMPTS`` times, then it FAILS (a model that kills its worker must not loop forever).
* ``heartbeat`` keeps the claim alive and tells the worker whether StopCompilationJob arrived.
* ``finish_*`` write the outcome only while the caller still owns the job.

Where a job's output lands (``OutputConfig.S3OutputLocation`` = ``s3://bucket/prefix``), for an input
``s3://…/<stem>.tar.gz`` compiled for ``<target>``::

    s3://bucket/prefix/<stem>-<target>.tar.gz                the compiled artifact (ModelArtifacts)
    s3://bucket/prefix/<stem>-<target>/manifest.json         the artifact's manifest: the whole report
    s3://bucket/prefix/<stem>-<target>/report.json           the job: status, reason, summary, digests
    s3://bucket/prefix/<stem>-<target>/compile.log           the compile log in torch-neuron's formats

The report is also kept in the database (``CompilationJob.report``) and the last log lines of a FAILED
job are returned by DescribeCompilationJob as ``LogTail``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import urlparse

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neurondock_platform import dispatch
from neurondock_platform.db import utcnow
from neurondock_platform.errors import ResourceInUse, ResourceNotFound, ValidationException
from neurondock_platform.models import CompilationJob, CompilationJobStatus
from neurondock_platform.services import arns, pagination, sandbox, tags, validation
from neurondock_platform.services.compilation_inputs import (
    SUPPORTED_TARGETS,
    NeoInputError,
    derived_data_input_config,
    parse_compiler_options,
    parse_data_input_config,
)
from neurondock_platform.services.validation import MISSING

KIND = "compilation-job"
FRAMEWORK = "PYTORCH"
# CreateCompilationJob's documentation: "We recommend starting with 900 seconds".
DEFAULT_MAX_RUNTIME_SECONDS = 900
MAX_ATTEMPTS = 3
FAILURE_REASON_MAX = 1024
LOG_TAIL_LINES = 20
LOG_TAIL_MAX_CHARS = 8192
ECR = "763104351884.dkr.ecr.{region}.amazonaws.com"
# InferenceImage per target: the AWS DLC that serves what the compiler wrote (the reconciler maps both).
INFERENCE_IMAGES = {
    "ml_inf1": ECR + "/pytorch-inference-neuron:1.13.1-neuron-py310",
    "ml_c5": ECR + "/pytorch-inference:2.1.0-cpu-py310",
}
ACTIVE = (CompilationJobStatus.STARTING, CompilationJobStatus.INPROGRESS, CompilationJobStatus.STOPPING)
TERMINAL = (CompilationJobStatus.COMPLETED, CompilationJobStatus.FAILED, CompilationJobStatus.STOPPED)
SORT_COLUMNS = {
    "Name": CompilationJob.name,
    "CreationTime": CompilationJob.created_at,
    "Status": CompilationJob.status,
}
REPORT_FILES = ("manifest.json", "report.json", "compile.log")
_MODEL_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".pth", ".pt")


class CompilationJobNotFound(ResourceNotFound):
    fmt = "Could not find compilation job '{name}'."


class CompilationJobExists(ResourceInUse):
    fmt = "Resource Already Exists: Compilation job with name {name} already exists. Choose a different name."


def compilation_job_arn(region: str, account_id: str, name: str) -> str:
    return arns.make_arn(region, account_id, KIND, name)


def inference_image(target: str, region: str) -> str:
    """Return the image DescribeCompilationJob offers for deploying a compiled artifact."""
    return INFERENCE_IMAGES[target].format(region=region)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key (the key may be empty)."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def artifact_uri(output_location: str, input_uri: str, target: str) -> str:
    """Return where the compiled artifact goes: ``<S3OutputLocation>/<input stem>-<target>.tar.gz`` (Neo's name)."""
    bucket, prefix = split_s3_uri(output_location)
    stem = PurePosixPath(split_s3_uri(input_uri)[1]).name
    for suffix in _MODEL_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    name = f"{stem or 'model'}-{target}.tar.gz"
    prefix = prefix.rstrip("/")
    return f"s3://{bucket}/{prefix}/{name}" if prefix else f"s3://{bucket}/{name}"


def report_uris(model_artifacts: str) -> dict[str, str]:
    """Return the S3 URIs of the manifest, report and log written beside an artifact."""
    base = model_artifacts.removesuffix(".tar.gz")
    return {name: f"{base}/{name}" for name in REPORT_FILES}


# --- the API verbs -----------------------------------------------------------------------------------


def create_compilation_job(
    session: Session,
    *,
    account_id: str,
    region: str,
    name: str,
    role_arn: str,
    input_config: dict[str, Any] | None,
    output_config: dict[str, Any],
    stopping_condition: dict[str, Any],
    model_package_version_arn: str | None = None,
    vpc_config: dict[str, Any] | None = None,
    tag_list: list[dict[str, Any]] | None = None,
) -> CompilationJob:
    """CreateCompilationJob: check what neurondock can compile, store the job STARTING, enqueue it."""
    derived = _check_request(input_config, output_config, model_package_version_arn)
    assert input_config is not None  # _check_request refused a missing InputConfig
    if tag_list:
        validation.check_tags(tag_list)
    arn = compilation_job_arn(region, account_id, name)
    if find_compilation_job(session, account_id, arn) is not None:
        raise CompilationJobExists(name=name)
    sandbox.require_sandbox_for(session, account_id, "compile a model")
    target = output_config["TargetDevice"]
    job = CompilationJob(
        account_id=account_id,
        name=name,
        arn=arn,
        status=CompilationJobStatus.STARTING,
        role_arn=role_arn,
        input_config=input_config,
        output_config=output_config,
        stopping_condition=stopping_condition,
        target_device=target,
        max_runtime_seconds=int(stopping_condition.get("MaxRuntimeInSeconds") or DEFAULT_MAX_RUNTIME_SECONDS),
        model_artifacts=artifact_uri(output_config["S3OutputLocation"], input_config["S3Uri"], target),
        derived_data_input_config=derived,
        failure_reason="",
        extra={"VpcConfig": vpc_config} if vpc_config else {},
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create of the same name won the race
        session.rollback()
        raise CompilationJobExists(name=name) from exc
    tags.delete_all(session, account_id, arn)
    if tag_list:
        tags.set_tags(session, account_id, arn, tag_list)
    dispatch.enqueue_after_commit(session, dispatch.COMPILE_MODEL, job.id)
    return job


def _check_request(input_config: dict[str, Any] | None, output_config: dict[str, Any], package_arn: str | None) -> str:
    """Apply neurondock's rules to a shape-valid request; return the derived DataInputConfig."""
    errors = validation.Errors()
    if package_arn is not None:
        errors.add(
            package_arn,
            "modelPackageVersionArn",
            "neurondock compiles a model.tar.gz named by InputConfig.S3Uri; ModelPackageVersionArn is not supported",
        )
    derived = ""
    if input_config is None:
        if package_arn is None:
            errors.add(MISSING, "inputConfig", "Member must not be null")
    else:
        derived = _check_input_config(input_config, errors)
    _check_output_config(output_config, errors)
    errors.raise_if_any()
    return derived


def _check_input_config(config: dict[str, Any], errors: validation.Errors) -> str:
    framework = config["Framework"]
    if framework != FRAMEWORK:
        errors.add(
            framework,
            "inputConfig.framework",
            "neurondock compiles PyTorch models only (TorchScript in a model.tar.gz): Framework must be PYTORCH",
        )
    bucket, key = split_s3_uri(config["S3Uri"])
    if not config["S3Uri"].startswith("s3://") or not bucket or not key or key.endswith("/"):
        errors.add(
            config["S3Uri"],
            "inputConfig.s3Uri",
            "neurondock reads the model with the S3 API: give s3://<bucket>/<key> of one model.tar.gz",
        )
    raw = config.get("DataInputConfig")
    if raw is None:
        if framework == FRAMEWORK:
            errors.add(
                MISSING,
                "inputConfig.dataInputConfig",
                'Member must not be null for PyTorch: give the input shapes, e.g. {"input0": [1,3,224,224]} '
                "or [[1,3,224,224]]",
            )
        return ""
    try:
        return derived_data_input_config(parse_data_input_config(raw))
    except NeoInputError as exc:
        errors.add(raw, "inputConfig.dataInputConfig", exc.reason)
        return ""


def _check_output_config(config: dict[str, Any], errors: validation.Errors) -> None:
    supported = f"[{', '.join(SUPPORTED_TARGETS)}]"
    target = config.get("TargetDevice")
    if config.get("TargetPlatform") is not None:
        errors.add(
            config["TargetPlatform"],
            "outputConfig.targetPlatform",
            f"TargetPlatform is not supported by neurondock; give TargetDevice, one of {supported}",
        )
    elif target is None:
        errors.add(MISSING, "outputConfig.targetDevice", f"Member must not be null; one of {supported}")
    elif target not in SUPPORTED_TARGETS:
        errors.add(
            target,
            "outputConfig.targetDevice",
            f"TargetDevice is not supported by neurondock; supported target devices: {supported}",
        )
    location = config["S3OutputLocation"]
    if not location.startswith("s3://") or not split_s3_uri(location)[0]:
        errors.add(
            location,
            "outputConfig.s3OutputLocation",
            "neurondock writes the artifact with the S3 API: give s3://<bucket>/<prefix>",
        )
    options = config.get("CompilerOptions")
    if options is not None:
        try:
            parse_compiler_options(options)
        except NeoInputError as exc:
            errors.add(options, "outputConfig.compilerOptions", exc.reason)


def find_compilation_job(session: Session, account_id: str, arn: str) -> CompilationJob | None:
    """Return the caller's job with this ARN, or None."""
    return session.scalar(
        select(CompilationJob).where(CompilationJob.account_id == account_id, CompilationJob.arn == arn)
    )


def get_compilation_job(session: Session, *, account_id: str, region: str, name: str) -> CompilationJob:
    """Return the caller's job; raise ResourceNotFound (``Could not find compilation job 'name'.``)."""
    job = find_compilation_job(session, account_id, compilation_job_arn(region, account_id, name))
    if job is None:
        raise CompilationJobNotFound(name=name)
    return job


def stop_compilation_job(session: Session, *, account_id: str, region: str, name: str) -> CompilationJob:
    """StopCompilationJob: ask the worker to kill the compile (STOPPING); it records STOPPED.

    Stopping a job that is already STOPPING or finished changes nothing, so a stop racing the end of
    a compile is not an error.
    """
    job = get_compilation_job(session, account_id=account_id, region=region, name=name)
    if job.status in (CompilationJobStatus.STARTING, CompilationJobStatus.INPROGRESS):
        job.status = CompilationJobStatus.STOPPING
        job.touch()
        session.flush()
    return job


def delete_compilation_job(session: Session, *, account_id: str, region: str, name: str) -> None:
    """DeleteCompilationJob: only a COMPLETED, FAILED or STOPPED job; its S3 output stays, as on AWS."""
    job = get_compilation_job(session, account_id=account_id, region=region, name=name)
    if job.status not in TERMINAL:
        raise ValidationException(
            f"Cannot delete compilation job {name} while its status is {job.status}: stop it with "
            "StopCompilationJob and delete it after its status becomes STOPPED."
        )
    tags.delete_all(session, account_id, job.arn)
    session.delete(job)
    session.flush()


def list_compilation_jobs(
    session: Session,
    *,
    account_id: str,
    page: pagination.PageRequest,
    name_contains: str | None = None,
    status: str | None = None,
    created_before: dt.datetime | None = None,
    created_after: dt.datetime | None = None,
    modified_before: dt.datetime | None = None,
    modified_after: dt.datetime | None = None,
) -> pagination.Page[CompilationJob]:
    """ListCompilationJobs with AWS's filters (NameContains is case-insensitive; time bounds are exclusive)."""
    return pagination.list_page(
        session,
        CompilationJob,
        op="ListCompilationJobs",
        account_id=account_id,
        page=page,
        sort_columns=SORT_COLUMNS,
        name_contains=name_contains,
        created_before=created_before,
        created_after=created_after,
        lifecycle=pagination.Lifecycle(status, modified_before, modified_after),
    )


tags.register_resource_model(KIND, CompilationJob)


# --- the worker's side -------------------------------------------------------------------------------

OwnerState = Literal["alive", "dead", "unknown"]


@dataclass(frozen=True)
class Claim:
    """What ``claim_job`` decided.

    ``outcome``: ``run`` (the caller owns a new attempt), ``busy`` (an owner that is alive, or not known
    to be dead, heartbeats), ``done`` (the job is already COMPLETED/FAILED/STOPPED, or gone), ``stopped``
    (it was STOPPING and is now STOPPED), ``failed`` (attempts exhausted, now FAILED).
    ``owner_state`` is what the caller's ``owner_state`` said of the previous owner.
    """

    outcome: Literal["run", "busy", "done", "stopped", "failed"]
    status: str = ""
    attempt: int = 0
    previous_owner: str | None = None
    previous_child_pid: int | None = None
    owner_state: OwnerState = "dead"


def jobs_needing_work(session: Session) -> list[int]:
    """Return the ids of jobs a worker must (re)visit: STARTING, INPROGRESS and STOPPING."""
    return list(
        session.scalars(select(CompilationJob.id).where(CompilationJob.status.in_(ACTIVE)).order_by(CompilationJob.id))
    )


def claim_job(
    session: Session,
    job_id: int,
    owner: str,
    *,
    lease_timeout: float,
    owner_state: Callable[[str], OwnerState],
    max_attempts: int = MAX_ATTEMPTS,
    now: dt.datetime | None = None,
) -> Claim:
    """Decide what a delivery of the compile task does with this job, and take it when it should run."""
    now = now or utcnow()
    job = session.get(CompilationJob, job_id, populate_existing=True)
    if job is None or job.status in TERMINAL:
        return Claim("done", str(job.status) if job else "")
    previous = job.owner
    state: OwnerState = owner_state(previous) if previous else "dead"
    fresh = job.heartbeat_at is not None and (now - job.heartbeat_at).total_seconds() < lease_timeout
    # An owner that stopped heartbeating is hung or gone even if its process id is still taken.
    if previous is not None and previous != owner and state != "dead" and fresh:
        return Claim("busy", str(job.status), job.attempts, previous, job.child_pid, state)
    child_pid = job.child_pid
    if job.status == CompilationJobStatus.STOPPING:
        _finish(session, job, CompilationJobStatus.STOPPED, now)
        return Claim("stopped", str(job.status), job.attempts, previous, child_pid, state)
    if job.attempts >= max_attempts:
        reason = (
            "ClientError: CompilationError: The compilation was interrupted "
            f"{job.attempts} times (its worker stopped before it finished, e.g. killed for using too much "
            "memory); it was not retried again."
        )
        job.failure_reason = reason
        _finish(session, job, CompilationJobStatus.FAILED, now)
        return Claim("failed", str(job.status), job.attempts, previous, child_pid, state)
    # One conditional UPDATE: a concurrent delivery that read the same row loses here.
    result = session.execute(
        update(CompilationJob)
        .where(
            CompilationJob.id == job_id,
            CompilationJob.attempts == job.attempts,
            CompilationJob.status == job.status,
        )
        .values(
            attempts=job.attempts + 1,
            owner=owner,
            heartbeat_at=now,
            child_pid=None,
            status=CompilationJobStatus.INPROGRESS,
            compilation_started_at=job.compilation_started_at or now,
            last_modified_at=now if job.status != CompilationJobStatus.INPROGRESS else job.last_modified_at,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return Claim("busy", str(job.status), job.attempts, previous, child_pid, state)
    return Claim("run", CompilationJobStatus.INPROGRESS, job.attempts + 1, previous, child_pid, state)


def _finish(session: Session, job: CompilationJob, status: CompilationJobStatus, now: dt.datetime) -> None:
    job.status = status
    job.failure_reason = (job.failure_reason or "")[:FAILURE_REASON_MAX]
    job.compilation_ended_at = now
    job.last_modified_at = now
    job.owner = None
    job.heartbeat_at = None
    job.child_pid = None
    session.flush()


def heartbeat(session: Session, job_id: int, owner: str, *, child_pid: int | None = None) -> str | None:
    """Renew the caller's claim; return the job's status, or None when the caller no longer owns it."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if child_pid is not None:
        values["child_pid"] = child_pid
    result = session.execute(
        update(CompilationJob)
        .where(CompilationJob.id == job_id, CompilationJob.owner == owner, CompilationJob.status.in_(ACTIVE))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    status = session.scalar(select(CompilationJob.status).where(CompilationJob.id == job_id))
    return None if status is None else str(status)


def _owned(session: Session, job_id: int, owner: str) -> CompilationJob | None:
    job = session.get(CompilationJob, job_id, populate_existing=True, with_for_update=True)
    if job is None or job.owner != owner or job.status not in ACTIVE:
        return None
    return job


def finish_completed(
    session: Session,
    job_id: int,
    owner: str,
    *,
    artifact_sha256: str,
    report: dict[str, Any],
    extra: dict[str, Any],
) -> str | None:
    """Record a finished compile (COMPLETED, or STOPPED when a stop arrived meanwhile); None if not ours."""
    job = _owned(session, job_id, owner)
    if job is None:
        return None
    if job.status == CompilationJobStatus.STOPPING:
        _finish(session, job, CompilationJobStatus.STOPPED, utcnow())
        return str(job.status)
    job.artifact_sha256 = artifact_sha256
    job.report = report
    parsed = arns.parse_arn(job.arn)
    job.inference_image = inference_image(job.target_device, parsed.region if parsed else "us-east-1")
    job.extra = {**job.extra, **extra}
    _finish(session, job, CompilationJobStatus.COMPLETED, utcnow())
    return str(job.status)


def finish_failed(
    session: Session,
    job_id: int,
    owner: str,
    *,
    reason: str,
    log_tail: str | None,
    extra: dict[str, Any] | None = None,
) -> str | None:
    """Record a failed compile with its FailureReason and last log lines; None if not ours."""
    job = _owned(session, job_id, owner)
    if job is None:
        return None
    job.failure_reason = reason
    job.log_tail = log_tail
    job.extra = {**job.extra, **(extra or {})}
    _finish(session, job, CompilationJobStatus.FAILED, utcnow())
    return str(job.status)


def finish_stopped(session: Session, job_id: int, owner: str) -> str | None:
    """Record that StopCompilationJob ended the compile; None if not ours."""
    job = _owned(session, job_id, owner)
    if job is None:
        return None
    _finish(session, job, CompilationJobStatus.STOPPED, utcnow())
    return str(job.status)


def tail(text: str, lines: int = LOG_TAIL_LINES, max_chars: int = LOG_TAIL_MAX_CHARS) -> str:
    """Return the last ``lines`` lines of a log, at most ``max_chars`` characters of them."""
    return "\n".join(text.strip().splitlines()[-lines:])[-max_chars:]


def jobs_producing(session: Session, *, account_id: str, model_artifacts: str, limit: int = 5) -> list[CompilationJob]:
    """Return (some of) the account's compilation jobs that wrote the compiled artifact at ``model_artifacts``."""
    query = select(CompilationJob).where(
        CompilationJob.account_id == account_id, CompilationJob.model_artifacts == model_artifacts
    )
    return list(session.scalars(query.limit(limit)))
