"""The compiled artifact: a reproducible .tar.gz with model.pt, manifest.json, compile.log and code/."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from neurondock_platform.compiled_manifest import MANIFEST_FILE, CompiledManifest, ManifestError

from ._execution import OPTIMIZED, OPTIMIZED_FP32
from .errors import ModelLoadError

MODEL_FILE = "model.pt"
LOG_FILE = "compile.log"


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def write_artifact(staging: Path, destination: Path, report: Mapping[str, Any]) -> tuple[str, int]:
    """Pack `staging` (model.pt, compile.log, code/, neff/ ...) plus the manifest; return (sha256, size).

    The manifest is the report with the digest of every file, written through CompiledManifest so an
    artifact whose manifest the runtime could not read is never produced. Members are sorted and carry
    no owner, mode or mtime from this host.
    """
    files = {str(p.relative_to(staging)): p for p in sorted(staging.rglob("*")) if p.is_file()}
    digests = {name: _sha256_file(p) for name, p in files.items()}
    manifest_bytes = CompiledManifest.from_report({**report, "files": digests}).to_bytes()
    members = sorted([*files, MANIFEST_FILE])
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(destination.name + ".tmp")
    # Weights barely compress; level 1 keeps packing fast without growing the archive much.
    with (
        tmp.open("wb") as fh,
        gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.uname, info.gname = 0o644, 0, "", ""
            if name == MANIFEST_FILE:
                info.size = len(manifest_bytes)
                tar.addfile(info, io.BytesIO(manifest_bytes))
            else:
                info.size = files[name].stat().st_size
                with files[name].open("rb") as src:
                    tar.addfile(info, src)
    tmp.replace(destination)
    return _sha256_file(destination), destination.stat().st_size


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(artifact: Path) -> CompiledManifest:
    """Return the manifest of a packed compiled artifact."""
    with tarfile.open(artifact, "r:gz") as tar:
        member = tar.extractfile(MANIFEST_FILE)
        if member is None:
            raise ModelLoadError(file=artifact.name, reason="the archive has no manifest.json")
        data = member.read()
    try:
        return CompiledManifest.from_bytes(data)
    except ManifestError as exc:
        raise ModelLoadError(file=artifact.name, reason=str(exc)) from None


def load_compiled(model_dir: Path, manifest: CompiledManifest | None = None) -> torch.jit.ScriptModule:
    """Load an unpacked compiled artifact the way the runtime should: model.pt plus the chosen transform."""
    if manifest is None:
        manifest = CompiledManifest.from_bytes((model_dir / MANIFEST_FILE).read_bytes())
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream but is the artifact format here; callers may run with -W error.
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(model_dir / MODEL_FILE), map_location="cpu").eval()
        if manifest.load_transform == "optimize_for_inference":
            # oneDNN-prepacked modules cannot be serialised, so the transform is re-applied at load time.
            module = torch.jit.optimize_for_inference(module)
    return module


def load_transform_for(selected: str) -> str:
    """Return the transform the runtime applies after torch.jit.load for an execution choice."""
    return "optimize_for_inference" if selected in (OPTIMIZED, OPTIMIZED_FP32) else "none"
