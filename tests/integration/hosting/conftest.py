"""Fixtures for the host agent tests: SQLite, moto's S3 on loopback, model tarballs, seeded rows."""

from __future__ import annotations

import io
import tarfile
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from tests.support.services import moto_s3_server
from tests.support.waiting import wait_for

import neurondock_platform.models as m
from neurondock_platform.config import Settings
from neurondock_platform.db import Base, make_engine, make_sessionmaker, session_scope
from neurondock_platform.s3_client import OwnerClients
from neurondock_workers.hosting.agent import HostAgent
from neurondock_workers.hosting.s3 import ModelStores

BUCKET = "neurondock-models"
ACCOUNT_ID = "123456789012"
HOST_ID = "host-it"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto's S3 on an ephemeral loopback port, the agent's stand-in artifact store."""
    with moto_s3_server() as url:
        yield url


@pytest.fixture(scope="session")
def s3(moto_url: str) -> Any:
    client = boto3.session.Session().client("s3", endpoint_url=moto_url, region_name="us-east-1", **CREDENTIALS)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="session")
def tiny_model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A traced 4→8→3 MLP as TorchScript bytes."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    path = tmp_path_factory.mktemp("tiny") / "model.pth"
    with warnings.catch_warnings():
        # TorchScript is what SageMaker's PyTorch contract loads, deprecated in torch 2.x or not.
        warnings.filterwarnings("ignore", r"`torch\.jit\.", DeprecationWarning)
        torch.jit.trace(model, torch.zeros(1, 4)).save(str(path))
    return path.read_bytes()


@pytest.fixture(scope="session")
def reference_model(tiny_model_bytes: bytes) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.", DeprecationWarning)
        return torch.jit.load(io.BytesIO(tiny_model_bytes))


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def upload(s3: Any, request: pytest.FixtureRequest) -> Callable[[dict[str, bytes] | bytes], str]:
    """Put a model.tar.gz (built from files, or raw bytes) in S3 and return its s3:// URL."""
    counter = iter(range(1000))

    def put(content: dict[str, bytes] | bytes) -> str:
        key = f"{request.node.name}/{next(counter)}/model.tar.gz"
        data = content if isinstance(content, bytes) else tarball(content)
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        return f"s3://{BUCKET}/{key}"

    return put


@pytest.fixture
def code() -> Callable[[str], bytes]:
    """Dedent an inference.py source into bytes."""
    return lambda source: textwrap.dedent(source).encode()


@pytest.fixture
def settings(tmp_path: Path, moto_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        host_id=HOST_ID,
        host_chips=4,
        s3_endpoint_url=moto_url,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        agent_poll_interval=0.05,
    ).resolved()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine("sqlite:///" + str(tmp_path / "t.db"))
    Base.metadata.create_all(engine)
    with session_scope(make_sessionmaker(engine)) as session:
        session.add(m.Account(id=ACCOUNT_ID, name="test"))
        # moto stands in for an external store: the operator maps the test bucket to the account.
        session.add(m.StoreAccess(account_id=ACCOUNT_ID, buckets=[BUCKET]))
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def stores(settings: Settings, sessions: sessionmaker[Session]) -> Iterator[ModelStores]:
    """Model-data readers acting as a model's owner, as the agent makes them (the external store's mapping)."""
    made = ModelStores(OwnerClients(settings, sessions, session_name="hosting-tests").keys)
    yield made
    made.close()


@pytest.fixture
def make_agent(
    settings: Settings, sessions: sessionmaker[Session], stores: ModelStores
) -> Iterator[Callable[..., HostAgent]]:
    """Build host agents (registered, so replicas can name the host); all are shut down afterwards."""
    agents: list[HostAgent] = []

    def make(**kwargs: Any) -> HostAgent:
        kwargs.setdefault("stop_grace", 5.0)
        agent = HostAgent(settings, sessions, stores, **kwargs)
        agent.heartbeat()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.shutdown()


@pytest.fixture
def add_replica(sessions: sessionmaker[Session]) -> Callable[..., int]:
    """Insert an Endpoint, its variant and one Replica on this host; return the replica id."""
    counter = iter(range(1000))

    def add(model_data_url: str, environment: dict[str, str] | None = None, **variant_extra: Any) -> int:
        n = next(counter)
        with session_scope(sessions) as session:
            endpoint = m.Endpoint(
                account_id=ACCOUNT_ID,
                name=f"ep-{n}",
                arn=f"arn:aws:sagemaker:us-east-1:{ACCOUNT_ID}:endpoint/ep-{n}",
                endpoint_config_name=f"ep-{n}",
            )
            session.add(endpoint)
            session.flush()
            variant = m.EndpointVariant(
                endpoint_id=endpoint.id,
                name="AllTraffic",
                model_name=f"model-{n}",
                container={
                    "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310",
                    "ModelDataUrl": model_data_url,
                    "Environment": environment or {},
                },
                instance_type="ml.c5.large",
                extra=variant_extra,
            )
            session.add(variant)
            session.flush()
            replica = m.Replica(endpoint_id=endpoint.id, variant_id=variant.id, host_id=HOST_ID)
            session.add(replica)
            session.flush()
            return replica.id

    return add


@pytest.fixture
def load_replica(sessions: sessionmaker[Session]) -> Callable[[int], m.Replica | None]:
    def load(replica_id: int) -> m.Replica | None:
        with sessions() as session:
            return session.get(m.Replica, replica_id)

    return load


@pytest.fixture
def step_until(load_replica: Callable[[int], m.Replica | None]) -> Callable[..., m.Replica]:
    """Run ``agent.step()`` until the replica row satisfies ``predicate``, failing at the deadline."""

    def run(
        agent: HostAgent, replica_id: int, predicate: Callable[[m.Replica], bool], timeout: float = 60
    ) -> m.Replica:
        def stepped() -> m.Replica | None:
            agent.step()
            replica = load_replica(replica_id)
            return replica if replica is not None and predicate(replica) else None

        def state() -> tuple | None:
            replica = load_replica(replica_id)
            return None if replica is None else (replica.state, replica.failure_reason, replica.log_tail)

        return wait_for(stepped, timeout, what=f"replica {replica_id}", state=state)

    return run
