"""Run one CompilationJob: fetch the model over S3, compile it in a sandboxed child, upload the output.

``run_compilation_job`` is what the ``neurondock.compile_model`` task calls; tests call it directly.
Each call is one delivery of the task and is safe to repeat (Celery acks late, so a task can arrive
twice, and the ``worker_ready`` hook re-sends every unfinished job):

1. Claim the job (``services.compilation_jobs.claim_job``): a finished job is left alone; a job whose
   owner still heartbeats is left to it; a job whose owner died starts a new attempt (the old compile
   child, if it still runs on this host, is killed first); after three attempts the job FAILS.
2. Download ``InputConfig.S3Uri`` with the S3 API into ``<data_dir>/compile/job-<id>-<attempt>/``.
3. Compile in a child process (``CompileProcess``) limited to the job's MaxRuntimeInSeconds, a memory
   limit and optionally CPU time. A lease thread heartbeats every ``heartbeat_interval`` seconds and
   reads the status, so StopCompilationJob (STOPPING) kills the child within about a second.
4. Upload, under ``OutputConfig.S3OutputLocation``, the artifact ``<input stem>-<target>.tar.gz`` and
   beside it ``<input stem>-<target>/manifest.json``, ``report.json`` and ``compile.log`` (a FAILED
   job gets ``report.json`` and ``compile.log`` there too), then record COMPLETED with the digest,
   the report and the InferenceImage.

Compiles of the same input, options, shapes, target and compiler version hit the cache under
``<data_dir>/cache/compile``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.config import Settings
from neurondock_platform.db import session_scope
from neurondock_platform.models import Account, CompilationJob, CompilationJobStatus
from neurondock_platform.s3_client import OwnerClientFactory, StoreOwner
from neurondock_platform.services import compilation_jobs
from neurondock_platform.services.compilation_jobs import OwnerState
from neurondock_workers import sandbox as sandboxing
from neurondock_workers.sandbox import Sandbox

log = logging.getLogger(__name__)

CHILD_MODULE = "neurondock_workers.compiler._child"
DEFAULT_MEMORY_LIMIT = 8 * 1024**3
UNEXPECTED = (
    "ClientError: CompilationError: There was an unexpected error during compilation, check your inputs and "
    "try again in a few minutes."
)


@dataclass(frozen=True)
class RunnerConfig:
    """Where compiles run and how a worker holds its claim on a job."""

    work_root: Path
    cache_dir: Path | None
    host_id: str
    # A claim whose heartbeat is older than this is presumed dead (another host's worker may take it).
    lease_timeout: float = 15.0
    heartbeat_interval: float = 0.5
    max_attempts: int = compilation_jobs.MAX_ATTEMPTS
    memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT
    # None: MaxRuntimeInSeconds x torch threads + 60 s of CPU time.
    cpu_limit_s: int | None = None
    torch_threads: int = 1
    measure_budget_s: float = 1.5
    poll_interval: float = 0.2
    # How compile children run (docs/sandbox.md); None runs them unsandboxed (unit tests only).
    sandbox: Sandbox | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RunnerConfig:
        """Return the configuration of a worker process."""
        values: dict[str, Any] = {
            "work_root": settings.data_dir / "compile",
            "cache_dir": settings.data_dir / "cache" / "compile",
            "host_id": settings.host_id,
            "lease_timeout": settings.heartbeat_timeout,
            "sandbox": sandboxing.for_settings(settings),
        }
        values.update(overrides)
        return cls(**values)


class _JobFailure(Exception):
    """The job FAILS with this FailureReason (and these log lines, when the compiler wrote none)."""

    def __init__(self, reason: str, log_text: str | None = None, *, output_writable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_text = log_text
        # False when writing to S3OutputLocation is what failed: no report or log is attempted there.
        self.output_writable = output_writable


@dataclass(frozen=True)
class _Job:
    """What an attempt needs from the job row, read once after the claim."""

    id: int
    name: str
    arn: str
    target: str
    input_uri: str
    data_input_config: str
    compiler_options: str | None
    max_runtime_seconds: int
    model_artifacts: str
    # Whose job it is: its input and output move with that account's own credentials.
    owner: StoreOwner
    # An admin account's compile may run unsandboxed where the sandbox cannot start.
    trusted: bool = False

    @staticmethod
    def of(job: CompilationJob, trusted: bool = False) -> _Job:
        return _Job(
            owner=StoreOwner(job.account_id, job.role_arn),
            id=job.id,
            name=job.name,
            arn=job.arn,
            target=job.target_device,
            input_uri=job.input_config["S3Uri"],
            data_input_config=job.input_config.get("DataInputConfig") or "",
            compiler_options=job.output_config.get("CompilerOptions"),
            max_runtime_seconds=job.max_runtime_seconds,
            model_artifacts=job.model_artifacts,
            trusted=trusted,
        )


def run_compilation_job(
    factory: sessionmaker[Session],
    job_id: int,
    s3_clients: OwnerClientFactory,
    config: RunnerConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Take one delivery of the compile task for ``job_id``; return what it did (for logs and tests).

    Returns the final status it recorded (``COMPLETED``, ``FAILED``, ``STOPPED``), ``done`` when the
    job was already finished or is gone, ``busy`` when another live worker owns it, or ``lost`` when
    this worker's claim was taken over while it ran.
    """
    owner = f"{config.host_id}/{os.getpid()}/{uuid.uuid4().hex[:12]}"
    deadline = clock() + 1.5 * config.lease_timeout
    while True:
        with session_scope(factory) as session:
            claim = compilation_jobs.claim_job(
                session,
                job_id,
                owner,
                lease_timeout=config.lease_timeout,
                owner_state=lambda previous: owner_state(previous, config.host_id),
                max_attempts=config.max_attempts,
            )
            row = session.get(CompilationJob, job_id) if claim.outcome == "run" else None
            owner_account = session.get(Account, row.account_id) if row is not None else None
            job = _Job.of(row, bool(owner_account and owner_account.is_admin)) if row is not None else None
        # A live owner on this host is known to be working; one elsewhere is waited out until its lease lapses.
        if claim.outcome != "busy" or claim.owner_state == "alive" or clock() > deadline:
            break
        sleep(config.poll_interval)
    if claim.previous_owner and claim.previous_child_pid and claim.outcome != "busy":
        kill_orphan_compile(claim.previous_owner, claim.previous_child_pid, config.host_id)
    if claim.outcome == "busy":
        log.info("compilation job %s is owned by %s; nothing to do", job_id, claim.previous_owner)
        return "busy"
    if claim.outcome != "run" or job is None:
        log.info("compilation job %s: %s (%s)", job_id, claim.outcome, claim.status)
        return claim.status if claim.outcome in ("stopped", "failed") else "done"
    log.info("compilation job %s (%s): attempt %s as %s", job.name, job_id, claim.attempt, owner)
    return _Attempt(factory, job, claim.attempt, owner, s3_clients(job.owner), config, clock).run()


