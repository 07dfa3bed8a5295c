"""Work profiles: what a Neuron subgraph asks of each NeuronCore engine, from a graph or a formula.

The graph analyser and the analytic builders for AWS's benchmark models (BERT, DistilBERT,
ResNet-50) call the same `ProfileBuilder` methods, so the calibration and a user's projection
count FLOPs and bytes the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

# Rough engine ops per element (a LayerNorm is mean, variance, normalise, scale, shift).
VECTOR_OPS_PER_ELEMENT = {
    "aten::layer_norm": 8.0,
    "aten::group_norm": 8.0,
    "aten::instance_norm": 8.0,
    "aten::batch_norm": 2.0,
    "aten::softmax": 5.0,
    "aten::log_softmax": 6.0,
    "aten::_softmax": 5.0,
    "aten::lstm": 10.0,
}


@dataclass
class WorkloadProfile:
    """Per-call work of one model (or subgraph) at its compiled batch size."""

    batch: int = 1
    gemm_flops: float = 0.0
    gemm_row_flops: float = 0.0  # sum(rows * flops): gemm_rows = gemm_row_flops / gemm_flops
    conv_flops: float = 0.0
    vector_ops: float = 0.0
    scalar_ops: float = 0.0
    copy_bytes: float = 0.0
    weight_bytes: float = 0.0
    weight_count: float = 0.0
    io_bytes: float = 0.0
    subgraphs: int = 1
    matmul_ops: int = 0
    kernels: int = 0  # operators a GPU would launch (g4dn projection)
    notes: list[str] = field(default_factory=list)

    @property
    def gemm_rows(self) -> float:
        """Return the FLOP-weighted mean M dimension of the GEMMs (systolic-array fill)."""
        return self.gemm_row_flops / self.gemm_flops if self.gemm_flops else 0.0

    @property
    def total_flops(self) -> float:
        """Return TensorEngine FLOPs (2 x MACs)."""
        return self.gemm_flops + self.conv_flops

    def merged(self, other: WorkloadProfile) -> WorkloadProfile:
        """Return the sum of two profiles (batch taken from self)."""
        out = WorkloadProfile(batch=self.batch)
        for name in (
            "gemm_flops",
            "gemm_row_flops",
            "conv_flops",
            "vector_ops",
            "scalar_ops",
            "copy_bytes",
            "weight_bytes",
            "weight_count",
            "io_bytes",
        ):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.subgraphs = self.subgraphs + other.subgraphs
        out.matmul_ops = self.matmul_ops + other.matmul_ops
        out.kernels = self.kernels + other.kernels
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict with the derived fields included."""
        data = asdict(self)
        data["gemm_rows"] = self.gemm_rows
        data["total_flops"] = self.total_flops
        return data


class ProfileBuilder:
    """Accumulate engine work operator by operator."""

    def __init__(self, batch: int = 1, dtype_bytes: int = 2) -> None:
        self.profile = WorkloadProfile(batch=batch)
        self.dtype_bytes = dtype_bytes

    def gemm(self, rows: float, k: float, n: float, repeats: float = 1.0) -> None:
        """Add a (rows x k) @ (k x n) product, `repeats` times (batched matmul)."""
        flops = 2.0 * rows * k * n * repeats
        self.profile.gemm_flops += flops
        self.profile.gemm_row_flops += flops * rows
        self.profile.matmul_ops += 1
        self.profile.kernels += 1

    def conv(self, out_elements: float, macs_per_output: float) -> None:
        """Add a convolution producing `out_elements` outputs of `macs_per_output` MACs each."""
        self.profile.conv_flops += 2.0 * out_elements * macs_per_output
        self.profile.matmul_ops += 1
        self.profile.kernels += 1

    def weights(self, count: float) -> None:
        """Add constant parameters held on the device in the cast dtype."""
        self.profile.weight_count += count
        self.profile.weight_bytes += count * self.dtype_bytes

    def vector(self, kind: str, elements: float) -> None:
        """Add VectorEngine work (norms, softmax, pooling, reductions)."""
        self.profile.vector_ops += VECTOR_OPS_PER_ELEMENT.get(kind, 1.0) * elements
        self.profile.kernels += 1

    def scalar(self, elements: float) -> None:
        """Add ScalarEngine work (element-wise arithmetic and activations)."""
        self.profile.scalar_ops += elements
        self.profile.kernels += 1

    def copy(self, elements: float) -> None:
        """Add a layout change that moves data (transpose, cat, contiguous)."""
        self.profile.copy_bytes += elements * self.dtype_bytes
        self.profile.kernels += 1

    def io(self, nbytes: float) -> None:
        """Add bytes crossing the host/device boundary per call."""
        self.profile.io_bytes += nbytes


