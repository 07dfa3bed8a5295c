"""Fixtures for the hosting unit tests: a tiny TorchScript model, model directories, replica processes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.support.waiting import wait_for

from neurondock_platform.dataplane import protocol


def _save_tiny_model(path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    with warnings.catch_warnings():
        # TorchScript is what SageMaker's PyTorch contract loads, deprecated in torch 2.x or not.
        warnings.filterwarnings("ignore", r"`torch\.jit\.", DeprecationWarning)
        torch.jit.trace(model, torch.zeros(1, 4)).save(str(path))


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript file without torch's deprecation warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.", DeprecationWarning)
        return torch.jit.load(str(path))


@pytest.fixture(scope="session")
def reference_model() -> Callable[[Path], torch.jit.ScriptModule]:
    """Load a TorchScript file in-process, to compare a served answer with."""
    return load_torchscript


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A traced 4→8→3 MLP saved as TorchScript."""
    path = tmp_path_factory.mktemp("tiny") / "model.pth"
    _save_tiny_model(path)
    return path


@pytest.fixture
def model_dir(tmp_path: Path, tiny_model_file: Path) -> Path:
    """A model directory holding only the TorchScript file (the default handler's layout)."""
    root = tmp_path / "model"
    root.mkdir()
    (root / "model.pth").write_bytes(tiny_model_file.read_bytes())
    return root


@pytest.fixture
def write_code(model_dir: Path) -> Callable[..., Path]:
    """Write ``code/<name>`` into the model directory from dedented source."""

    def write(source: str, name: str = "inference.py") -> Path:
        code = model_dir / "code"
        code.mkdir(exist_ok=True)
        path = code / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


@pytest.fixture
def make_tarball(tmp_path: Path) -> Callable[..., Path]:
    """Build a model.tar.gz from name → bytes, or from ready TarInfo members."""

    def make(
        files: dict[str, bytes] | None = None,
        members: list[tarfile.TarInfo] | None = None,
        name: str = "model.tar.gz",
    ) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            for member_name, data in (files or {}).items():
                info = tarfile.TarInfo(member_name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            for info in members or []:
                tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
        return path

    return make


# Every replica these tests spawn holds this channel key (a real agent makes one per process).
TEST_KEY = "5e" * 32


class ReplicaClient:
    """A blocking frame-protocol client on one authenticated TCP connection."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.sock = protocol.connect(address, TEST_KEY, timeout)

    def send(self, meta: dict[str, Any], body: bytes = b"") -> None:
        protocol.send_frame(self.sock, meta, body)

    def recv(self) -> tuple[dict[str, Any], bytes]:
        return protocol.recv_frame(self.sock)

    def call(self, meta: dict[str, Any], body: bytes = b"") -> tuple[dict[str, Any], bytes]:
        self.send(meta, body)
        return self.recv()

    def invoke(
        self, body: bytes, content_type: str, accept: str | None = None, **extra: Any
    ) -> tuple[dict[str, Any], bytes]:
        return self.call({"op": "invoke", "content_type": content_type, "accept": accept, **extra}, body)

    def close(self) -> None:
        self.sock.close()


@dataclass
class SpawnedReplica:
    process: subprocess.Popen[bytes]
    log: Path
    address: str | None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _listening_address(log: Path) -> str | None:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("NEURONDOCK_REPLICA_LISTENING "):
            return line.split()[1]
    return None


@pytest.fixture(scope="module")
def spawn_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SpawnedReplica]]:
    """Start ``python -m neurondock_workers.hosting.replica``; wait until it listens or exits.

    Module-scoped so a module can share one process (each start costs a torch import).
    """
    started: list[subprocess.Popen[bytes]] = []

    def spawn(model_dir: Path, *extra_args: str, expect_listening: bool = True) -> SpawnedReplica:
        log = tmp_path_factory.mktemp("replica") / "replica.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAGEMAKER_")}
        env["PYTHONUNBUFFERED"] = "1"
        key_read, key_write = os.pipe()
        os.write(key_write, TEST_KEY.encode())
        os.close(key_write)
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "neurondock_workers.hosting.replica",
                    "--model-dir",
                    str(model_dir),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--key-fd",
                    str(key_read),
                    *extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(key_read,),
            )
        os.close(key_read)
        started.append(process)
        if not expect_listening:
            wait_for(lambda: process.poll() is not None, 60, what="the replica to exit")
            return SpawnedReplica(process, log, None)

        def listening() -> str | None:
            if process.poll() is not None:
                raise AssertionError(f"replica exited with {process.returncode}:\n{log.read_text()}")
            return _listening_address(log)

        return SpawnedReplica(process, log, wait_for(listening, 60, what="the LISTENING line"))

    yield spawn
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.fixture
def connect() -> Iterator[Callable[[str], ReplicaClient]]:
    """Open frame-protocol connections to a replica; all are closed after the test."""
    clients: list[ReplicaClient] = []

    def open_client(address: str) -> ReplicaClient:
        client = ReplicaClient(address)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