def owner_state(owner: str, host_id: str) -> OwnerState:
    """Say whether a job's owner (``host/pid/token``) is a live process here, a dead one, or elsewhere."""
    parts = owner.rsplit("/", 2)
    if len(parts) != 3 or parts[0] != host_id or not parts[1].isdigit():
        return "unknown"
    pid = int(parts[1])
    if pid == os.getpid():
        return "alive"
    return "alive" if _is_python(pid) else "dead"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_python(pid: int) -> bool:
    # A pid can be reused by an unrelated process; a worker or test run is always a Python process.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and "python" in _cmdline(pid).lower()


def kill_orphan_compile(owner: str, pid: int, host_id: str) -> bool:
    """Kill the compile child a dead attempt left running on this host; return whether one was killed."""
    if not owner.startswith(f"{host_id}/") or CHILD_MODULE not in _cmdline(pid):
        return False
    try:
        # The child leads its own session (CompileProcess starts it so), so its group is its pid.
        if os.getpgid(pid) != pid:
            return False
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    log.warning("killed compile child %s left behind by %s", pid, owner)
    return True


def lookup_cached(
    model_path: Path,
    data_input_config: str,
    compiler_options: str | None,
    target: str,
    cache_dir: Path | None,
    workdir: Path,
) -> Any:
    """Return the cached CompileResult for this input, or None, without starting a compile child.

    The key is the compiler's own (``CompileCache.key``: input hash, options, shapes, target, compiler
    version), so a hit is exactly what ``compile_model`` would have returned from its cache; anything
    that does not parse is left to the child, which reports it properly.
    """
    from neurondock_workers.compiler import (
        COMPILER_VERSION,
        CompileCache,
        CompilerError,
        CompileResult,
        parse_compiler_options,
        parse_data_input_config,
    )

    if cache_dir is None or not model_path.is_file() or model_path.is_symlink():
        return None
    started = time.perf_counter()
    try:
        options = parse_compiler_options(compiler_options)
        specs = parse_data_input_config(data_input_config)
    except CompilerError:
        return None
    digest = hashlib.sha256()
    with model_path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    key = CompileCache.key(digest.hexdigest(), options, specs, target, COMPILER_VERSION)
    entry = CompileCache(cache_dir).get(key)
    if entry is None:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    artifact, log_path = workdir / "artifact.tar.gz", workdir / "compile.log"
    shutil.copyfile(entry.artifact, artifact)
    shutil.copyfile(entry.log, log_path)
    result = CompileResult.from_dict({**entry.result, "artifact_path": str(artifact), "log_path": str(log_path)})
    result.cache_hit = True
    result.compile_seconds = time.perf_counter() - started
    return result


