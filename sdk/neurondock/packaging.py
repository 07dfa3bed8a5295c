"""Build SageMaker-layout ``model.tar.gz`` files: the model file at the top, a handler under ``code/``.

::

    model.tar.gz
    |- model.pt            TorchScript (what Neo/Inferentia compiles and the default handler loads)
    |- code/
       |- inference.py     SAGEMAKER_PROGRAM: model_fn / input_fn / predict_fn / output_fn
       |- requirements.txt

torch is imported only inside ``package_module``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tarfile
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurondock._names import name_from_base
from neurondock.errors import ConfigurationError

if TYPE_CHECKING:
    from neurondock.session import Session

logger = logging.getLogger(__name__)

MODEL_FILENAME = "model.pt"
# Uploads without a key_prefix land under name_from_base(DEFAULT_KEY_BASE), unique per upload.
DEFAULT_KEY_BASE = "model"
CODE_DIR = "code"
# Weights barely compress; SageMaker's gzip level 9 makes big repacks take minutes
# (aws/sagemaker-python-sdk#4832), so favour speed.
COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class ModelPackage:
    """A built ``model.tar.gz``: where it is locally, what it holds and, once uploaded, its S3 URI."""

    path: Path
    members: tuple[str, ...]
    input_shape: dict[str, list[int]] | None = None
    s3_uri: str | None = field(default=None)

    @property
    def model_data(self) -> str:
        """The S3 URI once uploaded, else the local path (``Model`` uploads local paths itself)."""
        return self.s3_uri or str(self.path)

    def upload(
        self, session: Session | None = None, bucket: str | None = None, key_prefix: str | None = None
    ) -> ModelPackage:
        """Upload the archive (default bucket unless ``bucket``) and return it with ``s3_uri`` set.

        Without ``key_prefix`` each upload gets its own timestamped prefix (``model-<timestamp>/``), so a
        second package never overwrites the ``model.tar.gz`` an existing model or endpoint points at.
        """
        if session is None:
            from neurondock.session import Session

            session = Session()
        prefix = key_prefix if key_prefix is not None else name_from_base(DEFAULT_KEY_BASE)
        return replace(self, s3_uri=session.upload_data(self.path, bucket=bucket, key_prefix=prefix))


def _output(output_path: str | os.PathLike[str] | None) -> Path:
    if output_path is None:
        # Left for the caller: the archive must outlive this call (to be uploaded or deployed later).
        return Path(tempfile.mkdtemp(prefix="neurondock-")) / "model.tar.gz"
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _copy_code(
    staging: Path,
    entry_point: str | os.PathLike[str] | None,
    source_dir: str | os.PathLike[str] | None,
    requirements: Sequence[str] | None,
) -> None:
    code = staging / CODE_DIR
    if source_dir is not None:
        source = Path(source_dir)
        if not source.is_dir():
            raise ConfigurationError(f"source_dir is not a directory: {source}")
        shutil.copytree(source, code, dirs_exist_ok=True)
    if entry_point is not None:
        script = Path(entry_point)
        if source_dir is not None and not script.is_absolute():
            # As in the SageMaker SDK, entry_point is relative to source_dir when both are given.
            if not (code / script).is_file():
                raise ConfigurationError(f"entry_point {script} not found in source_dir {source_dir}")
        elif script.is_file():
            code.mkdir(parents=True, exist_ok=True)
            shutil.copy2(script, code / script.name)
        else:
            raise ConfigurationError(f"entry_point not found: {script}")
    if requirements:
        code.mkdir(parents=True, exist_ok=True)
        (code / "requirements.txt").write_text("".join(f"{line}\n" for line in requirements))


def _write_tar(staging: Path, output: Path) -> tuple[str, ...]:
    members = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    if not members:
        raise ConfigurationError(f"Nothing to package in {staging}")
    with tarfile.open(output, "w:gz", compresslevel=COMPRESS_LEVEL) as tar:
        for member in members:
            tar.add(staging / member, arcname=member, recursive=False)
    return tuple(members)


def _check_layout(folder: Path) -> None:
    top_level = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if not any(p.is_file() for p in top_level):
        raise ConfigurationError(f"{folder} has no model file at its top level")
    scripts = [p.name for p in top_level if p.suffix == ".py"]
    if scripts and not (folder / CODE_DIR).is_dir():
        # Containers import the handler from /opt/ml/model/code; a top-level script is never run.
        logger.warning("%s has %s at the top but no code/ directory; handlers go in code/", folder, scripts)


def package_folder(
    folder: str | os.PathLike[str],
    output_path: str | os.PathLike[str] | None = None,
    *,
    entry_point: str | os.PathLike[str] | None = None,
    source_dir: str | os.PathLike[str] | None = None,
    requirements: Sequence[str] | None = None,
    upload: bool = False,
    session: Session | None = None,
    bucket: str | None = None,
    key_prefix: str | None = None,
) -> ModelPackage:
    """Tar ``folder`` (model file at the top, optional ``code/``) into ``model.tar.gz``; optionally upload."""
    source = Path(folder)
    if not source.is_dir():
        raise ConfigurationError(f"Not a directory: {source}")
    _check_layout(source)
    with tempfile.TemporaryDirectory(prefix="neurondock-pkg-") as tmp:
        staging = Path(tmp) / "model"
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
        _copy_code(staging, entry_point, source_dir, requirements)
        output = _output(output_path)
        members = _write_tar(staging, output)
    package = ModelPackage(path=output, members=members)
    return package.upload(session, bucket, key_prefix) if upload else package


def add_code(
    model_tar: str | os.PathLike[str],
    output_path: str | os.PathLike[str] | None = None,
    *,
    entry_point: str | os.PathLike[str] | None = None,
    source_dir: str | os.PathLike[str] | None = None,
    requirements: Sequence[str] | None = None,
) -> ModelPackage:
    """Repack an existing ``model.tar.gz`` with a handler under ``code/`` (the SageMaker SDK's repack)."""
    with tempfile.TemporaryDirectory(prefix="neurondock-repack-") as tmp:
        staging = Path(tmp) / "model"
        staging.mkdir()
        with tarfile.open(model_tar, "r:*") as tar:
            tar.extractall(staging, filter="data")
        _copy_code(staging, entry_point, source_dir, requirements)
        output = _output(output_path)
        members = _write_tar(staging, output)
    return ModelPackage(path=output, members=members)


@contextlib.contextmanager
def _torchscript_allowed() -> Iterator[None]:
    # torch >= 2.9 deprecates torch.jit, but Neo/torch-neuron and the SageMaker PyTorch handler
    # consume TorchScript, so the archive must hold it all the same.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+` is deprecated", DeprecationWarning)
        yield


def input_shape_of(example_inputs: Any) -> dict[str, list[int]]:
    """Return a Neo ``DataInputConfig`` dict (``{"input0": [1, 3, 224, 224]}``) for example tensors."""
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return {f"input{i}": [int(d) for d in tensor.shape] for i, tensor in enumerate(inputs)}


def _as_tensors(example_inputs: Any) -> Any:
    # The data people send to endpoints is numpy; torch.jit.trace accepts only tensors.
    import torch

    def one(value: Any) -> Any:
        return torch.from_numpy(value) if type(value).__module__ == "numpy" and hasattr(value, "shape") else value

    if isinstance(example_inputs, (tuple, list)):
        return type(example_inputs)(one(value) for value in example_inputs)
    return one(example_inputs)


def package_module(
    model: Any,
    example_inputs: Any = None,
    output_path: str | os.PathLike[str] | None = None,
    *,
    method: str = "trace",
    entry_point: str | os.PathLike[str] | None = None,
    source_dir: str | os.PathLike[str] | None = None,
    requirements: Sequence[str] | None = None,
    model_filename: str = MODEL_FILENAME,
    upload: bool = False,
    session: Session | None = None,
    bucket: str | None = None,
    key_prefix: str | None = None,
) -> ModelPackage:
    """Trace (or script) a ``torch.nn.Module``, or take a ScriptModule as is, and build a ``model.tar.gz``.

    Args:
        example_inputs: a tensor or numpy array, or a tuple of them; required to trace, and gives
            ``input_shape``.
        method: ``"trace"`` (what Neo expects) or ``"script"``.
    """
    import torch

    if method not in ("trace", "script"):
        raise ConfigurationError(f"method must be 'trace' or 'script', not {method!r}")
    example_inputs = _as_tensors(example_inputs)
    with _torchscript_allowed():
        if isinstance(model, torch.jit.ScriptModule):
            scripted = model
        elif isinstance(model, torch.nn.Module):
            # Neo and the serving handler both expect an eval-mode graph (no dropout, frozen batch norm).
            model.eval()
            if method == "script":
                scripted = torch.jit.script(model)
            elif example_inputs is None:
                raise ConfigurationError("example_inputs are required to trace (or pass method='script')")
            else:
                inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
                with torch.no_grad():
                    scripted = torch.jit.trace(model, inputs)
        else:
            kind = type(model).__name__
            raise ConfigurationError(f"Expected a torch.nn.Module or ScriptModule, not {kind}")
        with tempfile.TemporaryDirectory(prefix="neurondock-pkg-") as tmp:
            staging = Path(tmp) / "model"
            staging.mkdir()
            torch.jit.save(scripted, str(staging / model_filename))
            _copy_code(staging, entry_point, source_dir, requirements)
            output = _output(output_path)
            members = _write_tar(staging, output)
    shape = input_shape_of(example_inputs) if example_inputs is not None else None
    package = ModelPackage(path=output, members=members, input_shape=shape)
    return package.upload(session, bucket, key_prefix) if upload else package
