"""One copy of a model's weights per host: replicas of one artifact map them from a shared file.

Every replica loads its model privately (``torch.jit.load`` or the user's ``model_fn``), so four
replicas of a 1 GB model would hold 4 GB of identical weights. After loading, a replica looks up the
artifact's weights file in the host's cache (``<data dir>/cache/weights``); the first replica writes
it (under a lock, to a temporary file renamed into place), and every replica then points its module's
parameters and buffers at tensors mapped from that file with ``torch.load(mmap=True)``. The mapping
is private (copy-on-write): untouched pages are the page cache's, shared by every replica mapping the
file, and a model that writes to its weights only un-shares its own pages, never another replica's.

Only done when it cannot change an answer: every tensor is compared bit for bit with the file before
it is re-pointed (a ``model_fn`` that is not deterministic keeps its own weights), dtype, shape,
strides and offsets are kept, and models in training mode, tensors off the CPU, quantized, sparse or
subclassed tensors stay private. A frozen or ``optimize_for_inference`` TorchScript graph holds its
weights as graph constants, which cannot be re-pointed; the replica log says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from neurondock_workers.hosting.weights_cache import CACHE_ENV, KEY_ENV, SHARE_ENV, WAIT_ENV

# Below this the page-granular mapping saves next to nothing and costs a file per artifact.
MIN_BYTES = 1024 * 1024
MIB = 1024 * 1024
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def share_from_env(model: Any, env: Mapping[str, str]) -> str | None:
    """Share ``model``'s weights when the agent asked for it in the environment; return a log note."""
    if (env.get(SHARE_ENV) or "1").strip().lower() in {"0", "false", "no", "off"}:
        return "weights not shared: NEURONDOCK_SHARE_WEIGHTS is off"
    cache, key = env.get(CACHE_ENV), env.get(KEY_ENV)
    if not cache or not key or model is None:
        # Not started by a host agent (no artifact identity to share under), or nothing loaded to share.
        return None
    try:
        wait = max(0.0, float(env.get(WAIT_ENV) or 0))
    except ValueError:
        wait = 0.0
    return share_weights(model, Path(cache), key, wait=wait)


def _ineligible(tensor: torch.Tensor) -> str | None:
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        return "a tensor subclass"
    if tensor.device.type != "cpu":
        return f"on {tensor.device}"
    if tensor.layout != torch.strided or tensor.is_quantized:
        return "not a plain strided tensor"
    if tensor.is_complex() or tensor.element_size() not in _BITS:
        return f"of dtype {tensor.dtype}"
    if tensor.grad_fn is not None:
        return "computed by autograd"
    return None


def collect(model: Any) -> tuple[list[tuple[str, torch.Tensor]], list[str], str | None]:
    """Return (eligible named tensors, names kept private with why, reason nothing can be shared)."""
    if not isinstance(model, torch.nn.Module):
        return [], [], f"the model is a {type(model).__name__}, not a torch.nn.Module"
    if any(getattr(m, "training", False) for m in model.modules()):
        # Training-mode layers (BatchNorm's running stats) write their buffers on every call.
        return [], [], "the model is in training mode; call model.eval() in model_fn"
    eligible: list[tuple[str, torch.Tensor]] = []
    private: list[str] = []
    seen: set[int] = set()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if id(tensor) in seen:
            continue  # a tied weight: one tensor, several names
        seen.add(id(tensor))
        why = _ineligible(tensor)
        if why is None:
            eligible.append((name, tensor))
        else:
            private.append(f"{name} ({why})")
    if not eligible and not private:
        constants = graph_constants(model)
        if constants:
            return (
                [],
                [],
                (
                    f"a frozen/optimized TorchScript graph holds its weights as {constants} graph constants, "
                    "which cannot be re-pointed at a shared mapping"
                ),
            )
        return [], [], "the model has no parameters or buffers"
    return eligible, private, None


def graph_constants(model: torch.nn.Module) -> int:
    """Count tensor and packed-weight constants in the TorchScript graphs inside ``model``."""
    count = 0
    for module in model.modules():
        if not isinstance(module, torch.jit.ScriptModule):
            continue
        graph = getattr(module.forward, "graph", None)
        if graph is None:
            continue
        for node in graph.findAllNodes("prim::Constant"):
            kind = node.output().type().kind()
            if kind in ("TensorType", "ClassType"):
                count += 1
    return count


