"""The compile runner called directly (as the task calls it) against the embedded S3 store over HTTP.

Jobs are created through the API (Flask test client), models are uploaded with boto3 to the store
served on a loopback port, and ``run_compilation_job`` does the rest: real compiles in child processes.
SQLite only, except the happy path, which also runs on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from tests.integration.compilation.compilation_helpers import (
    BUCKET,
    NEURON_IMAGE,
    OUTPUT,
    gather_only,
    job_request,
    script_bytes,
    tarball,
    with_input,
    with_output,
)
from tests.support.torch_models import small_cnn
from tests.support.waiting import wait_for

SQLITE_ONLY = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
ARTIFACT_KEY = "compiled/model-ml_inf1.tar.gz"


@pytest.fixture(scope="module")
def cnn_tarball() -> bytes:
    return tarball({"model.pt": script_bytes(small_cnn(seed=0))})


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory, cnn_tarball):
    """A compile cache that already holds the CNN job's compile (done once, in process)."""
    from neurondock_workers.compiler import CompileCache, compile_model

    root = tmp_path_factory.mktemp("warm")
    (root / "model.tar.gz").write_bytes(cnn_tarball)
    cache = CompileCache(root / "cache")
    compile_model(
        root / "model.tar.gz",
        '{"input0": [1, 3, 32, 32]}',
        "ml_inf1",
        None,
        root / "w",
        cache=cache,
        measure_budget_s=0.2,
    )
    return cache.root


@pytest.fixture
def put(s3):
    def upload(key: str, body: bytes) -> str:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        return f"s3://{BUCKET}/{key}"

    return upload


@pytest.fixture
def create(ok, job_id_of):
    def make(name: str, request: dict | None = None) -> int:
        ok("CreateCompilationJob", request or job_request(name))
        return job_id_of(name)

    return make


def _job(session_factory, job_id: int):
    from neurondock_platform.models import CompilationJob

    with session_factory() as session:
        return session.get(CompilationJob, job_id)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _set_job(session_factory, job_id: int, **values) -> None:
    from sqlalchemy import update

    from neurondock_platform.db import session_scope
    from neurondock_platform.models import CompilationJob

    with session_scope(session_factory) as session:
        session.execute(update(CompilationJob).where(CompilationJob.id == job_id).values(**values))


# --- the happy path ------------------------------------------------------------------------------------


def test_a_small_cnn_compiles_to_a_real_artifact_with_report_and_log(
    ok, s3, put, create, run_job, session_factory, cnn_tarball
):
    put("models/cnn/model.tar.gz", cnn_tarball)
    job_id = create("cnn")
    assert run_job(job_id) == "COMPLETED"

    desc = ok("DescribeCompilationJob", {"CompilationJobName": "cnn"})
    assert desc["CompilationJobStatus"] == "COMPLETED"
    assert desc["FailureReason"] == ""
    assert desc["ModelArtifacts"]["S3ModelArtifacts"] == f"{OUTPUT}/model-ml_inf1.tar.gz"
    assert desc["InferenceImage"] == NEURON_IMAGE
    assert desc["CreationTime"] <= desc["CompilationStartTime"] <= desc["CompilationEndTime"]
    assert "LogTail" not in desc

    body = s3.get_object(Bucket=BUCKET, Key=ARTIFACT_KEY)["Body"].read()
    assert desc["ModelDigests"]["ArtifactDigest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert {"model.pt", "manifest.json", "compile.log"} <= names
    assert manifest["emulated"] is True and manifest["target"] == "ml_inf1"

    assert (
        json.loads(s3.get_object(Bucket=BUCKET, Key="compiled/model-ml_inf1/manifest.json")["Body"].read()) == manifest
    )
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="compiled/model-ml_inf1/report.json")["Body"].read())
    assert report["emulated"] is True
    assert report["CompilationJobStatus"] == "COMPLETED"
    assert report["ArtifactDigest"] == desc["ModelDigests"]["ArtifactDigest"]
    assert report["summary"]["percent_supported"] == 100.0
    log_text = s3.get_object(Bucket=BUCKET, Key="compiled/model-ml_inf1/compile.log")["Body"].read().decode()
    assert "Compiling function _NeuronGraph$" in log_text

    job = _job(session_factory, job_id)
    assert job.report == manifest
    assert job.attempts == 1 and job.owner is None and job.child_pid is None
    assert job.extra["Objects"]["report.json"] == f"{OUTPUT}/model-ml_inf1/report.json"


