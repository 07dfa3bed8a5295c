"""SIGKILL the host process (its Celery worker) mid-compile: the supervisor restarts it and the job completes once."""

from __future__ import annotations

import json
import os
import signal

import pytest
from sqlalchemy import create_engine, text

from tests.support.platform import running_platform
from tests.support.processes import platform_pids
from tests.support.torch_models import pack_model, small_cnn
from tests.support.waiting import wait_for

ROLE = "arn:aws:iam::210987654321:role/SageMakerRole"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    yield from running_platform(tmp_path_factory.mktemp("nd-faults"))


def test_compile_survives_a_killed_worker(platform, tmp_path):
    sm, s3 = platform.client("sagemaker"), platform.client("s3")
    s3.create_bucket(Bucket="faults")
    s3.upload_file(str(pack_model(tmp_path / "m.tar.gz", small_cnn(seed=9))), "faults", "in/model.tar.gz")
    name = "killed-mid-compile"
    sm.create_compilation_job(
        CompilationJobName=name,
        RoleArn=ROLE,
        InputConfig={
            "S3Uri": "s3://faults/in/model.tar.gz",
            "DataInputConfig": json.dumps({"input0": [1, 3, 32, 32]}),
            "Framework": "PYTORCH",
        },
        OutputConfig={"S3OutputLocation": "s3://faults/out", "TargetDevice": "ml_inf1"},
        StoppingCondition={"MaxRuntimeInSeconds": 300},
    )
    wait_for(
        lambda: sm.describe_compilation_job(CompilationJobName=name)["CompilationJobStatus"] == "INPROGRESS",
        120,
        what="the job to start compiling",
        state=platform.logs,
    )
    workers = platform_pids(platform.data_dir, "neurondock_workers host")
    assert workers, "no worker process found"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)

    def finished() -> dict | None:
        desc = sm.describe_compilation_job(CompilationJobName=name)
        return None if desc["CompilationJobStatus"] in ("STARTING", "INPROGRESS", "STOPPING") else desc

    desc = wait_for(finished, 240, what="the job to finish", interval=0.1, state=platform.logs)
    assert desc["CompilationJobStatus"] == "COMPLETED", (desc["FailureReason"], platform.logs())
    s3.head_object(Bucket="faults", Key="out/model-ml_inf1.tar.gz")
    # The supervisor brought a new host process (a new worker) up, and the job was claimed twice but
    # completed once.
    assert set(platform_pids(platform.data_dir, "neurondock_workers host")).isdisjoint(workers)
    engine = create_engine(f"sqlite:///{platform.data_dir / 'neurondock.db'}")
    with engine.connect() as conn:
        attempts = conn.execute(text("select attempts from compilation_jobs where name = :n"), {"n": name}).scalar()
    engine.dispose()
    assert attempts == 2