def _signature(key: str, tensors: list[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256(key.encode())
    for name, t in tensors:
        line = f"{name}|{t.dtype}|{tuple(t.shape)}|{t.stride()}|{t.storage_offset()}|{t.untyped_storage().nbytes()}"
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()[:16]


def _write(path: Path, tensors: list[tuple[str, torch.Tensor]]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # detach() keeps storage sharing (tied or sliced weights stay views of one storage).
            torch.save({name: t.detach() for name, t in tensors}, f)
            f.flush()
            # Written pages stay dirty for ~30 s otherwise, and smaps counts them dirty, not shared-clean.
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _await_file(path: Path, seconds: float) -> None:
    # A sandboxed replica's weights directory is its own: a sibling's file arrives through the host
    # agent (hosting/slots.py), not through a lock both can see.
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _load(
    path: Path, tensors: list[tuple[str, torch.Tensor]], wait: float = 0.0
) -> tuple[dict[str, torch.Tensor], bool]:
    """Map the artifact's weights file, writing it first if no replica has; return (tensors, written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if wait > 0:
        _await_file(path, wait)
    with open(path.with_suffix(".lock"), "a+b") as lock:  # the lock file is ours, or a sibling's
        # Replicas starting together wait for the first writer instead of each writing a copy.
        fcntl.flock(lock, fcntl.LOCK_EX)
        written = not path.exists()
        if written:
            _write(path, tensors)
        try:
            mapped = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
        except Exception:
            # A torn or foreign file: drop it so the next replica writes a good one.
            path.unlink(missing_ok=True)
            raise
    if not isinstance(mapped, dict):
        raise ValueError(f"{path} does not hold a dict of tensors")
    return mapped, written


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if (a.dtype, a.shape, a.stride(), a.storage_offset()) != (b.dtype, b.shape, b.stride(), b.storage_offset()):
        return False
    bits = _BITS[a.element_size()]
    # Bit patterns, not values: NaN != NaN and -0.0 == 0.0 would mislead torch.equal.
    return torch.equal(a.view(bits), b.view(bits))


def _trim() -> None:
    # The private copies just freed are heap memory glibc may keep; hand it back to the system.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def share_weights(model: Any, cache_dir: Path, key: str, *, wait: float = 0.0) -> str:
    """Point ``model``'s weights at the host's shared mapping of them; return what happened, for the log."""
    tensors, private, reason = collect(model)
    if reason is not None:
        return f"weights not shared: {reason}"
    total = sum(t.untyped_storage().nbytes() for _, t in tensors)
    if total < MIN_BYTES:
        return f"weights not shared: {total / 1024:.0f} KiB is too small to be worth a shared mapping"
    path = cache_dir / f"{key}-{_signature(key, tensors)}.pt"
    mapped, written = _load(path, tensors, wait)
    shared = 0
    storages: dict[int, int] = {}
    differ: list[str] = []
    with torch.no_grad():
        for name, tensor in tensors:
            source = mapped.get(name)
            if not isinstance(source, torch.Tensor) or not _same_bits(tensor, source):
                differ.append(name)
                continue
            try:
                # set_data swaps the storage under the same tensor object, so the module (eager or
                # TorchScript, whose attribute slots hold this very tensor) sees the mapping from now on.
                tensor.data = source
            except RuntimeError as exc:
                private.append(f"{name} ({exc})")
                continue
            shared += 1
            storage = source.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    del mapped
    _trim()
    note = (
        f"weights shared: {shared} tensors ({sum(storages.values()) / MIB:.1f} MiB) mapped copy-on-write from {path} "
        f"({'written by this replica' if written else 'written by an earlier replica'})"
    )
    if differ:
        note += (
            f"; {len(differ)} tensors differ from that file and stay private (is model_fn deterministic?): "
            + ", ".join(differ[:5])
        )
    if private:
        note += f"; {len(private)} stay private: " + ", ".join(private[:5])
    return note
