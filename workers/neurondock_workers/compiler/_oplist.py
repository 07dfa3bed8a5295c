"""Neuron's published list of PyTorch operators supported on Inf1, grouped by the engine that runs them.

Source: aws-neuron-sdk `release-notes/archive/neuron-cc/neuron-cc-ops/neuron-cc-ops-pytorch.rst`
(docs/compiler.md, "Supported operators"). The engine grouping (TensorEngine for GEMM/conv,
VectorEngine for norms/pooling/reductions, ScalarEngine for element-wise work) follows
`about-neuron/arch/neuron-hardware/neuron-core-v1.rst` (docs/inferentia.md) and feeds the projection's
cost model.
"""

from __future__ import annotations

# TensorEngine: FLOPs = 2 * MACs, inputs cast to BF16/FP16, FP32 accumulate (docs/inferentia.md).
CONV_OPS = frozenset(
    {
        "aten::_convolution",
        "aten::_convolution_mode",
        "aten::convolution",
        "aten::conv1d",
        "aten::conv2d",
        "aten::conv3d",
        "aten::conv_transpose1d",
        "aten::conv_transpose2d",
    }
)
GEMM_OPS = frozenset(
    {
        "aten::addmm",
        "aten::mm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::matmul",
        "aten::linear",
        "aten::einsum",
        "aten::tensordot",
        "aten::dot",
        "aten::mv",
    }
)
MATMUL_OPS = CONV_OPS | GEMM_OPS

# VectorEngine: normalisation, pooling, softmax and reductions.
VECTOR_OPS = frozenset(
    {
        "aten::batch_norm",
        "aten::layer_norm",
        "aten::group_norm",
        "aten::instance_norm",
        "aten::_weight_norm",
        "aten::max_pool1d",
        "aten::max_pool2d",
        "aten::max_pool2d_with_indices",
        "aten::avg_pool1d",
        "aten::avg_pool2d",
        "aten::adaptive_avg_pool1d",
        "aten::adaptive_avg_pool2d",
        "aten::adaptive_max_pool1d",
        "aten::adaptive_max_pool2d",
        "aten::softmax",
        "aten::log_softmax",
        "aten::_softmax",
        "aten::sum",
        "aten::mean",
        "aten::max",
        "aten::min",
        "aten::amax",
        "aten::amin",
        "aten::argmax",
        "aten::argmin",
        "aten::topk",
        "aten::any",
        "aten::all",
        "aten::norm",
        "aten::linalg_vector_norm",
        "aten::cumsum",
        "aten::upsample_nearest2d",
        "aten::upsample_bilinear2d",
        "aten::pixel_shuffle",
        "aten::lstm",
        "aten::_pack_padded_sequence",
        "aten::_pad_packed_sequence",
    }
)

# ScalarEngine: element-wise arithmetic and activations.
SCALAR_OPS = frozenset(
    {
        "aten::add",
        "aten::add_",
        "aten::sub",
        "aten::sub_",
        "aten::mul",
        "aten::mul_",
        "aten::div",
        "aten::div_",
        "aten::rsub",
        "aten::true_divide",
        "aten::floor_divide",
        "aten::remainder",
        "aten::pow",
        "aten::neg",
        "aten::abs",
        "aten::exp",
        "aten::log",
        "aten::log2",
        "aten::sqrt",
        "aten::rsqrt",
        "aten::reciprocal",
        "aten::sin",
        "aten::cos",
        "aten::floor",
        "aten::ceil",
        "aten::trunc",
        "aten::clamp",
        "aten::clamp_",
        "aten::clamp_min",
        "aten::clamp_max",
        "aten::clip",
        "aten::relu",
        "aten::relu_",
        "aten::relu6",
        "aten::gelu",
        "aten::silu",
        "aten::sigmoid",
        "aten::tanh",
        "aten::hardtanh",
        "aten::hardtanh_",
        "aten::hardsigmoid",
        "aten::hardswish",
        "aten::leaky_relu",
        "aten::prelu",
        "aten::softplus",
        "aten::threshold",
        "aten::erf",
        "aten::eq",
        "aten::ne",
        "aten::lt",
        "aten::le",
        "aten::gt",
        "aten::ge",
        "aten::logical_and",
        "aten::logical_or",
        "aten::logical_not",
        "aten::logical_xor",
        "aten::isnan",
        "aten::where",
        "aten::masked_fill",
        "aten::masked_fill_",
        "aten::bucketize",
        "aten::one_hot",
        "aten::index_select",
        "aten::embedding_renorm_",
        "aten::reflection_pad2d",
        "aten::constant_pad_nd",
        "aten::pad",
    }
)

