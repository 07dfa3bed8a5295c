"""Compile inputs: the model tarball, loading TorchScript, input dtypes and example tensors."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from . import _graph
from ._grammar import InputShape
from .errors import CompileResourceError, InputConfigurationError, ModelLoadError, ShapeMismatchError

MODEL_SUFFIXES = (".pt", ".pth")
EXACTLY_ONE = "Exactly one .pt or .pth file is allowed for PyTorch model."
# A tarball bigger than this once unpacked is refused before extraction (decompression bombs).
MAX_UNPACKED_BYTES = 16 * 1024**3

# Ops whose index argument makes a graph input integral: kind -> (index argument, weight argument).
_INDEX_USES = {
    "aten::embedding": (1, 0),
    "aten::embedding_bag": (1, 0),
    "aten::index_select": (2, None),
    "aten::gather": (2, None),
}
_PASS_THROUGH = {
    "aten::view",
    "aten::reshape",
    "aten::flatten",
    "aten::select",
    "aten::slice",
    "aten::unsqueeze",
    "aten::squeeze",
    "aten::contiguous",
    "aten::transpose",
    "aten::permute",
    "aten::t",
    "aten::narrow",
    "aten::expand",
    "aten::repeat",
    "aten::clone",
    "aten::unbind",
    "prim::ListUnpack",
    "aten::detach",
}


@dataclass
class StagedInput:
    """The model file found in the user's input, plus its code/ directory and hashes."""

    model_file: Path
    code_dir: Path | None
    sha256: str
    source_name: str
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stage_input(source: Path, staging: Path) -> StagedInput:
    """Find the single model file in a tarball, directory or bare .pt/.pth; unpack tarballs safely."""
    source = Path(source)
    if source.is_symlink():
        raise InputConfigurationError(reason=f"{source.name!r} is a symbolic link; links are not allowed.")
    if source.is_dir():
        root = source
        _check_directory(root)
    elif source.is_file() and source.suffix in MODEL_SUFFIXES and not tarfile.is_tarfile(source):
        return StagedInput(source, None, sha256_file(source), source.name, {source.name: sha256_file(source)})
    elif source.is_file() and tarfile.is_tarfile(source):
        root = staging / "input"
        _extract_tarball(source, root)
    elif source.is_file():
        raise InputConfigurationError(reason=f"{source.name!r} is neither a .tar.gz model archive nor a .pt/.pth file.")
    else:
        raise InputConfigurationError(reason=f"The model input {source.name!r} does not exist.")
    models = sorted(
        p for p in root.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES and not p.name.startswith(".")
    )
    if len(models) != 1:
        raise InputConfigurationError(reason=EXACTLY_ONE)
    code_dir = root / "code" if (root / "code").is_dir() else None
    files = {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    digest = sha256_file(source) if source.is_file() else _tree_digest(files)
    return StagedInput(models[0], code_dir, digest, source.name, files)


def _tree_digest(files: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def _check_directory(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_symlink():
            raise InputConfigurationError(
                reason=f"The model directory contains a link {str(path.relative_to(root))!r}; links are not allowed."
            )


def _unsafe(reason: str, name: str) -> InputConfigurationError:
    return InputConfigurationError(
        reason=f"The model archive member {name!r} is not allowed ({reason}); archives may only hold regular "
        "files and directories below the archive root."
    )


def _extract_tarball(source: Path, dest: Path) -> None:
    try:
        with tarfile.open(source, "r:*") as tar:
            members = tar.getmembers()
            total = 0
            for member in members:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith("/") or PurePosixPath(member.name).is_absolute():
                    raise _unsafe("absolute path", member.name)
                if ".." in parts:
                    raise _unsafe("'..' path component", member.name)
                if member.issym() or member.islnk():
                    raise _unsafe("link", member.name)
                if not (member.isfile() or member.isdir()):
                    raise _unsafe("device, FIFO or other special file", member.name)
                total += member.size
            if total > MAX_UNPACKED_BYTES:
                raise InputConfigurationError(reason=f"The model archive unpacks to {total} bytes, more than allowed.")
            dest.mkdir(parents=True, exist_ok=True)
            # The checks above already refuse what the "data" filter would; keep it as a second guard.
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputConfigurationError(reason=f"The model archive could not be read ({exc}).") from None


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript archive; anything else is a ModelLoadError (nothing is ever unpickled)."""
    name = path.name
    if not zipfile.is_zipfile(path):
        with path.open("rb") as fh:
            head = fh.read(2)
        what = "a legacy Python pickle" if head[:1] == b"\x80" else "not a TorchScript archive"
        raise ModelLoadError(file=name, reason=f"the file is {what}. {_EXPORT_HINT}")
    with zipfile.ZipFile(path) as zf:
        entries = zf.namelist()
    if not any("/code/" in e for e in entries) or not any(e.endswith("constants.pkl") for e in entries):
        raise ModelLoadError(
            file=name,
            reason="the file is a torch.save() pickle (a state_dict or nn.Module), not TorchScript. " + _EXPORT_HINT,
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError and friends with multi-line C++ context
        raise ModelLoadError(file=name, reason=_first_line(exc)) from None
    return module.eval()


_EXPORT_HINT = "Export it with torch.jit.trace(model, example_inputs).save(path) (or torch.jit.script)."


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("The following operation failed in the TorchScript interpreter"):
        # The interpreter puts its traceback first and the actual aten error on the last line.
        return lines[-1].removeprefix("RuntimeError: ")
    return lines[0]


def forward_arity(module: torch.jit.ScriptModule) -> tuple[int, int, list[str]]:
    """Return (required, total, names) of forward's arguments, without self."""
    forward: Any = module.forward
    args = list(forward.schema.arguments)[1:]
    required = sum(1 for a in args if not a.has_default_value())
    return required, len(args), [a.name for a in args]


def infer_input_dtypes(graph: _graph.Graph, specs: Sequence[InputShape]) -> list[tuple[str, int]]:
    """Return (dtype, exclusive upper bound of integer values) per input, declared or inferred from uses."""
    values = _graph.graph_inputs(graph)
    result: list[tuple[str, int]] = []
    for index, spec in enumerate(specs):
        high = _index_bound(values[index]) if index < len(values) else None
        if spec.dtype is not None:
            result.append((spec.dtype, high or 2))
        elif high is not None:
            result.append(("int64", high))
        else:
            result.append(("float32", 0))
    return result


def _index_bound(value: _graph.Value) -> int | None:
    stack, seen, bound = [value], set(), None
    while stack:
        current = stack.pop()
        if current.debugName() in seen:
            continue
        seen.add(current.debugName())
        for use in current.uses():
            user = use.user
            kind = user.kind()
            if kind in _INDEX_USES and use.offset == _INDEX_USES[kind][0]:
                weight_arg = _INDEX_USES[kind][1]
                weight = _graph.constant_tensor(user.inputsAt(weight_arg)) if weight_arg is not None else None
                rows = int(weight.shape[0]) if weight is not None and weight.dim() > 0 else 2
                bound = rows if bound is None else min(bound, rows)
            elif kind in _PASS_THROUGH:
                stack.extend(user.outputs())
    return bound


def make_example_inputs(
    specs: Sequence[InputShape], dtypes: Sequence[tuple[str, int]], seed: int = 0
) -> list[torch.Tensor]:
    """Build deterministic example tensors for the declared shapes."""
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for spec, (dtype, high) in zip(specs, dtypes, strict=True):
        torch_dtype = getattr(torch, dtype)
        if torch_dtype.is_floating_point:
            tensors.append(torch.randn(spec.shape, generator=gen).to(torch_dtype))
        elif torch_dtype == torch.bool:
            tensors.append(torch.randint(0, 2, spec.shape, generator=gen).bool())
        else:
            tensors.append(torch.randint(0, max(high, 1), spec.shape, generator=gen).to(torch_dtype))
    return tensors


def run_reference(module: torch.jit.ScriptModule, specs: Sequence[InputShape], inputs: Sequence[torch.Tensor]) -> Any:
    """Run the FP32 model once; a failure means the declared shapes do not fit the model."""
    required, total, names = forward_arity(module)
    config = json.dumps({s.name: list(s.shape) for s in specs}, separators=(",", ":"))
    if not required <= len(specs) <= total:
        raise ShapeMismatchError(
            config=config,
            reason=f"the model's forward takes {required if required == total else f'{required}-{total}'} "
            f"input(s) ({', '.join(names)}) but DataInputConfig declares {len(specs)}",
        )
    try:
        with torch.no_grad():
            return module(*inputs)
    except MemoryError:
        raise CompileResourceError(resource="memory", limit="the compile's memory limit") from None
    except Exception as exc:  # shape errors surface as RuntimeError from deep inside aten
        if is_allocation_failure(exc):
            raise CompileResourceError(resource="memory", limit="the compile's memory limit") from None
        raise ShapeMismatchError(config=config, reason=_first_line(exc)) from None


def is_allocation_failure(exc: BaseException) -> bool:
    """Return whether torch failed to allocate memory (an rlimit or a huge shape), not a shape error."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "DefaultCPUAllocator" in text


def copy_code_dir(code_dir: Path | None, dest: Path) -> list[str]:
    """Copy the input's code/ directory (inference.py etc.) next to the compiled model."""
    if code_dir is None:
        return []
    target = dest / "code"
    shutil.copytree(code_dir, target, symlinks=False, dirs_exist_ok=True)
    return sorted(str(p.relative_to(dest)) for p in target.rglob("*") if p.is_file())