def transformer_profile(
    *,
    layers: int,
    hidden: int,
    heads: int,
    ffn: int,
    seq: int,
    batch: int,
    token_type: bool = True,
    pooler: bool = True,
    classes: int = 2,
    dtype_bytes: int = 2,
) -> WorkloadProfile:
    """Return the Neuron-side profile of a BERT-family encoder (embedding lookups stay on the CPU)."""
    b = ProfileBuilder(batch, dtype_bytes)
    tokens = batch * seq
    embeddings = 3 if token_type else 2
    # The embedding sums and LayerNorm run on Neuron; the lookups do not (aten::embedding is not supported on Inf1).
    b.io(embeddings * tokens * hidden * 4 + batch * seq * 4)
    b.scalar((embeddings - 1) * tokens * hidden)
    b.vector("aten::layer_norm", tokens * hidden)
    b.weights(2 * hidden)
    for _ in range(layers):
        b.gemm(tokens, hidden, 3 * hidden)
        b.copy(3 * tokens * hidden)
        b.gemm(seq, hidden // heads, seq, repeats=batch * heads)
        b.scalar(2 * batch * heads * seq * seq)  # scale + additive attention mask
        b.vector("aten::softmax", batch * heads * seq * seq)
        b.gemm(seq, seq, hidden // heads, repeats=batch * heads)
        b.copy(tokens * hidden)
        b.gemm(tokens, hidden, hidden)
        b.scalar(tokens * hidden)
        b.vector("aten::layer_norm", tokens * hidden)
        b.gemm(tokens, hidden, ffn)
        b.scalar(tokens * ffn)
        b.gemm(tokens, ffn, hidden)
        b.scalar(tokens * hidden)
        b.vector("aten::layer_norm", tokens * hidden)
        b.weights(4 * hidden * hidden + 2 * hidden * ffn + 9 * hidden + ffn)
    if pooler:
        b.gemm(batch, hidden, hidden)
        b.scalar(batch * hidden)
        b.weights(hidden * hidden + hidden)
    b.gemm(batch, hidden, classes)
    b.weights(hidden * classes + classes)
    b.io(batch * classes * 4)
    return b.profile


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def resnet_profile(
    *,
    block: str,
    layers: tuple[int, ...],
    widths: tuple[int, ...],
    image: int,
    batch: int,
    stem_width: int = 64,
    classes: int = 1000,
    in_channels: int = 3,
    dtype_bytes: int = 2,
) -> WorkloadProfile:
    """Return the profile of a torchvision-layout ResNet (basic or bottleneck blocks, BN after each conv)."""
    b = ProfileBuilder(batch, dtype_bytes)
    b.io(batch * in_channels * image * image * 4 + batch * classes * 4)

    def conv(cin: int, cout: int, k: int, stride: int, size: int, relu: bool) -> int:
        out = _conv_out(size, k, stride, k // 2)
        elems = batch * cout * out * out
        b.conv(elems, cin * k * k)
        b.weights(cout * cin * k * k + 4 * cout)  # conv weight + BN affine and running stats
        b.vector("aten::batch_norm", elems)
        if relu:
            b.scalar(elems)
        return out

    size = conv(in_channels, stem_width, 7, 2, image, True)
    pooled = _conv_out(size, 3, 2, 1)
    b.vector("aten::max_pool2d", batch * stem_width * size * size)
    size, cin = pooled, stem_width
    expansion = 4 if block == "bottleneck" else 1
    for stage, (count, width) in enumerate(zip(layers, widths, strict=True)):
        for index in range(count):
            stride = 2 if index == 0 and stage > 0 else 1
            cout = width * expansion
            if block == "bottleneck":
                s1 = conv(cin, width, 1, 1, size, True)
                s2 = conv(width, width, 3, stride, s1, True)
                out = conv(width, cout, 1, 1, s2, False)
            else:
                s1 = conv(cin, width, 3, stride, size, True)
                out = conv(width, cout, 3, 1, s1, False)
            if stride != 1 or cin != cout:
                conv(cin, cout, 1, stride, size, False)
            b.scalar(2 * batch * cout * out * out)  # residual add + ReLU
            size, cin = out, cout
    b.vector("aten::adaptive_avg_pool2d", batch * cin * size * size)
    b.gemm(batch, cin, classes)
    b.weights(cin * classes + classes)
    return b.profile


@lru_cache(maxsize=64)
def reference_profile(model: str, batch: int) -> WorkloadProfile:
    """Return the analytic profile of one of AWS's published benchmark models at a batch size."""
    if model == "bert-base":
        return transformer_profile(layers=12, hidden=768, heads=12, ffn=3072, seq=128, batch=batch)
    if model == "distilbert-base":
        return transformer_profile(
            layers=6, hidden=768, heads=12, ffn=3072, seq=128, batch=batch, token_type=False, pooler=False
        )
    if model == "distilroberta-base":
        return transformer_profile(
            layers=6, hidden=768, heads=12, ffn=3072, seq=128, batch=batch, token_type=False, pooler=True
        )
    if model == "resnet-50":
        return resnet_profile(
            block="bottleneck", layers=(3, 4, 6, 3), widths=(64, 128, 256, 512), image=224, batch=batch
        )
    raise KeyError(model)
