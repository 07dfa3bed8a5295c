"""The instance catalog: what each ``ml.*`` type neurondock runs offers, and what it costs.

Hardware figures come from ``shared/reference/inferentia.md`` §1 (AWS's inf1 table, Neuron SDK docs);
prices from §1.4, each carrying its basis, source and as-of date. Where the reference has no sourced
price the price is None rather than a guess. ``ALL_INSTANCE_TYPES`` is botocore's own
``ProductionVariantInstanceType`` enum, so a valid-but-unsupported type can be told apart from a typo.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NEURON_CORES_PER_CHIP = 4
DEVICE_MEMORY_GIB_PER_CHIP = 8
DEVICE_MEMORY_BANDWIDTH_GIB_S_PER_CHIP = 50
FP16_TFLOPS_PER_CHIP = 64
INT8_TOPS_PER_CHIP = 128

# aws-neuron-sdk snapshot 81ce03a is dated 2026-08-21; the third-party price tables were read when the
# reference was compiled (2026-11-26).
_NEURON_SDK_AS_OF = "2026-08-21"
_REFERENCE_AS_OF = "2026-11-26"
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
        return self.chips * NEURON_CORES_PER_CHIP

    @property
    def device_memory_gib(self) -> int:
        return self.chips * DEVICE_MEMORY_GIB_PER_CHIP

    @property
    def has_neuron(self) -> bool:
        return self.chips > 0


def _ec2(price: float | None, source: str, as_of: str = _REFERENCE_AS_OF) -> Price | None:
    return None if price is None else Price(price, _EC2_BASIS, source, as_of)


_NPF = "AWS NeuronPerf _get_cost_per_hour (aws-neuron-sdk 81ce03a)"
_NPF_RI = "aws-neuron-sdk about-neuron/benchmarks/inf1/instance_prices.csv (81ce03a)"
_TABLES = "third-party price tables that agree"
_C5 = "AWS Auto Scaling user guide c5 rows + price tables"


def _inf1(
    size: str, chips: int, vcpus: int, mem: int, ec2: float, ri: float, sm: float | None
) -> InstanceType:
    return InstanceType(
        name=f"ml.inf1.{size}",
        family="inf1",
        vcpus=vcpus,
        memory_gib=mem,
        chips=chips,
        ec2_on_demand=_ec2(ec2, _NPF, _NEURON_SDK_AS_OF),
        ri_effective=Price(ri, _RI_BASIS, _NPF_RI, _NEURON_SDK_AS_OF),
        sagemaker_on_demand=None if sm is None else Price(sm, _SAGEMAKER_BASIS, _TABLES, _REFERENCE_AS_OF),
    )


def _g4dn(size: str, vcpus: int, mem: int, gpus: int, ec2: float, sm: float | None = None) -> InstanceType:
    return InstanceType(
        name=f"ml.g4dn.{size}",
        family="g4dn",
        vcpus=vcpus,
        memory_gib=mem,
        gpus=gpus,
        ec2_on_demand=_ec2(ec2, _TABLES),
        sagemaker_on_demand=None if sm is None else Price(sm, _SAGEMAKER_BASIS, _TABLES, _REFERENCE_AS_OF),
    )


def _c5(size: str, vcpus: int, mem: int, ec2: float | None) -> InstanceType:
    return InstanceType(
        name=f"ml.c5.{size}", family="c5", vcpus=vcpus, memory_gib=mem, ec2_on_demand=_ec2(ec2, _C5)
    )


_ENTRIES = (
    # inferentia.md §1.1 (AWS's inf1 table) and §1.4 (prices).
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


@functools.cache
def sagemaker_service_model() -> Any:
    """Return botocore's SageMaker service model (loaded once per process)."""
    from botocore.loaders import Loader
    from botocore.model import ServiceModel

    return ServiceModel(Loader().load_service_model("sagemaker", "service-2"), "sagemaker")


def _botocore_enum(shape_name: str) -> tuple[str, ...]:
    return tuple(sagemaker_service_model().shape_for(shape_name).enum)


ALL_INSTANCE_TYPES: tuple[str, ...] = _botocore_enum("ProductionVariantInstanceType")


def get(name: str) -> InstanceType | None:
    """Return the catalog entry of an instance type, or None when neurondock does not offer it."""
    return CATALOG.get(name)


def is_supported(name: str) -> bool:
    """Tell whether neurondock can deploy this instance type."""
    return name in SUPPORTED_INSTANCE_TYPES