# Layout and creation ops; `COPY_OPS` move data on the device (transposes cost real time on the device).
COPY_OPS = frozenset(
    {
        "aten::permute",
        "aten::transpose",
        "aten::t",
        "aten::contiguous",
        "aten::cat",
        "aten::stack",
        "aten::repeat",
        "aten::repeat_interleave",
        "aten::roll",
        "aten::flip",
        "aten::expand",
        "aten::expand_as",
        "aten::clone",
        "aten::tril",
        "aten::triu",
        "aten::movedim",
        "aten::broadcast_to",
    }
)
SHAPE_OPS = frozenset(
    {
        "aten::view",
        "aten::reshape",
        "aten::squeeze",
        "aten::unsqueeze",
        "aten::flatten",
        "aten::split",
        "aten::split_with_sizes",
        "aten::tensor_split",
        "aten::chunk",
        "aten::unbind",
        "aten::slice",
        "aten::select",
        "aten::narrow",
        "aten::broadcast_tensors",
        "aten::size",
        "aten::numel",
        "aten::dim",
        "aten::Int",
        "aten::Float",
        "aten::ScalarImplicit",
        "aten::to",
        "aten::type_as",
        "aten::detach",
        "aten::dropout",
        "aten::feature_dropout",
        "aten::zeros",
        "aten::zeros_like",
        "aten::ones",
        "aten::ones_like",
        "aten::full",
        "aten::full_like",
        "aten::empty",
        "aten::empty_like",
        "aten::new_zeros",
        "aten::new_ones",
        "aten::new_full",
        "aten::new_empty",
        "aten::arange",
        "aten::eye",
        "aten::meshgrid",
        "aten::len",
        "aten::__getitem__",
        "aten::floordiv",
        "aten::__and__",
        "aten::__or__",
        "aten::__not__",
        "aten::view_as",
        "aten::reshape_as",
        "aten::alias",
        "aten::__is__",
        "aten::__isnot__",
    }
)

SUPPORTED_ATEN_OPS = MATMUL_OPS | VECTOR_OPS | SCALAR_OPS | COPY_OPS | SHAPE_OPS

# "prim::*" is on the published list, except the constructs neuron-cc cannot lower (control flow: neuron-cc's FAQ).
UNSUPPORTED_PRIM_OPS = frozenset(
    {
        "prim::If",
        "prim::Loop",
        "prim::CallFunction",
        "prim::CallMethod",
        "prim::PythonOp",
        "prim::RaiseException",
        "prim::Uninitialized",
    }
)

# Why an operator stays on the CPU, where a specific reason is known (docs/compiler.md).
UNSUPPORTED_REASONS = {
    "aten::embedding": "aten::embedding is not supported on Inf1 (added, then removed because it did not "
    "meet neuron-cc's performance criteria); lookups run on the host CPU",
    "aten::embedding_bag": "aten::embedding_bag is not on Neuron's supported-operator list; lookups run on "
    "the host CPU",
    "aten::index": "aten::index (advanced indexing) is not supported by neuron-cc",
    "aten::index_put_": "aten::index_put_ is not supported by neuron-cc",
    "aten::gather": "aten::gather is not supported by neuron-cc",
    "aten::randn": "random number generation (aten::randn) is not supported by neuron-cc",
    "aten::randn_like": "random number generation (aten::randn_like) is not supported by neuron-cc",
    "prim::If": "control flow (prim::If) is not supported: Neuron compiles static graphs only",
    "prim::Loop": "control flow (prim::Loop) is not supported: Neuron compiles static graphs only",
    "prim::CallFunction": "prim::CallFunction is not supported by neuron-cc",
}

REFERENCE_URL = (
    "https://awsdocs-neuron.readthedocs-hosted.com/en/latest/release-notes/neuron-cc-ops/neuron-cc-ops-pytorch.html"
)


def is_supported(kind: str) -> bool:
    """Return whether Neuron's published list covers a TorchScript node kind."""
    if kind.startswith("prim::"):
        return kind not in UNSUPPORTED_PRIM_OPS
    return kind in SUPPORTED_ATEN_OPS


def is_arithmetic(kind: str) -> bool:
    """Return whether torch-neuron counts a node as an operator rather than a primitive."""
    # ResNet-50's published analysis counts 176 "arithmetic" ops: every aten op, no prim nodes.
    return not kind.startswith("prim::")


def unsupported_reason(kind: str) -> str:
    """Explain why an operator cannot run on a NeuronCore."""
    return UNSUPPORTED_REASONS.get(kind, f"{kind} is not on Neuron's supported-operator list for PyTorch")
