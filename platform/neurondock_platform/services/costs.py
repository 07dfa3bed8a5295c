"""What endpoints cost: per hour on their instance types, per million inferences, and on the alternatives.

Prices come from ``catalog`` and are list prices, never live; each figure carries its basis, source
and as-of date. The primary basis is the EC2 on-demand list price (the only one the reference has
for every inf1, g4dn and c5 size); the SageMaker hosting price is shown beside it where the
reference has one. Cost per million inferences is given two ways, each labelled:

- *at observed traffic*: the endpoint's hourly cost divided by the invocations it actually served in
  the last hour (needs the runtime's metrics);
- *projected*: from a compile job's projection for each instance type (the analytic NeuronCore-v1
  model for inf1, T4 peak figures for g4dn, the CPU measurement for c5), when the endpoint runs a
  compiled artifact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from neurondock_platform import catalog
from neurondock_platform.models import Endpoint, EndpointStatus
from neurondock_platform.services import compile_reports, metric_series
from neurondock_platform.services.metric_series import Traffic

FAMILIES = ("inf1", "g4dn", "c5")
PRIMARY_BASIS = "ec2_on_demand"


def price_json(price: catalog.Price | None) -> dict[str, Any] | None:
    """Return a price with its caption fields, or None when the reference has no sourced price."""
    if price is None:
        return None
    return {
        "usd_per_hour": price.usd_per_hour,
        "basis": price.basis,
        "source": price.source,
        "as_of": price.as_of,
        "label": price.label(),
    }


def hardware_json(entry: catalog.InstanceType) -> dict[str, Any]:
    """Return what one instance of a catalog type offers."""
    return {
        "vcpus": entry.vcpus,
        "memory_gib": entry.memory_gib,
        "inferentia_chips": entry.chips,
        "neuron_cores": entry.neuron_cores,
        "device_memory_gib": entry.device_memory_gib,
        "gpus": entry.gpus,
        "emulated": entry.has_neuron,
    }


def instance_type_json(entry: catalog.InstanceType) -> dict[str, Any]:
    """Return one catalog entry with its hardware and prices."""
    return {
        "name": entry.name,
        "family": entry.family,
        **hardware_json(entry),
        "prices": {
            "ec2_on_demand": price_json(entry.ec2_on_demand),
            "sagemaker_on_demand": price_json(entry.sagemaker_on_demand),
            "ri_effective": price_json(entry.ri_effective),
        },
    }


def hourly(entry: catalog.InstanceType | None) -> float | None:
    """Return the primary-basis hourly price of an instance type, or None when unknown."""
    if entry is None or entry.ec2_on_demand is None:
        return None
    return entry.ec2_on_demand.usd_per_hour


def comparable(instance_type: str, family: str) -> catalog.InstanceType | None:
    """Return the smallest size of ``family`` with at least the vCPUs of ``instance_type`` (else the largest)."""
    current = catalog.get(instance_type)
    sizes = sorted(
        (e for e in catalog.CATALOG.values() if e.family == family and e.ec2_on_demand is not None),
        key=lambda e: (e.vcpus, e.ec2_on_demand.usd_per_hour if e.ec2_on_demand else 0.0),
    )
    if not sizes:
        return None
    if current is not None and current.family == family:
        return current
    need = current.vcpus if current is not None else 0
    return next((e for e in sizes if e.vcpus >= need), sizes[-1])


def per_million(usd_per_hour: float | None, per_hour: float | None) -> float | None:
    """Return the cost of a million inferences at ``per_hour`` inferences an hour."""
    if usd_per_hour is None or not per_hour or per_hour <= 0:
        return None
    return round(usd_per_hour * 1e6 / per_hour, 4)


def _projection_rows(projection: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    if not projection:
        return rows
    for family in FAMILIES:
        for row in projection.get(family) or []:
            if isinstance(row, dict) and isinstance(row.get("instance_type"), str):
                rows[row["instance_type"]] = row
    return rows


def endpoint_cost(
    endpoint: Endpoint,
    *,
    traffic: Traffic,
    projection: Mapping[str, Any] | None = None,
    projection_source: str | None = None,
) -> dict[str, Any]:
    """Return one endpoint's hourly cost, cost per million and the inf1/g4dn/c5 alternatives."""
    projected = _projection_rows(projection)
    variants = []
    total: float | None = 0.0
    instance_count = 0
    for variant in endpoint.variants:
        entry = catalog.get(variant.instance_type)
        # A failed endpoint runs (and costs) nothing; one on its way up is priced at what it will run.
        stopped = endpoint.status in (EndpointStatus.FAILED, EndpointStatus.OUT_OF_SERVICE)
        count = (
            variant.current_instance_count
            if stopped
            else variant.current_instance_count or variant.desired_instance_count
        )
        instance_count += count
        price = hourly(entry)
        variant_total = None if price is None else round(price * count, 4)
        if variant_total is None or total is None:
            total = None
        else:
            total += variant_total
        sagemaker = entry.sagemaker_on_demand if entry is not None else None
        variants.append(
            {
                "variant_name": variant.name,
                "instance_type": variant.instance_type,
                "instance_count": count,
                "usd_per_hour_per_instance": price,
                "usd_per_hour": variant_total,
                "price": price_json(entry.ec2_on_demand if entry is not None else None),
                "sagemaker_usd_per_hour": None if sagemaker is None else round(sagemaker.usd_per_hour * count, 4),
                "sagemaker_price": price_json(sagemaker),
            }
        )
    total = None if total is None else round(total, 4)
    primary = endpoint.variants[0].instance_type if endpoint.variants else ""
    alternatives = []
    for family in FAMILIES:
        entry = comparable(primary, family)
        if entry is None:
            continue
        price = hourly(entry)
        row = projected.get(entry.name)
        alt_total = None if price is None else round(price * max(1, instance_count), 4)
        alternatives.append(
            {
                "family": family,
                "instance_type": entry.name,
                "instance_count": max(1, instance_count),
                "is_current": entry.name == primary,
                "usd_per_hour": alt_total,
                "price": price_json(entry.ec2_on_demand),
                "delta_usd_per_hour": None if alt_total is None or total is None else round(alt_total - total, 4),
                "projected": None
                if row is None
                else {
                    "label": row.get("label") or "projected",
                    "latency_ms": row.get("latency_ms"),
                    "throughput_per_s": row.get("throughput_per_s"),
                    "cost_per_million_usd": row.get("cost_per_million_usd"),
                    "basis": row.get("basis"),
                    "source": projection_source,
                },
            }
        )
    observed = per_million(total, traffic.invocations_per_hour)
    return {
        "endpoint_name": endpoint.name,
        "status": str(endpoint.status),
        "usd_per_hour": total,
        "usd_per_month_730h": None if total is None else round(total * 730, 2),
        "price_basis": "EC2 on-demand list price, us-east-1, Linux (not live; SageMaker hosting costs more)",
        "variants": variants,
        "per_million_at_observed_traffic": {
            "label": "measured traffic",
            "usd": observed,
            "invocations_per_hour": traffic.invocations_per_hour,
            "source": traffic.source,
        },
        "alternatives": alternatives,
        "projection_source": projection_source,
    }


def endpoint_costs(session: Session, endpoints: Sequence[Endpoint]) -> list[dict[str, Any]]:
    """Return ``endpoint_cost`` for each endpoint at its observed traffic, with the projection it serves."""
    traffic = metric_series.invocations_last_hour(session, endpoints)
    served = compile_reports.projections_for_endpoints(session, endpoints)
    out = []
    for endpoint in endpoints:
        projection = served.get(endpoint.id)
        out.append(
            endpoint_cost(
                endpoint,
                traffic=traffic[endpoint.id],
                projection=projection.projection if projection is not None else None,
                projection_source=projection.source if projection is not None else None,
            )
        )
    return out


def catalog_json(families: Iterable[str] = FAMILIES) -> list[dict[str, Any]]:
    """Return the instance catalog of the given families."""
    wanted = set(families)
    return [instance_type_json(e) for e in catalog.CATALOG.values() if e.family in wanted]