# --- bad inputs end FAILED with Neo's wording ----------------------------------------------------------


def _state_dict_pickle() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(4, 2).state_dict(), buffer)
    return buffer.getvalue()


BAD_INPUTS = {
    "two-model-files": (
        lambda cnn: tarball({"model.pt": cnn, "other.pth": cnn}),
        "ClientError: InputConfiguration: Exactly one .pt or .pth file is allowed for PyTorch model.",
    ),
    "not-torchscript": (
        lambda cnn: tarball({"model.pth": _state_dict_pickle()}),
        "ClientError: InputConfiguration: Unable to load the PyTorch model 'model.pth': the file is a "
        "torch.save() pickle",
    ),
    "dot-dot-path": (
        lambda cnn: tarball({"model.pt": cnn, "../escape.txt": b"x"}),
        "ClientError: InputConfiguration: The model archive member '../escape.txt' is not allowed ('..' path "
        "component)",
    ),
}


@SQLITE_ONLY
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_bad_model_archive_fails_with_a_neo_reason(ok, put, create, run_job, cnn_tarball, case):
    build, reason = BAD_INPUTS[case]
    with tarfile.open(fileobj=io.BytesIO(cnn_tarball), mode="r:gz") as tar:
        cnn = tar.extractfile("model.pt").read()
    put("models/cnn/model.tar.gz", build(cnn))
    assert run_job(create(case)) == "FAILED"
    desc = ok("DescribeCompilationJob", {"CompilationJobName": case})
    assert desc["CompilationJobStatus"] == "FAILED"
    assert desc["FailureReason"].startswith(reason), desc["FailureReason"]
    assert desc["LogTail"].strip()
    assert "InferenceImage" not in desc


@SQLITE_ONLY
def test_shapes_that_do_not_fit_the_model_fail(ok, s3, put, create, run_job, cnn_tarball):
    put("models/cnn/model.tar.gz", cnn_tarball)
    assert run_job(create("shape", with_input(job_request("shape"), DataInputConfig="[[1, 5]]"))) == "FAILED"
    desc = ok("DescribeCompilationJob", {"CompilationJobName": "shape"})
    assert desc["FailureReason"].startswith(
        'ClientError: InputConfiguration: DataInputConfig {"input0":[1,5]} does not match the model: '
    )
    # The failure's report and log are kept beside where the artifact would have been; no artifact.
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="compiled/model-ml_inf1/report.json")["Body"].read())
    assert report["CompilationJobStatus"] == "FAILED" and report["FailureReason"] == desc["FailureReason"]
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=ARTIFACT_KEY).get("KeyCount") == 0


@SQLITE_ONLY
def test_a_missing_object_fails_without_starting_a_compile(ok, create, run_job, s3):
    request = with_input(job_request("missing"), S3Uri=f"s3://{BUCKET}/nowhere/model.tar.gz")
    assert run_job(create("missing", request)) == "FAILED"
    reason = ok("DescribeCompilationJob", {"CompilationJobName": "missing"})["FailureReason"]
    assert reason.startswith(
        f"ClientError: InputConfiguration: Unable to download the model from s3://{BUCKET}/nowhere/model.tar.gz "
        "(NoSuchKey"
    )


@SQLITE_ONLY
def test_a_model_with_nothing_neuron_can_run_fails_like_torch_neuron(ok, put, create, run_job):
    put("models/gather/model.tar.gz", tarball({"model.pt": script_bytes(gather_only())}))
    request = with_input(
        job_request("gather"), S3Uri=f"s3://{BUCKET}/models/gather/model.tar.gz", DataInputConfig="[[4, 8], [4, 8]]"
    )
    assert run_job(create("gather", request)) == "FAILED"
    desc = ok("DescribeCompilationJob", {"CompilationJobName": "gather"})
    # torch-neuron's own words first, then which rule refused the model and what to change.
    assert desc["FailureReason"].startswith(
        "ClientError: CompilationError: Unable to compile model for ml_inf1: No operations were successfully "
        "partitioned and compiled to neuron for this model - aborting trace! "
    )
    assert "not supported: aten::gather" in desc["FailureReason"]
    assert "TargetDevice ml_c5" in desc["FailureReason"]
    assert "aborting trace!" in desc["LogTail"]


