"""The instance catalog: Inferentia hardware per type, sourced prices, botocore's enum."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import botocore
import pytest

from neurondock_platform import catalog


@pytest.mark.parametrize(
    ("name", "chips", "cores", "device_gib", "vcpus", "memory_gib", "ec2_price"),
    [
        ("ml.inf1.xlarge", 1, 4, 8, 4, 8, 0.228),
        ("ml.inf1.2xlarge", 1, 4, 8, 8, 16, 0.362),
        ("ml.inf1.6xlarge", 4, 16, 32, 24, 48, 1.18),
        ("ml.inf1.24xlarge", 16, 64, 128, 96, 192, 4.721),
    ],
)
def test_inf1_hardware_and_prices(name, chips, cores, device_gib, vcpus, memory_gib, ec2_price):
    entry = catalog.get(name)
    assert entry is not None and entry.has_neuron
    assert (entry.chips, entry.neuron_cores, entry.device_memory_gib) == (chips, cores, device_gib)
    assert (entry.vcpus, entry.memory_gib) == (vcpus, memory_gib)
    assert entry.ec2_on_demand is not None and entry.ec2_on_demand.usd_per_hour == ec2_price
    assert entry.ec2_on_demand.as_of == "2026-08-21"
    assert "NeuronPerf" in entry.ec2_on_demand.source
    assert entry.ri_effective is not None and "reserved" in entry.ri_effective.basis


def test_comparison_types_have_no_neuron_cores():
    for name in catalog.SUPPORTED_INSTANCE_TYPES:
        entry = catalog.CATALOG[name]
        if entry.family in ("c5", "g4dn"):
            assert (entry.chips, entry.neuron_cores, entry.device_memory_gib) == (0, 0, 0)
    assert catalog.CATALOG["ml.g4dn.12xlarge"].gpus == 4
    assert catalog.CATALOG["ml.c5.large"].gpus == 0


def test_unsourced_prices_stay_unknown():
    c5_9x = catalog.CATALOG["ml.c5.9xlarge"]
    assert c5_9x.ec2_on_demand is None and c5_9x.sagemaker_on_demand is None
    assert catalog.CATALOG["ml.inf1.6xlarge"].sagemaker_on_demand is None


def test_every_price_carries_basis_source_and_date():
    for entry in catalog.CATALOG.values():
        for price in (entry.ec2_on_demand, entry.sagemaker_on_demand, entry.ri_effective):
            if price is None:
                continue
            assert price.usd_per_hour > 0 and price.basis and price.source
            assert len(price.as_of) == 10 and price.as_of.startswith("20")
            assert f"list price as of {price.as_of}" in price.label()


def test_families_and_supported_types():
    assert {e.family for e in catalog.CATALOG.values()} == {"inf1", "c5", "g4dn"}
    assert set(catalog.SUPPORTED_INSTANCE_TYPES) <= set(catalog.all_instance_types())
    assert catalog.is_supported("ml.inf1.xlarge")
    assert not catalog.is_supported("ml.inf2.xlarge")
    assert catalog.get("ml.inf2.xlarge") is None


def test_all_instance_types_is_botocores_enum():
    path = Path(botocore.__file__).parent / "data" / "sagemaker" / "2017-07-24" / "service-2.json.gz"
    model = json.loads(gzip.decompress(path.read_bytes()))
    assert tuple(model["shapes"]["ProductionVariantInstanceType"]["enum"]) == catalog.all_instance_types()
    assert "ml.inf2.xlarge" in catalog.all_instance_types()
