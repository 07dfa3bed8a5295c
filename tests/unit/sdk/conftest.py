"""Fixtures for the SDK unit tests: fake AWS credentials, moto, Stubber-backed sessions, tiny artifacts."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws
from moto.moto_api._internal.models import moto_api_backend

from neurondock import Session

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
IMAGE = f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
BUCKET = "models"
FAST_POLL = 0.001


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Give every test fake credentials and no inherited endpoint overrides or profiles."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path_factory.mktemp("aws") / "none"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def aws() -> Iterator[None]:
    """Run the test under moto's mock_aws (S3, STS, SageMaker, SageMaker Runtime)."""
    with mock_aws():
        yield


@pytest.fixture
def session(aws: None) -> Session:
    """A moto-backed Session that polls fast and prints nothing."""
    return Session(region_name=REGION, poll_interval=FAST_POLL, progress=False)


@dataclass
class Stubbed:
    """A Session whose sagemaker and runtime clients are botocore Stubbers (for what moto lacks)."""

    session: Session
    sagemaker: Stubber
    runtime: Stubber


@pytest.fixture
def stubbed() -> Iterator[Stubbed]:
    """A Session with Stubber-driven sagemaker and sagemaker-runtime clients."""
    sagemaker_client = boto3.client("sagemaker", region_name=REGION)
    runtime_client = boto3.client("sagemaker-runtime", region_name=REGION)
    session = Session(
        region_name=REGION,
        sagemaker_client=sagemaker_client,
        sagemaker_runtime_client=runtime_client,
        poll_interval=FAST_POLL,
        progress=False,
    )
    with Stubber(sagemaker_client) as sm, Stubber(runtime_client) as rt:
        yield Stubbed(session, sm, rt)
        sm.assert_no_pending_responses()
        rt.assert_no_pending_responses()


def streaming(data: bytes) -> StreamingBody:
    """Wrap bytes the way botocore returns a response body."""
    return StreamingBody(io.BytesIO(data), len(data))


def make_model_tar(path: Path, files: dict[str, bytes] | None = None) -> Path:
    """Write a small SageMaker-layout model.tar.gz."""
    files = files or {
        "model.pt": b"\x00fake-weights",
        "code/inference.py": b"def model_fn(model_dir):\n    return None\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def tar_members(data: bytes) -> dict[str, bytes]:
    """Return {name: content} for a model.tar.gz held in memory."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            if extracted is not None:
                out[member.name] = extracted.read()
    return out


@pytest.fixture
def model_tar(tmp_path: Path) -> Path:
    """A local model.tar.gz."""
    return make_model_tar(tmp_path / "model.tar.gz")


@pytest.fixture
def s3_model(session: Session, model_tar: Path) -> str:
    """The model.tar.gz uploaded to the moto bucket ``models``."""
    session.s3_client.create_bucket(Bucket=BUCKET)
    session.s3_client.upload_file(str(model_tar), BUCKET, "resnet/model.tar.gz")
    return f"s3://{BUCKET}/resnet/model.tar.gz"


SeedResult = Callable[..., None]


@pytest.fixture
def seed_result(aws: None) -> SeedResult:
    """Queue the next InvokeEndpoint answer in moto's result queue."""

    def seed(body: str | bytes, content_type: str, variant: str = "AllTraffic", custom_attributes: str = "") -> None:
        moto_api_backend.set_sagemaker_result(
            body=body,  # type: ignore[arg-type]  # moto returns bytes bodies unchanged
            content_type=content_type,
            prod_variant=variant,
            custom_attrs=custom_attributes,
            account_id=ACCOUNT,
            region=REGION,
        )

    return seed