@SQLITE_ONLY
def test_an_unwritable_output_location_fails_the_job(ok, put, create, run_job, cnn_tarball, warm_cache):
    put("models/cnn/model.tar.gz", cnn_tarball)
    request = with_output(job_request("no-out"), S3OutputLocation="s3://no-such-bucket/out")
    assert run_job(create("no-out", request), cache_dir=warm_cache) == "FAILED"
    reason = ok("DescribeCompilationJob", {"CompilationJobName": "no-out"})["FailureReason"]
    assert reason.startswith("ClientError: OutputConfiguration: Unable to upload the compiled model to ")
    assert "NoSuchBucket" in reason


# --- stop and time-out ---------------------------------------------------------------------------------


@SQLITE_ONLY
def test_stop_kills_the_compile_child_and_ends_stopped(ok, s3, put, create, run_job, session_factory, cnn_tarball):
    put("models/cnn/model.tar.gz", cnn_tarball)
    job_id = create("stoppable")
    outcome: list[str] = []
    # A long measurement budget keeps the child busy long enough to be stopped mid-compile.
    worker = threading.Thread(target=lambda: outcome.append(run_job(job_id, measure_budget_s=30.0)))
    worker.start()

    def child_pid() -> int | None:
        assert worker.is_alive(), "the job runner ended before its compile child started"
        return _job(session_factory, job_id).child_pid

    pid = wait_for(child_pid, 30, what="the compile child to start", interval=0.05)
    assert _alive(pid)
    ok("StopCompilationJob", {"CompilationJobName": "stoppable"})
    worker.join(timeout=30)
    assert outcome == ["STOPPED"]
    assert not _alive(pid)
    desc = ok("DescribeCompilationJob", {"CompilationJobName": "stoppable"})
    assert desc["CompilationJobStatus"] == "STOPPED"
    assert desc["FailureReason"] == ""
    assert "CompilationEndTime" in desc
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=ARTIFACT_KEY).get("KeyCount") == 0


@SQLITE_ONLY
def test_a_job_stopped_before_a_worker_took_it_ends_stopped_without_compiling(ok, create, run_job, session_factory):
    job_id = create("early-stop", with_input(job_request("early-stop"), S3Uri=f"s3://{BUCKET}/absent.tar.gz"))
    ok("StopCompilationJob", {"CompilationJobName": "early-stop"})
    assert run_job(job_id) == "STOPPED"
    assert _job(session_factory, job_id).attempts == 0


@SQLITE_ONLY
def test_max_runtime_is_enforced_with_a_time_out_reason(ok, put, create, run_job, cnn_tarball):
    put("models/cnn/model.tar.gz", cnn_tarball)
    request = job_request("slow", StoppingCondition={"MaxRuntimeInSeconds": 1})
    started = time.monotonic()
    assert run_job(create("slow", request), measure_budget_s=30.0) == "FAILED"
    assert time.monotonic() - started < 15
    desc = ok("DescribeCompilationJob", {"CompilationJobName": "slow"})
    assert desc["FailureReason"] == (
        "ClientError: CompilationError: Compilation exceeded MaxRuntimeInSeconds (1 s) and was stopped (TimeOut)."
    )
    assert "TimeOut" in desc["LogTail"]


# --- redelivery, dead workers, attempts ----------------------------------------------------------------


@SQLITE_ONLY
def test_a_redelivered_task_is_a_no_op_and_the_same_compile_hits_the_cache(
    ok, s3, put, create, run_job, session_factory, settings, cnn_tarball
):
    put("models/cnn/model.tar.gz", cnn_tarball)
    job_id = create("once")
    assert run_job(job_id) == "COMPLETED"
    before = ok("DescribeCompilationJob", {"CompilationJobName": "once"})
    head = s3.head_object(Bucket=BUCKET, Key=ARTIFACT_KEY)
    assert run_job(job_id) == "done"
    assert ok("DescribeCompilationJob", {"CompilationJobName": "once"}) == before
    again = s3.head_object(Bucket=BUCKET, Key=ARTIFACT_KEY)
    assert (again["ETag"], again["LastModified"]) == (head["ETag"], head["LastModified"])
    assert _job(session_factory, job_id).attempts == 1
    assert run_job(123456) == "done"  # a job deleted meanwhile

    # Same input, options, shapes, target and compiler: the cache under <data_dir>/cache/compile answers.
    assert any((settings.data_dir / "cache" / "compile").iterdir())
    second = with_output(job_request("second"), S3OutputLocation=f"s3://{BUCKET}/again/")
    assert run_job(create("second", second)) == "COMPLETED"
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="again/model-ml_inf1/report.json")["Body"].read())
    assert report["cache_hit"] is True
    assert report["compile_seconds"] < 1.0
    assert ok("DescribeCompilationJob", {"CompilationJobName": "second"})["ModelDigests"] == before["ModelDigests"]


