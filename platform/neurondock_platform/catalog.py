"""The hardware neurondock emulates and compares against: Inferentia chips, instance types and their prices.

One catalog for the whole code base, torch-free: the API validates instance types with it, the
reconciler places chips and NeuronCores by it, the host agent checks device memory against it and
the compiler projects latency and cost from it. Every figure, its source and its as-of date are in
``docs/inferentia.md``; where no sourced price exists the price is None rather than a guess.
``all_instance_types()`` is botocore's own ``ProductionVariantInstanceType`` enum, so a
valid-but-unsupported type can be told apart from a typo.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neurondock_platform.service_model import ServiceModel

# --- one Inferentia (Inf1) chip and its NeuronCore-v1s ---------------------------------------------------
NEURON_CORES_PER_CHIP = 4
DEVICE_MEMORY_GIB_PER_CHIP = 8
DEVICE_MEMORY_BYTES_PER_CHIP = DEVICE_MEMORY_GIB_PER_CHIP * 1024**3
DEVICE_MEMORY_BANDWIDTH_GIB_S_PER_CHIP = 50
# AWS's own batch-size rule computes with the same figure in decimal units: 50 GB/s.
DRAM_BYTES_PER_S_PER_CHIP = 50e9
FP16_TFLOPS_PER_CHIP = 64
PEAK_FLOPS_PER_CHIP = FP16_TFLOPS_PER_CHIP * 1e12
INT8_TOPS_PER_CHIP = 128
TENSOR_FLOPS_PER_CORE = 16e12  # the TensorEngine's BF16/FP16 peak
# Estimates, not published: derived from NeuronCore-v2's "10x" vector and "3x" scalar claims.
VECTOR_FLOPS_PER_CORE = 0.23e12
SCALAR_FLOPS_PER_CORE = 0.97e12
# NeuronCore Pipeline shards one model over at most 16 chips' NeuronCores.
MAX_PIPELINE_CORES = 16 * NEURON_CORES_PER_CHIP

# --- the NVIDIA T4 of ml.g4dn, for comparison --------------------------------------------------------------
T4_FP16_FLOPS = 65e12
T4_MEM_BYTES_PER_S = 320e9

# The aws-neuron-sdk snapshot the inf1 prices come from (81ce03a) is dated 2026-08-21; the third-party
# price tables were read on 2026-11-26.
NEURON_SDK_AS_OF = "2026-08-21"
PRICE_TABLES_AS_OF = "2026-11-26"
_EC2_BASIS = "EC2 on-demand list price, us-east-1, Linux (same hardware; SageMaker hosting costs more)"
_SAGEMAKER_BASIS = "SageMaker real-time hosting on-demand list price, us-east-1"
_RI_BASIS = "EC2 reserved-instance effective hourly rate, us-east-1 (AWS's basis for its cost per 1M)"


@dataclass(frozen=True)
class Price:
    """An hourly list price, never live: always shown with its basis, source and date."""

    usd_per_hour: float
    basis: str
    source: str
    as_of: str

    def label(self) -> str:
        """Return the caption a price must be shown with."""
        return f"${self.usd_per_hour:g}/h — {self.basis}; list price as of {self.as_of} ({self.source})"


@dataclass(frozen=True)
class InstanceType:
    """One SageMaker hosting instance type as neurondock emulates it."""

    name: str
    family: str
    vcpus: int
    memory_gib: int
    chips: int = 0
    gpus: int = 0
    ec2_on_demand: Price | None = None
    sagemaker_on_demand: Price | None = None
    ri_effective: Price | None = None
    deployable: bool = True

    @property
    def neuron_cores(self) -> int:
        """NeuronCores on this type's chips (0 for CPU and GPU types)."""
        return self.chips * NEURON_CORES_PER_CHIP

    @property
    def device_memory_gib(self) -> int:
        """Inferentia device memory across this type's chips."""
        return self.chips * DEVICE_MEMORY_GIB_PER_CHIP

    @property
    def has_neuron(self) -> bool:
        """Whether this type has Inferentia chips."""
        return self.chips > 0


def _ec2(price: float | None, source: str, as_of: str = PRICE_TABLES_AS_OF) -> Price | None:
    return None if price is None else Price(price, _EC2_BASIS, source, as_of)


_NPF = "AWS NeuronPerf _get_cost_per_hour (aws-neuron-sdk 81ce03a)"
_NPF_RI = "aws-neuron-sdk about-neuron/benchmarks/inf1/instance_prices.csv (81ce03a)"
_TABLES = "third-party price tables that agree"
_C5 = "AWS Auto Scaling user guide c5 rows + price tables"


def _sagemaker(price: float | None) -> Price | None:
    return None if price is None else Price(price, _SAGEMAKER_BASIS, _TABLES, PRICE_TABLES_AS_OF)


