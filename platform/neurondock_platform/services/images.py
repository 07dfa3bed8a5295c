"""Container images neurondock can run: AWS's PyTorch inference images map to its built-in runtime."""

from __future__ import annotations

import re
from dataclasses import dataclass

# AWS Deep Learning Container and Neo repositories whose contract (SageMaker PyTorch inference
# toolkit: model_fn/input_fn/predict_fn/output_fn, model.tar.gz layout) the built-in runtime follows.
AWS_PYTORCH_REPOSITORIES = (
    "pytorch-inference",
    "pytorch-inference-neuron",
    "pytorch-inference-neuronx",
    "pytorch-inference-graviton",
    "sagemaker-neo-pytorch",
    "neo-pytorch",
    "sagemaker-inferentia-pytorch",
    "huggingface-pytorch-inference",
    "huggingface-pytorch-inference-neuron",
)
NEURONDOCK_IMAGES = (
    "neurondock/pytorch-inference",
    "neurondock/pytorch-inference-neuron",
)
_ECR_RE = re.compile(
    r"(?P<registry>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/(?P<repo>[a-z0-9._/-]+)"
    r"(?::(?P<tag>[\w.-]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_LOCAL_RE = re.compile(r"(?P<repo>neurondock/[a-z0-9-]+)(?::(?P<tag>[\w.-]+))?")


@dataclass(frozen=True)
class ResolvedImage:
    """What an image name runs as here."""

    specified: str
    runtime: str  # "pytorch" or "pytorch-neuron"
    repository: str
    tag: str

    @property
    def resolved(self) -> str:
        """A digest-form name, as DescribeEndpoint's ResolvedImage shows it."""
        import hashlib

        digest = hashlib.sha256(f"neurondock-{self.runtime}-{self.repository}:{self.tag}".encode()).hexdigest()
        base = (
            self.specified.split("@", 1)[0].rsplit(":", 1)[0]
            if ":" in self.specified.split("/")[-1]
            else self.specified
        )
        return f"{base}@sha256:{digest}"


class UnsupportedImageError(ValueError):
    """The image is not one neurondock can run."""


def supported_images_text() -> str:
    """Human-readable list of what is supported, for error messages."""
    aws = ", ".join(AWS_PYTORCH_REPOSITORIES)
    own = ", ".join(f"{name}:latest" for name in NEURONDOCK_IMAGES)
    return f"AWS PyTorch inference images (<account>.dkr.ecr.<region>.amazonaws.com/{{{aws}}}:<tag>) or {own}"


def resolve_image(image: str | None) -> ResolvedImage:
    """Map an image name to the built-in runtime, or raise UnsupportedImageError."""
    if not image:
        return ResolvedImage(specified="", runtime="pytorch", repository=NEURONDOCK_IMAGES[0], tag="latest")
    m = _ECR_RE.fullmatch(image)
    if m and m["repo"] in AWS_PYTORCH_REPOSITORIES:
        runtime = "pytorch-neuron" if "neuron" in m["repo"] or "inferentia" in m["repo"] else "pytorch"
        return ResolvedImage(specified=image, runtime=runtime, repository=m["repo"], tag=m["tag"] or "latest")
    m = _LOCAL_RE.fullmatch(image)
    if m and m["repo"] in NEURONDOCK_IMAGES:
        runtime = "pytorch-neuron" if m["repo"].endswith("neuron") else "pytorch"
        return ResolvedImage(specified=image, runtime=runtime, repository=m["repo"], tag=m["tag"] or "latest")
    raise UnsupportedImageError(
        f"Image {image!r} is not supported by neurondock. Supported images: {supported_images_text()}."
    )