@SQLITE_ONLY
def test_a_delivery_while_a_live_worker_here_owns_the_job_leaves_it_alone(create, run_job, session_factory):
    from neurondock_platform.db import utcnow

    job_id = create("owned")
    owner = f"host-test/{os.getpid()}/other-thread"
    _set_job(session_factory, job_id, status="INPROGRESS", attempts=1, owner=owner, heartbeat_at=utcnow())
    started = time.monotonic()
    assert run_job(job_id) == "busy"
    assert time.monotonic() - started < 2
    job = _job(session_factory, job_id)
    assert (job.status, job.attempts, job.owner) == ("INPROGRESS", 1, owner)


@SQLITE_ONLY
def test_a_job_whose_worker_died_restarts_cleanly_and_its_orphan_child_is_killed(
    ok, put, create, run_job, session_factory, cnn_tarball, tmp_path, warm_cache
):
    from neurondock_platform.db import utcnow
    from neurondock_workers.compiler import CompileProcess, CompileRequest

    put("models/cnn/model.tar.gz", cnn_tarball)
    job_id = create("crashed")
    # The dead worker's compile child is still running on this host.
    (tmp_path / "m.tar.gz").write_bytes(cnn_tarball)
    orphan = CompileProcess(
        CompileRequest(str(tmp_path / "m.tar.gz"), "[[1,3,32,32]]", str(tmp_path / "w"), measure_budget_s=60.0)
    ).start()
    try:
        _set_job(
            session_factory,
            job_id,
            status="INPROGRESS",
            attempts=1,
            owner=f"host-test/{_dead_pid()}/gone",
            heartbeat_at=utcnow(),
            child_pid=orphan.pid,
        )
        assert run_job(job_id, cache_dir=warm_cache) == "COMPLETED"
        assert not orphan.running()
    finally:
        orphan.stop(grace_s=0.1)
    job = _job(session_factory, job_id)
    assert job.attempts == 2
    assert ok("DescribeCompilationJob", {"CompilationJobName": "crashed"})["CompilationJobStatus"] == "COMPLETED"


@SQLITE_ONLY
def test_a_silent_owner_on_another_host_is_waited_out_then_replaced(
    put, create, run_job, session_factory, cnn_tarball, warm_cache
):
    from neurondock_platform.db import utcnow

    put("models/cnn/model.tar.gz", cnn_tarball)
    job_id = create("remote")
    _set_job(session_factory, job_id, status="INPROGRESS", attempts=1, owner="host-far/77/x", heartbeat_at=utcnow())
    started = time.monotonic()
    assert run_job(job_id, lease_timeout=1.0, cache_dir=warm_cache) == "COMPLETED"
    assert time.monotonic() - started >= 0.9
    assert _job(session_factory, job_id).attempts == 2


@SQLITE_ONLY
def test_after_three_lost_attempts_the_job_fails_instead_of_looping(ok, create, run_job, session_factory):
    job_id = create("cursed")
    _set_job(session_factory, job_id, status="INPROGRESS", attempts=3, owner=f"host-test/{_dead_pid()}/x")
    assert run_job(job_id) == "FAILED"
    desc = ok("DescribeCompilationJob", {"CompilationJobName": "cursed"})
    assert desc["FailureReason"].startswith("ClientError: CompilationError: The compilation was interrupted 3 times")
    assert _job(session_factory, job_id).attempts == 3


@SQLITE_ONLY
def test_a_stopping_job_whose_worker_died_is_finished_as_stopped(ok, create, run_job, session_factory):
    job_id = create("stop-dead")
    _set_job(session_factory, job_id, status="STOPPING", attempts=1, owner=f"host-test/{_dead_pid()}/x")
    assert run_job(job_id) == "STOPPED"
    assert ok("DescribeCompilationJob", {"CompilationJobName": "stop-dead"})["CompilationJobStatus"] == "STOPPED"