class _Lease:
    """Heartbeat the claim from a thread and remember the status the database reports."""

    def __init__(self, factory: sessionmaker[Session], job_id: int, owner: str, interval: float) -> None:
        self.factory, self.job_id, self.owner, self.interval = factory, job_id, owner, interval
        self.status: str | None = CompilationJobStatus.INPROGRESS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"compile-lease-{job_id}", daemon=True)

    @property
    def lost(self) -> bool:
        return self.status is None

    @property
    def stop_requested(self) -> bool:
        return self.status == CompilationJobStatus.STOPPING

    def should_stop(self) -> bool:
        return self.lost or self.stop_requested

    def beat(self, child_pid: int | None = None) -> None:
        with session_scope(self.factory) as session:
            self.status = compilation_jobs.heartbeat(session, self.job_id, self.owner, child_pid=child_pid)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a database hiccup: keep the compile going and try again
                log.warning("heartbeat of compilation job %s failed", self.job_id, exc_info=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class _Attempt:
    """One attempt at one job, from download to the recorded outcome."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        job: _Job,
        attempt: int,
        owner: str,
        s3: Any,
        config: RunnerConfig,
        clock: Callable[[], float],
    ) -> None:
        self.factory, self.job, self.attempt, self.owner, self.s3, self.config, self.clock = (
            factory,
            job,
            attempt,
            owner,
            s3,
            config,
            clock,
        )
        self.workdir = config.work_root / f"job-{job.id}-attempt-{attempt}"
        self.uris = compilation_jobs.report_uris(job.model_artifacts)
        self.started = clock()

    def run(self) -> str:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        try:
            with _Lease(self.factory, self.job.id, self.owner, self.config.heartbeat_interval) as lease:
                return self._run(lease)
        except _JobFailure as failure:
            return self._fail(failure.reason, failure.log_text, write_output=failure.output_writable)
        except Exception as exc:
            log.exception("compilation job %s failed unexpectedly", self.job.name)
            detail = str(exc).splitlines()[0] if str(exc) else ""
            return self._fail(f"{UNEXPECTED} ({type(exc).__name__}: {detail})", None, write_output=True)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _run(self, lease: _Lease) -> str:
        from neurondock_workers.compiler import (
            CompileProcess,
            CompileRequest,
            CompilerError,
            CompileStoppedError,
            CompileTimeoutError,
        )

        model_path = self._download()
        if lease.should_stop():
            return self._stopped(lease)
        cached = lookup_cached(
            model_path,
            self.job.data_input_config,
            self.job.compiler_options,
            self.job.target,
            self.config.cache_dir,
            self.workdir / "cached",
        )
        if cached is not None:
            return self._complete(cached.artifact_path, cached.log_path, cached)
        sandbox = self._sandbox()
        remaining = self.job.max_runtime_seconds - (self.clock() - self.started)
        if remaining <= 0:
            raise _JobFailure(CompileTimeoutError(seconds=self.job.max_runtime_seconds).failure_reason)
        request = CompileRequest(
            model_path=str(model_path),
            input_config=self.job.data_input_config,
            workdir=str(self.workdir / "compile"),
            target=self.job.target,
            compiler_options=self.job.compiler_options,
            cache_dir=str(self.config.cache_dir) if self.config.cache_dir else None,
            torch_threads=self.config.torch_threads,
            measure_budget_s=self.config.measure_budget_s,
        )
        # The wall-clock limit is enforced by this process; the CPU limit is the child's own backstop,
        # so a compile orphaned by a killed worker cannot run on much past MaxRuntimeInSeconds.
        cpu_limit = self.config.cpu_limit_s or self.job.max_runtime_seconds * max(1, self.config.torch_threads) + 60
        process = CompileProcess(
            request,
            max_runtime_s=remaining,
            memory_limit_bytes=self.config.memory_limit_bytes,
            cpu_limit_s=cpu_limit,
            sandbox=sandbox,
        )
        process.start()
        lease.beat(child_pid=process.pid)
        try:
            result = process.wait(should_stop=lease.should_stop, poll_interval=0.1)
        except CompileStoppedError:
            return self._stopped(lease)
        except CompileTimeoutError:
            reason = CompileTimeoutError(seconds=self.job.max_runtime_seconds).failure_reason
            raise _JobFailure(reason, self._log_text(reason)) from None
        except CompilerError as exc:
            raise _JobFailure(exc.failure_reason, self._log_text(exc.failure_reason)) from None
        if lease.lost:
            return "lost"
        return self._complete(result.artifact_path, result.log_path, result)

    def _sandbox(self) -> Sandbox | None:
        """The sandbox this compile runs in; None unsandboxed; or the job fails when it may not run."""
        sandbox = self.config.sandbox
        if sandbox is None or sandbox.enabled or sandbox.mode == sandboxing.MODE_OFF or self.job.trusted:
            return sandbox
        raise _JobFailure(
            "ClientError: CompilationError: The sandbox for compile inputs cannot start on host "
            f"{self.config.host_id} ({sandbox.reason}), and only admin accounts may compile outside it. Ask the "
            "operator to install bubblewrap, or to start neurondock with --unsafe-unsandboxed-user-code."
        )

    def _stopped(self, lease: _Lease) -> str:
        if lease.lost:
            return "lost"
        with session_scope(self.factory) as session:
            status = compilation_jobs.finish_stopped(session, self.job.id, self.owner)
        log.info("compilation job %s stopped", self.job.name)
        return status or "lost"

    # -- S3 ----------------------------------------------------------------------------------------

    def _download(self) -> Path:
        from neurondock_workers.compiler import InputConfigurationError

        uri = self.job.input_uri
        bucket, key = compilation_jobs.split_s3_uri(uri)
        name = PurePosixPath(key).name
        if name in ("", ".", ".."):
            name = "model.tar.gz"
        path = self.workdir / "input" / name
        path.parent.mkdir(parents=True)
        try:
            self.s3.download_file(bucket, key, str(path))
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            reason = InputConfigurationError(
                reason=f"Unable to download the model from {uri} ({_s3_error(exc)}). Check that InputConfig.S3Uri "
                "names an existing model.tar.gz that the job can read."
            ).failure_reason
            raise _JobFailure(reason) from None
        return path

    def _put(self, uri: str, body: bytes, content_type: str) -> None:
        bucket, key = compilation_jobs.split_s3_uri(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    def _upload_failure(self, uri: str, exc: Exception) -> _JobFailure:
        return _JobFailure(
            "ClientError: OutputConfiguration: Unable to upload the compiled model to "
            f"{uri} ({_s3_error(exc)}). Check that OutputConfig.S3OutputLocation names a bucket the job can "
            "write to.",
            output_writable=False,
        )

    # -- outcomes ----------------------------------------------------------------------------------

    def _complete(self, artifact: Path, log_path: Path, result: Any) -> str:
        from neurondock_workers.compiler import read_manifest

        manifest = dict(read_manifest(artifact).document)
        report = self._report(CompilationJobStatus.COMPLETED, "", result)
        bucket, key = compilation_jobs.split_s3_uri(self.job.model_artifacts)
        try:
            self.s3.upload_file(str(artifact), bucket, key, ExtraArgs={"ContentType": "application/x-gzip"})
            self._put(self.uris["manifest.json"], _json(manifest), "application/json")
            self._put(self.uris["report.json"], _json(report), "application/json")
            self._put(self.uris["compile.log"], log_path.read_bytes(), "text/plain; charset=utf-8")
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise self._upload_failure(self.job.model_artifacts, exc) from None
        with session_scope(self.factory) as session:
            status = compilation_jobs.finish_completed(
                session,
                self.job.id,
                self.owner,
                artifact_sha256=result.artifact_sha256,
                report=manifest,
                extra={"Objects": self.uris, "Summary": report["summary"]},
            )
        log.info(
            "compilation job %s: %s in %.1f s (cache hit: %s)",
            self.job.name,
            status,
            result.compile_seconds,
            result.cache_hit,
        )
        return status or "lost"

    def _fail(self, reason: str, log_text: str | None, *, write_output: bool) -> str:
        text = log_text or f"ERROR: {reason}\n"
        objects: dict[str, str] = {}
        if write_output:
            report = _json(self._report(CompilationJobStatus.FAILED, reason))
            try:  # best effort: the job fails with its reason either way
                self._put(self.uris["report.json"], report, "application/json")
                self._put(self.uris["compile.log"], text.encode(), "text/plain; charset=utf-8")
                objects = {k: v for k, v in self.uris.items() if k != "manifest.json"}
            except (ClientError, BotoCoreError, Boto3Error) as exc:
                log.info("could not write the report of failed job %s: %s", self.job.name, _s3_error(exc))
        with session_scope(self.factory) as session:
            status = compilation_jobs.finish_failed(
                session,
                self.job.id,
                self.owner,
                reason=reason,
                log_tail=compilation_jobs.tail(text),
                extra={"Objects": objects} if objects else None,
            )
        log.info("compilation job %s: %s: %s", self.job.name, status, reason)
        return status or "lost"

    def _log_text(self, reason: str) -> str:
        """Return the compile log of a failed compile, else the child's output, ending with the reason."""
        compile_dir = self.workdir / "compile"
        for path in (compile_dir / "compile.log", compile_dir / "sandbox" / "child.log"):
            if path.is_file() and path.stat().st_size:
                text = path.read_text(errors="replace")
                return text if reason in text else text.rstrip("\n") + f"\nERROR: {reason}\n"
        return f"ERROR: {reason}\n"

    def _report(self, status: str, reason: str, result: Any = None) -> dict[str, Any]:
        report: dict[str, Any] = {
            "emulated": True,
            "CompilationJobName": self.job.name,
            "CompilationJobArn": self.job.arn,
            "CompilationJobStatus": status,
            "FailureReason": reason,
            "TargetDevice": self.job.target,
            "InputConfig.S3Uri": self.job.input_uri,
            "ModelArtifacts": self.job.model_artifacts if result is not None else None,
            "attempt": self.attempt,
            "objects": self.uris,
        }
        if result is not None:
            report.update(
                {
                    "ArtifactDigest": f"sha256:{result.artifact_sha256}",
                    "artifact_size": result.artifact_size,
                    "compile_seconds": round(result.compile_seconds, 3),
                    "cache_hit": result.cache_hit,
                    "cache_key": result.cache_key,
                    "compiler_version": result.compiler_version,
                    "stage_seconds": result.stage_seconds,
                    "summary": result.summary(),
                }
            )
        return report


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, default=str).encode()


def _s3_error(exc: Exception) -> str:
    if isinstance(exc.__cause__ or exc.__context__, ClientError):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]  # boto3 wraps transfer errors
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        code = {"404": "NoSuchKey", "403": "AccessDenied"}.get(code, code)
        message = str(error.get("Message") or "").strip()
        if code == "NoSuchKey" and not message:
            message = "the object does not exist"
        return f"{code}: {message}" if message else code or "S3 error"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
