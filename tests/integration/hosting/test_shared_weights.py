"""Replicas of one artifact on a host map one copy of its weights, and answer exactly as unshared ones do."""

from __future__ import annotations

import shutil
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.support.replica_channel import predict_npy

from neurondock_platform.config import Settings
from neurondock_workers.hosting.environment import replica_environment
from neurondock_workers.hosting.process import ReplicaProcess
from neurondock_workers.hosting.weights_cache import weights_key
from neurondock_workers.sandbox import WEIGHTS_DIR, for_settings

LAYERS = 4  # 1024x1024 float32 Linear layers: 16 MiB of weights
WEIGHT_BYTES = LAYERS * (1024 * 1024 + 1024) * 4
X = np.random.default_rng(0).standard_normal((3, 1024)).astype(np.float32)

EAGER = """
import os

import torch


def model_fn(model_dir):
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range({layers})])
    model.load_state_dict(torch.load(os.path.join(model_dir, "weights.pth"), weights_only=True))
    return model.eval()
"""


def _layers() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(LAYERS)]).eval()


def _write_model(model_dir: Path, kind: str) -> None:
    model_dir.mkdir(parents=True)
    if kind == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"`torch\.jit\.", DeprecationWarning)
            torch.jit.trace(_layers(), torch.zeros(1, 1024)).save(str(model_dir / "model.pt"))
    else:
        torch.save(_layers().state_dict(), model_dir / "weights.pth")
        (model_dir / "code").mkdir()
        (model_dir / "code" / "inference.py").write_text(textwrap.dedent(EAGER.format(layers=LAYERS)))


def _mapped_from(pid: int, directory: Path) -> dict[str, int]:
    """Sum the smaps fields (bytes) of a process's mappings of files under ``directory``."""
    totals: dict[str, int] = {}
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if parts and "-" in parts[0] and not parts[0].endswith(":"):
                # A sandboxed replica's mapping shows by its path inside the sandbox.
                inside = len(parts) >= 6 and parts[5].startswith((str(directory), WEIGHTS_DIR))
            elif inside and len(parts) == 3 and parts[2] == "kB":
                totals[parts[0].rstrip(":")] = totals.get(parts[0].rstrip(":"), 0) + int(parts[1]) * 1024
    return totals


@pytest.fixture
def replicas(tmp_path: Path, request: pytest.FixtureRequest):
    """Start replica processes the way the host agent does; all are stopped after the test."""
    started: list[ReplicaProcess] = []
    sandbox = for_settings(Settings(data_dir=tmp_path / "data").resolved()) if request.param else None
    if sandbox is not None and not sandbox.enabled:
        pytest.skip(f"no sandbox here: {sandbox.describe()}")

    def start(template: Path, ordinal: int, settings: Settings) -> ReplicaProcess:
        model_dir = tmp_path / f"replica-{ordinal}" / "model"
        shutil.copytree(template, model_dir)
        weights_dir = settings.data_dir / "cache" / "weights"
        key = weights_key("artifact-digest", {})
        seen = Path(WEIGHTS_DIR) if sandbox is not None else weights_dir
        env = replica_environment(settings, {}, ReplicaProcess.view_of(model_dir, sandbox), ordinal, None, key, seen)
        proc = ReplicaProcess(
            ordinal,
            model_dir,
            model_dir.parent / "replica.log",
            env,
            sandbox=sandbox,
            weights=(weights_dir, key),
            slots_dir=tmp_path / "slots",
        )
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate(10)


# Where a replica sees the weights (sandboxed or not) and how its model holds them (TorchScript or
# eager) are separate code paths that do not meet, so the default suite keeps the two combinations
# that run each path once; the other two run in the slow run (`-m slow`).
@pytest.mark.parametrize(
    ("replicas", "kind"),
    [
        pytest.param(True, "torchscript", id="sandboxed-torchscript"),
        pytest.param(False, "eager", id="unsandboxed-eager"),
        pytest.param(True, "eager", id="sandboxed-eager", marks=pytest.mark.slow),
        pytest.param(False, "torchscript", id="unsandboxed-torchscript", marks=pytest.mark.slow),
    ],
    indirect=["replicas"],
)
def test_two_replicas_share_one_mapping_of_the_weights_and_answer_identically(tmp_path, replicas, kind):
    template = tmp_path / "artifact"
    _write_model(template, kind)
    shared = Settings(data_dir=tmp_path / "data").resolved()
    private = Settings(data_dir=tmp_path / "data", share_weights=False).resolved()
    weights_dir = shared.data_dir / "cache" / "weights"

    procs = [replicas(template, 0, shared), replicas(template, 1, shared), replicas(template, 2, private)]
    outputs = []
    for proc in procs:
        address = proc.wait_ready(120)
        assert address is not None
        outputs.append(predict_npy(address, proc.channel_key, X))

    # Bit for bit: sharing must never change an answer.
    assert all(np.array_equal(out, outputs[2]) for out in outputs[:2])
    for proc in procs[:2]:
        assert "neurondock: weights shared: " in proc.log_tail(50)
        mapped = _mapped_from(proc.pid, weights_dir)
        # Both replicas touch every weight page; a page two processes map counts as Shared_Clean.
        ratio = mapped.get("Shared_Clean", 0) / WEIGHT_BYTES
        assert ratio > 0.9, f"{kind}: only {ratio:.0%} of the weights are shared clean pages: {mapped}"
        assert mapped.get("Pss", 0) < 0.6 * WEIGHT_BYTES, "each replica should carry about half of them"
    # The same measure on the replica with sharing off finds nothing: the assertion above discriminates.
    assert _mapped_from(procs[2].pid, weights_dir).get("Shared_Clean", 0) / WEIGHT_BYTES < 0.1
    assert "weights not shared: NEURONDOCK_SHARE_WEIGHTS is off" in procs[2].log_tail(50)
    assert len(list(weights_dir.glob("*.pt"))) == 1, "one file per artifact, written once"
