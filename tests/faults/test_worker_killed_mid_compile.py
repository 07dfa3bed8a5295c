"""SIGKILL the Celery worker mid-compile: the supervisor restarts it and the job completes exactly once."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.platform import Platform
from tests.support.torch_models import pack_model, small_cnn

ROLE = "arn:aws:iam::210987654321:role/SageMakerRole"


def _pids(platform: Platform, needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"NEURONDOCK_DATA_DIR={platform.data_dir}".encode() in environ and needle in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    plat = Platform(tmp_path_factory.mktemp("nd-faults"))
    plat.start()
    yield plat
    plat.stop()


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
    deadline = time.monotonic() + 120
    while sm.describe_compilation_job(CompilationJobName=name)["CompilationJobStatus"] != "INPROGRESS":
        assert time.monotonic() < deadline, platform.logs()
        time.sleep(0.02)
    workers = _pids(platform, "neurondock_workers worker")
    assert workers, "no worker process found"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)

    deadline = time.monotonic() + 240
    while True:
        desc = sm.describe_compilation_job(CompilationJobName=name)
        if desc["CompilationJobStatus"] not in ("STARTING", "INPROGRESS", "STOPPING"):
            break
        assert time.monotonic() < deadline, platform.logs()
        time.sleep(0.1)
    assert desc["CompilationJobStatus"] == "COMPLETED", (desc["FailureReason"], platform.logs())
    s3.head_object(Bucket="faults", Key="out/model-ml_inf1.tar.gz")
    # The supervisor brought a new worker up, and the job was claimed twice but completed once.
    assert set(_pids(platform, "neurondock_workers worker")).isdisjoint(workers)
    engine = create_engine(f"sqlite:///{platform.data_dir / 'neurondock.db'}")
    with engine.connect() as conn:
        attempts = conn.execute(text("select attempts from compilation_jobs where name = :n"), {"n": name}).scalar()
    engine.dispose()
    assert attempts == 2
