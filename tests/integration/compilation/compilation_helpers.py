"""Constants, request builders and model tarballs shared by the compilation job tests."""

from __future__ import annotations

import copy
import io
import tarfile
import warnings
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "nd-compile"
INPUT_URI = f"s3://{BUCKET}/models/cnn/model.tar.gz"
OUTPUT = f"s3://{BUCKET}/compiled"
NEURON_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference-neuron:1.13.1-neuron-py310"
CPU_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"


def job_arn(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:sagemaker:{REGION}:{account}:compilation-job/{name.lower()}"


def job_request(name: str = "job1", **overrides: Any) -> dict[str, Any]:
    """A valid CreateCompilationJob request for a small CNN on ml_inf1; overrides replace top-level keys."""
    request: dict[str, Any] = {
        "CompilationJobName": name,
        "RoleArn": ROLE,
        "InputConfig": {
            "S3Uri": INPUT_URI,
            "DataInputConfig": '{"input0": [1, 3, 32, 32]}',
            "Framework": "PYTORCH",
            "FrameworkVersion": "1.13",
        },
        "OutputConfig": {"S3OutputLocation": OUTPUT, "TargetDevice": "ml_inf1"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }
    request.update(copy.deepcopy(overrides))
    return request


def with_input(request: dict[str, Any], **members: Any) -> dict[str, Any]:
    """Return the request with InputConfig members replaced (None removes one)."""
    out = copy.deepcopy(request)
    for key, value in members.items():
        if value is None:
            out["InputConfig"].pop(key, None)
        else:
            out["InputConfig"][key] = value
    return out


def with_output(request: dict[str, Any], **members: Any) -> dict[str, Any]:
    """Return the request with OutputConfig members replaced (None removes one)."""
    out = copy.deepcopy(request)
    for key, value in members.items():
        if value is None:
            out["OutputConfig"].pop(key, None)
        else:
            out["OutputConfig"][key] = value
    return out


def tarball(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """Return a gzip tarball holding ``members`` (and symbolic ``links`` name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def script_bytes(module: Any) -> bytes:
    """Return a TorchScript module serialised as torch.jit.save writes it."""
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, buffer)
    return buffer.getvalue()


def trace(model: Any, *examples: Any) -> Any:
    """Trace a module in eval mode without the TorchScript deprecation noise."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The tracer's self-check re-traces and compares graphs; attention layers differ only in names.
        return torch.jit.trace(model.eval(), examples, check_trace=False)


def gather_only() -> Any:
    """A model made only of aten::gather, which Inf1 does not support: nothing can go on a NeuronCore."""
    import torch
    from torch import nn

    class Gather(nn.Module):
        def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return torch.gather(x, 1, index)

    return trace(Gather(), torch.randn(4, 8), torch.randint(0, 8, (4, 8)))