def _inf1(size: str, chips: int, vcpus: int, mem: int, ec2: float, ri: float, sm: float | None) -> InstanceType:
    on_demand, reserved = _ec2(ec2, _NPF, NEURON_SDK_AS_OF), Price(ri, _RI_BASIS, _NPF_RI, NEURON_SDK_AS_OF)
    return InstanceType(f"ml.inf1.{size}", "inf1", vcpus, mem, chips, 0, on_demand, _sagemaker(sm), reserved)


def _g4dn(size: str, vcpus: int, mem: int, gpus: int, ec2: float, sm: float | None = None) -> InstanceType:
    return InstanceType(f"ml.g4dn.{size}", "g4dn", vcpus, mem, 0, gpus, _ec2(ec2, _TABLES), _sagemaker(sm))


def _c5(size: str, vcpus: int, mem: int, ec2: float | None) -> InstanceType:
    return InstanceType(name=f"ml.c5.{size}", family="c5", vcpus=vcpus, memory_gib=mem, ec2_on_demand=_ec2(ec2, _C5))


_ENTRIES = (
    # AWS's inf1 table and prices (docs/inferentia.md).
    _inf1("xlarge", 1, 4, 8, 0.228, 0.110, 0.297),
    _inf1("2xlarge", 1, 8, 16, 0.362, 0.174, None),
    _inf1("6xlarge", 4, 24, 48, 1.18, 0.567, None),
    _inf1("24xlarge", 16, 96, 192, 4.721, 2.269, None),
    # g4dn: GPU counts from NeuronPerf _get_num_gpus; vCPU/memory per AWS's published sizes.
    _g4dn("xlarge", 4, 16, 1, 0.526, 0.736),
    _g4dn("2xlarge", 8, 32, 1, 0.752),
    _g4dn("4xlarge", 16, 64, 1, 1.204),
    _g4dn("8xlarge", 32, 128, 1, 2.176),
    _g4dn("12xlarge", 48, 192, 4, 3.912),
    _g4dn("16xlarge", 64, 256, 1, 4.352),
    # c5: SageMaker offers large…18xlarge (no 12x/24x); the c5.9xlarge price is unverified, so None.
    _c5("large", 2, 4, 0.085),
    _c5("xlarge", 4, 8, 0.17),
    _c5("2xlarge", 8, 16, 0.34),
    _c5("4xlarge", 16, 32, 0.68),
    _c5("9xlarge", 36, 72, None),
    _c5("18xlarge", 72, 144, 3.06),
)

CATALOG: Mapping[str, InstanceType] = {entry.name: entry for entry in _ENTRIES}
SUPPORTED_INSTANCE_TYPES: tuple[str, ...] = tuple(e.name for e in _ENTRIES if e.deployable)


# The operations of a service this process answers, when it said so (``serve_only``): its botocore
# model then keeps only those and the shapes they reach (docs/measured.md, "Memory by process").
_SERVED: dict[str, frozenset[str]] = {}
_INSTANCE_TYPE_SHAPE = "ProductionVariantInstanceType"


@functools.cache
def service_model(name: str) -> ServiceModel:
    """Return botocore's model of an AWS service neurondock speaks (loaded once per process)."""
    from neurondock_platform import botocore_models, heap
    from neurondock_platform.service_model import ServiceModel, model_file

    if name in _SERVED:
        # The instance types' enum is read apart from any operation (all_instance_types).
        model = botocore_models.load_operations(model_file(name), sorted(_SERVED[name]), (_INSTANCE_TYPE_SHAPE,))
        # The model's text and what was parsed only to be skipped are garbage now, in the C heap malloc keeps.
        heap.trim()
    else:
        model = botocore_models.UndocumentedFiles().load_file(model_file(name))
    return ServiceModel(model, name)


def serve_only(name: str, operations: Iterable[str]) -> None:
    """Have this process's model of service ``name`` hold only ``operations`` (the API's registered handlers)."""
    _SERVED[name] = frozenset(operations)
    service_model.cache_clear()
    all_instance_types.cache_clear()


def sagemaker_service_model() -> ServiceModel:
    """Return botocore's SageMaker service model (loaded once per process)."""
    return service_model("sagemaker")


def _botocore_enum(shape_name: str) -> tuple[str, ...]:
    return tuple(sagemaker_service_model().shape_for(shape_name).enum)


@functools.cache
def all_instance_types() -> tuple[str, ...]:
    """Return every instance type SageMaker accepts (botocore's enum; loaded on first use, not at import)."""
    return _botocore_enum(_INSTANCE_TYPE_SHAPE)


def family(name: str) -> tuple[InstanceType, ...]:
    """Return the catalog entries of one family (``inf1``, ``g4dn``, ``c5``) from smallest to largest."""
    return tuple(e for e in _ENTRIES if e.family == name)


def get(name: str) -> InstanceType | None:
    """Return the catalog entry of an instance type, or None when neurondock does not offer it."""
    return CATALOG.get(name)


def is_supported(name: str) -> bool:
    """Tell whether neurondock can deploy this instance type."""
    return name in SUPPORTED_INSTANCE_TYPES
