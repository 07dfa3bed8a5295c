"""Shaping rows into the admin API's JSON (snake_case keys, ISO 8601 UTC times); the console reuses it."""

from __future__ import annotations

from typing import Any

from neurondock_platform import catalog
from neurondock_platform.models import AccessKey, Account, Endpoint, EndpointConfig, EndpointVariant, Model
from neurondock_platform.services import endpoints as endpoint_service
from neurondock_platform.services import models as model_service
from neurondock_platform.services.fleet import ReplicaView, iso


def model_summary(model: Model) -> dict[str, Any]:
    container = model_service.primary(model)
    return {
        "name": model.name,
        "arn": model.arn,
        "created_at": iso(model.created_at),
        "image": container.get("Image"),
    }


def model_detail(model: Model) -> dict[str, Any]:
    snapshot = model_service.container_snapshot(model)
    return {
        **model_summary(model),
        "model_data_url": snapshot.get("ModelDataUrl"),
        "environment": snapshot.get("Environment") or {},
        "execution_role_arn": model.execution_role_arn,
        "enable_network_isolation": model.enable_network_isolation,
    }


def config_summary(config: EndpointConfig) -> dict[str, Any]:
    return {
        "name": config.name,
        "arn": config.arn,
        "created_at": iso(config.created_at),
        "variant_count": len(config.production_variants),
    }


def config_detail(config: EndpointConfig) -> dict[str, Any]:
    return {
        **config_summary(config),
        "production_variants": [
            {
                "variant_name": v.get("VariantName"),
                "model_name": v.get("ModelName"),
                "instance_type": v.get("InstanceType"),
                "initial_instance_count": v.get("InitialInstanceCount"),
                "initial_variant_weight": v.get("InitialVariantWeight"),
            }
            for v in config.production_variants
        ],
    }


def hardware(instance_type: str) -> dict[str, Any] | None:
    """Return what one instance of the type offers (None for a type outside the catalog)."""
    entry = catalog.get(instance_type)
    if entry is None:
        return None
    return {
        "vcpus": entry.vcpus,
        "memory_gib": entry.memory_gib,
        "inferentia_chips": entry.chips,
        "neuron_cores": entry.neuron_cores,
        "device_memory_gib": entry.device_memory_gib,
        "gpus": entry.gpus,
        "emulated": entry.has_neuron,
    }


def endpoint_summary(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "name": endpoint.name,
        "arn": endpoint.arn,
        "status": str(endpoint.status),
        "created_at": iso(endpoint.created_at),
        "last_modified_at": iso(endpoint.last_modified_at),
        "endpoint_config_name": endpoint.endpoint_config_name,
        "instance_types": sorted({v.instance_type for v in endpoint.variants}),
        "instance_count": sum(v.desired_instance_count for v in endpoint.variants),
    }


def variant_json(variant: EndpointVariant, replicas: list[ReplicaView]) -> dict[str, Any]:
    return {
        "name": variant.name,
        "model_name": variant.model_name,
        "instance_type": variant.instance_type,
        "hardware": hardware(variant.instance_type),
        "desired_instance_count": variant.desired_instance_count,
        "current_instance_count": variant.current_instance_count,
        "desired_weight": variant.desired_weight,
        "current_weight": variant.current_weight,
        "status": variant.variant_status,
        "status_message": variant.status_message,
        "image": variant.container.get("Image"),
        "model_data_url": variant.container.get("ModelDataUrl"),
        "replicas": [r.to_json() for r in replicas if r.variant_name == variant.name],
    }


def endpoint_detail(endpoint: Endpoint, replicas: list[ReplicaView], public_url: str) -> dict[str, Any]:
    pending = endpoint_service.pending_update(endpoint)
    return {
        **endpoint_summary(endpoint),
        "failure_reason": endpoint.failure_reason,
        "invoke_url": f"{public_url.rstrip('/')}/endpoints/{endpoint.name}/invocations",
        "variants": [variant_json(v, replicas) for v in endpoint.variants],
        "pending_update": None
        if pending is None
        else {
            "endpoint_config_name": pending.config_name,
            "started_at": iso(pending.started_at),
            "variants": [
                {
                    "name": s.name,
                    "model_name": s.model_name,
                    "instance_type": s.instance_type,
                    "desired_instance_count": s.instance_count,
                    "desired_weight": s.weight,
                }
                for s in pending.variants
            ],
        },
    }


def account_json(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "is_admin": account.is_admin,
        "created_at": iso(account.created_at),
    }


def access_key_json(key: AccessKey, *, with_secret: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "access_key_id": key.access_key_id,
        "account_id": key.account_id,
        "status": str(key.status),
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
    }
    if with_secret:
        out["secret_access_key"] = key.secret_access_key
    return out
