"""The compiled artifact's ``manifest.json``: one typed reading for everything that looks inside an artifact.

The compiler writes it (its whole report plus the artifact's file digests) through ``CompiledManifest``
and every reader — the host agent's load-time checks, the replica's handler and batcher, its model
metadata and the compile job that uploads it — reads it through ``CompiledManifest``, so a rule such
as "dim 0 may vary" is decided once. What the report's sections hold is described in ``docs/compiler.md``;
what the runtime does with them in ``docs/runtime.md``. Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
INFERENTIA_TARGET = "ml_inf1"
# The size whose projected device time a replica reports when its own instance size is not known.
DEFAULT_PROJECTED_INSTANCE = "ml.inf1.xlarge"


class ManifestError(ValueError):
    """A manifest that says it is neurondock's but lacks what the runtime needs."""


@dataclass(frozen=True)
class CompiledTensor:
    """One compiled input or output: its name, its static shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def describe(self) -> str:
        """Return e.g. ``input0 [1, 3, 224, 224] float32``."""
        return f"{self.name} {list(self.shape)} {self.dtype}"


@dataclass(frozen=True)
class CompiledManifest:
    """A compiled artifact's manifest: typed views of what the runtime needs, and the whole document."""

    target: str
    inputs: tuple[CompiledTensor, ...]
    outputs: tuple[CompiledTensor, ...]
    # Whether dim 0 may differ from the compiled batch (compiled with --dynamic-batch-size).
    dynamic_batch: bool
    compiled_batch_size: int
    neuroncores_per_replica: int
    device_memory_per_replica_bytes: int
    # What the runtime applies after torch.jit.load: "optimize_for_inference" or "none".
    load_transform: str
    document: Mapping[str, Any]

    @property
    def on_inferentia(self) -> bool:
        """Whether the artifact was compiled for the emulated Inferentia (else it is plain CPU TorchScript)."""
        return self.target == INFERENTIA_TARGET

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> CompiledManifest:
        """Read a compile report (the manifest's body); raise ManifestError naming what is missing."""
        if not is_neurondock_manifest(report):
            raise ManifestError('the manifest is not a neurondock compile report ("emulated": true, "compiler")')
        resources = _section(report, "resources")
        static = _section(resources, "static_shapes", "resources.")
        names = [i.get("name") for i in _list(_section(report, "example_inputs"), "inputs", "example_inputs.")]
        dynamic_dims = _list(resources, "dynamic_dims", "resources.")
        execution = report.get("execution")
        load_transform = execution.get("load_transform") if isinstance(execution, Mapping) else None
        return cls(
            target=_str(report, "target"),
            inputs=_tensors(_list(static, "inputs", "resources.static_shapes."), "input", names),
            outputs=_tensors(_list(static, "outputs", "resources.static_shapes."), "output", []),
            dynamic_batch=0 in dynamic_dims,
            compiled_batch_size=_positive(resources, "compiled_batch_size"),
            neuroncores_per_replica=_positive(resources, "neuroncores_per_replica"),
            device_memory_per_replica_bytes=int(resources.get("device_memory_per_replica_bytes") or 0),
            load_transform=str(load_transform or "none"),
            document=report,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CompiledManifest:
        """Read a manifest from its JSON bytes."""
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise ManifestError(f"manifest.json is not valid JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ManifestError("manifest.json does not hold a JSON object")
        return cls.from_report(document)

    def to_bytes(self) -> bytes:
        """Return the JSON the artifact stores."""
        return json.dumps(self.document, indent=2, default=str).encode()

    def projected_device_seconds(self, instance_type: str = DEFAULT_PROJECTED_INSTANCE) -> float | None:
        """Return the projected NeuronCore time of one compiled-batch execution (None: nothing projected).

        The report projects latency per ml.inf1 size, the CPU-fallback segments measured on the host
        included; the device's share is that latency minus those measured segments.
        """
        projection = self.document.get("projection") or {}
        entries = [e for e in projection.get("inf1") or [] if isinstance(e, Mapping) and e.get("fits")]
        entry = next((e for e in entries if e.get("instance_type") == instance_type), entries[0] if entries else None)
        if entry is None or not isinstance(entry.get("latency_ms"), int | float):
            return None
        cpu_ms = sum(
            float(t["p50_ms"])
            for t in projection.get("cpu_segments_measured") or []
            if isinstance(t, Mapping) and isinstance(t.get("p50_ms"), int | float)
        )
        return max(0.0, (float(entry["latency_ms"]) - cpu_ms) / 1e3)


def is_neurondock_manifest(document: Any) -> bool:
    """Whether a parsed manifest.json is a neurondock compile report (a user's own manifest.json is not)."""
    return isinstance(document, Mapping) and document.get("emulated") is True and "compiler" in document


def load(model_dir: Path | str) -> CompiledManifest | None:
    """Return the manifest of an unpacked compiled artifact, or None when the directory holds none of ours.

    A model directory without ``manifest.json``, or with a manifest.json of the user's own, is plain
    TorchScript; one whose manifest says it is neurondock's but cannot be read raises ManifestError.
    """
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not is_neurondock_manifest(document):
        return None
    return CompiledManifest.from_report(document)


def _section(data: Mapping[str, Any], key: str, prefix: str = "") -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise ManifestError(f"manifest.json has no {prefix}{key} object")
    return value


def _list(data: Mapping[str, Any], key: str, prefix: str = "") -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise ManifestError(f"manifest.json has no {prefix}{key} list")
    return value


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"manifest.json has no {key}")
    return value


def _positive(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ManifestError(f"manifest.json's resources.{key} is not a positive integer: {value!r}")
    return value


def _tensors(specs: Sequence[Any], prefix: str, names: Sequence[Any]) -> tuple[CompiledTensor, ...]:
    out = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or not isinstance(spec.get("shape"), list) or not spec.get("dtype"):
            raise ManifestError(f"manifest.json's static shape {i} of the {prefix}s has no shape and dtype")
        name = names[i] if i < len(names) and isinstance(names[i], str) and names[i] else f"{prefix}{i}"
        out.append(CompiledTensor(name, tuple(int(d) for d in spec["shape"]), str(spec["dtype"])))
    return tuple(out)
