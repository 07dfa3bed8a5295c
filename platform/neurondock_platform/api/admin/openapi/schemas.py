"""The component schemas of the admin API's OpenAPI document.

Longer than most modules on purpose: it is one declarative table, a schema per response shape of
``api/admin/shapes.py``, and splitting it would only scatter what a reader compares side by side.
"""

from __future__ import annotations

from typing import Any

from neurondock_platform.api.admin.openapi._build import (
    ANY_OBJECT,
    INT,
    NI,
    NN,
    NS,
    NTIME,
    TIME,
    B,
    N,
    S,
    array,
    listing,
    nullable,
    obj,
    ref,
)
from neurondock_platform.models import CompilationJobStatus, EndpointStatus


def schemas() -> dict[str, Any]:
    """Return ``components.schemas``: every request and answer body the admin API speaks."""
    price = obj({"usd_per_hour": N, "basis": S, "source": S, "as_of": S, "label": S})
    hardware = obj(
        {
            "vcpus": INT,
            "memory_gib": INT,
            "inferentia_chips": INT,
            "neuron_cores": INT,
            "device_memory_gib": INT,
            "gpus": INT,
            "emulated": B,
        }
    )
    replica = obj(
        {"id": INT, "host_id": S, "state": S, "chips": array(INT), "neuron_cores": array(INT)},
        {
            "owner": S,
            "endpoint_name": NS,
            "variant_name": NS,
            "model_name": NS,
            "instance_type": NS,
            "desired_state": S,
            "standby": B,
            "pid": NI,
            "address": NS,
            "restarts": INT,
            "setup_seconds": NN,
            "failure_reason": NS,
            "created_at": NTIME,
            "updated_at": NTIME,
            "neuron_cores_source": nullable({"type": "string", "enum": ["reported", "derived"]}),
            "host_memory_bytes": NI,
            "cpu_seconds": NN,
            "device_memory_bytes": NI,
            "device_memory_source": NS,
            "utilization_percent": NN,
        },
    )
    endpoint_summary = obj(
        {
            "name": S,
            "arn": S,
            "status": {"type": "string", "enum": [s.value for s in EndpointStatus]},
            "created_at": TIME,
            "last_modified_at": TIME,
            "endpoint_config_name": S,
            "instance_types": array(S),
            "instance_count": INT,
        }
    )
    variant = obj(
        {
            "name": S,
            "model_name": S,
            "instance_type": S,
            "hardware": nullable(ref("Hardware")),
            "desired_instance_count": INT,
            "current_instance_count": INT,
            "desired_weight": N,
            "current_weight": N,
            "status": NS,
            "status_message": NS,
            "image": NS,
            "model_data_url": NS,
            "replicas": array(ref("Replica")),
        }
    )
    pending = obj(
        {
            "endpoint_config_name": S,
            "started_at": TIME,
            "variants": array(
                obj(
                    {
                        "name": S,
                        "model_name": S,
                        "instance_type": S,
                        "desired_instance_count": INT,
                        "desired_weight": N,
                    }
                )
            ),
        }
    )
    endpoint = {
        "allOf": [
            ref("EndpointSummary"),
            obj(
                {
                    "failure_reason": NS,
                    "invoke_url": S,
                    "variants": array(ref("Variant")),
                    "pending_update": nullable(ref("PendingUpdate")),
                },
                {"data_capture": nullable(ref("DataCapture"))},
            ),
        ]
    }
    data_capture = obj(
        {
            "enable_capture": B,
            "capture_status": {"type": "string", "enum": ["Started", "Stopped"]},
            "sampling_percentage": INT,
            "destination_s3_uri": S,
            "capture_modes": array(S),
            "csv_content_types": array(S),
            "json_content_types": array(S),
            "window_hours": INT,
            "records_written": INT,
            "records_failed": INT,
        }
    )
    core = obj(
        {
            "index": INT,
            "chip": INT,
            "replica_id": NI,
            "in_use": B,
            "owner": NS,
            "source": NS,
            "utilization_percent": NN,
        }
    )
    chip = obj(
        {
            "index": INT,
            "pci_bdf": S,
            "connected_to": array(INT),
            "memory_bytes": INT,
            "memory_used_bytes": NI,
            "neuron_cores": array(ref("NeuronCore")),
        }
    )
    host = obj(
        {
            "id": S,
            "address": S,
            "emulated": B,
            "live": B,
            "heartbeat_age_seconds": N,
            "last_heartbeat": NTIME,
            "started_at": NTIME,
            "agent_pid": NI,
            "vcpus": INT,
            "memory_mb": INT,
            "chip_count": INT,
            "neuron_core_count": INT,
            "chips_in_use": INT,
            "neuron_cores_in_use": INT,
            "device_memory_bytes": INT,
            "replica_count": INT,
        },
        {"chips": array(ref("Chip")), "replicas": array(ref("Replica"))},
    )
    alt_projection = obj(
        {
            "label": S,
            "latency_ms": NN,
            "throughput_per_s": NN,
            "cost_per_million_usd": NN,
            "basis": NS,
            "source": NS,
        }
    )
    cost = obj(
        {
            "endpoint_name": S,
            "status": S,
            "usd_per_hour": NN,
            "usd_per_month_730h": NN,
            "price_basis": S,
            "variants": array(
                obj(
                    {
                        "variant_name": S,
                        "instance_type": S,
                        "instance_count": INT,
                        "usd_per_hour_per_instance": NN,
                        "usd_per_hour": NN,
                        "price": nullable(ref("Price")),
                        "sagemaker_usd_per_hour": NN,
                        "sagemaker_price": nullable(ref("Price")),
                    }
                )
            ),
            "per_million_at_observed_traffic": obj({"label": S, "usd": NN, "invocations_per_hour": NN, "source": S}),
            "alternatives": array(
                obj(
                    {
                        "family": S,
                        "instance_type": S,
                        "instance_count": INT,
                        "is_current": B,
                        "usd_per_hour": NN,
                        "price": nullable(ref("Price")),
                        "delta_usd_per_hour": NN,
                        "projected": nullable(alt_projection),
                    }
                )
            ),
            "projection_source": NS,
        }
    )
    instance_type = obj(
        {
            "name": S,
            "family": S,
            "vcpus": INT,
            "memory_gib": INT,
            "inferentia_chips": INT,
            "neuron_cores": INT,
            "device_memory_gib": INT,
            "gpus": INT,
            "emulated": B,
            "prices": obj(
                {
                    "ec2_on_demand": nullable(ref("Price")),
                    "sagemaker_on_demand": nullable(ref("Price")),
                    "ri_effective": nullable(ref("Price")),
                }
            ),
        }
    )
    job_summary = obj(
        {
            "name": S,
            "arn": S,
            "status": {"type": "string", "enum": [s.value for s in CompilationJobStatus]},
            "target_device": S,
            "created_at": TIME,
            "last_modified_at": TIME,
            "compilation_started_at": NTIME,
            "compilation_ended_at": NTIME,
            "percent_supported": NN,
        }
    )
    report_view = obj(
        {
            "emulated": B,
            "percent_supported": NN,
            "percent_compiled": NN,
            "neuron_subgraphs": NI,
            "cpu_segments": NI,
            "unsupported_operators": array(S),
            "cpu_fallbacks": array(obj({"segment": NS, "operator": S, "count": NI, "reason": S})),
            "numerics": ANY_OBJECT,
            "resources": ANY_OBJECT,
            "execution": ANY_OBJECT,
        }
    )
    job = {
        "allOf": [
            ref("CompilationJobSummary"),
            obj(
                {
                    "failure_reason": NS,
                    "input_s3_uri": NS,
                    "model_artifacts": S,
                    "inference_image": NS,
                    "artifact_sha256": NS,
                    "max_runtime_seconds": INT,
                    "report": nullable(ref("CompileReportSummary")),
                },
                {"data_input_config": {}},
            ),
        ]
    }
    projections = obj(
        {
            "label": S,
            "rows": array(
                obj(
                    {
                        "family": S,
                        "instance_type": NS,
                        "label": S,
                        "latency_ms": NN,
                        "throughput_per_s": NN,
                        "usd_per_hour": NN,
                        "cost_per_million_usd": NN,
                    }
                )
            ),
            "calibration": ANY_OBJECT,
        },
        {"measured_cpu": nullable(ANY_OBJECT), "prices": nullable(ANY_OBJECT), "assumptions": nullable(ANY_OBJECT)},
    )
    account = obj({"id": S, "name": S, "is_admin": B, "created_at": TIME})
    access_key = obj(
        {
            "access_key_id": S,
            "account_id": S,
            "status": {"type": "string", "enum": ["Active", "Inactive"]},
            "created_at": TIME,
            "last_used_at": NTIME,
        },
        {"secret_access_key": S},
    )
    artifact = obj(
        {
            "bucket": S,
            "key": S,
            "size": INT,
            "etag": S,
            "content_type": S,
            "last_modified": TIME,
            "s3_uri": S,
        }
    )
    return {
        "Error": obj({"error": obj({"code": S, "message": S})}),
        "Price": price,
        "Hardware": hardware,
        "Replica": replica,
        "ModelSummary": obj({"name": S, "arn": S, "created_at": TIME, "image": NS}),
        "Model": {
            "allOf": [
                ref("ModelSummary"),
                obj(
                    {
                        "model_data_url": NS,
                        "environment": {"type": "object", "additionalProperties": S},
                        "execution_role_arn": NS,
                        "enable_network_isolation": B,
                    }
                ),
            ]
        },
        "ModelList": listing("ModelSummary"),
        "EndpointConfigSummary": obj({"name": S, "arn": S, "created_at": TIME, "variant_count": INT}),
        "EndpointConfig": {
            "allOf": [
                ref("EndpointConfigSummary"),
                obj(
                    {
                        "production_variants": array(
                            obj(
                                {
                                    "variant_name": NS,
                                    "model_name": NS,
                                    "instance_type": NS,
                                    "initial_instance_count": NI,
                                    "initial_variant_weight": NN,
                                }
                            )
                        )
                    }
                ),
            ]
        },
        "EndpointConfigList": listing("EndpointConfigSummary"),
        "EndpointSummary": endpoint_summary,
        "EndpointList": listing("EndpointSummary"),
        "Variant": variant,
        "PendingUpdate": pending,
        "DataCapture": data_capture,
        "Endpoint": endpoint,
        "EndpointDeleting": obj({"name": S, "status": S}),
        "ReplicaList": obj({"items": array(ref("Replica"))}),
        "History": obj({"items": array(obj({"time": NTIME, "event": S, "detail": S})), "note": S}),
        "Logs": obj(
            {
                "endpoint_name": S,
                "cursor": S,
                "replicas": array(
                    obj(
                        {
                            "replica_id": INT,
                            "variant_name": NS,
                            "host_id": S,
                            "state": S,
                            "source": {"type": "string", "enum": ["file", "database", "none"]},
                            "lines": array(S),
                        }
                    )
                ),
            }
        ),
        "EndpointEvents": obj(
            {
                "endpoint_name": S,
                "endpoint_arn": S,
                "deleted": B,
                "items": array(
                    obj(
                        {
                            "time": TIME,
                            "status": {"type": "string", "enum": [*(s.value for s in EndpointStatus), "Deleted"]},
                            "previous_status": NS,
                            "reason": NS,
                        }
                    )
                ),
                "next_token": NS,
            }
        ),
        "InvocationErrors": obj(
            {
                "endpoint_name": S,
                "endpoint_arn": S,
                "deleted": B,
                "items": array(
                    obj(
                        {
                            "time": TIME,
                            "variant_name": NS,
                            "replica_id": NI,
                            "http_status": INT,
                            "error_code": S,
                            "message": S,
                            "original_status_code": NI,
                            "original_message": NS,
                            "request_id": S,
                        }
                    )
                ),
                "next_token": NS,
            }
        ),
        "MetricSeries": obj(
            {
                "endpoint_name": S,
                "variant_name": NS,
                "metric": S,
                "statistic": S,
                "unit": S,
                "period_seconds": INT,
                "start": TIME,
                "end": TIME,
                "available": B,
                "source": NS,
                "reason": NS,
                "points": array(obj({"time": TIME, "value": N})),
            }
        ),
        "Cost": cost,
        "CostList": obj(
            {
                "items": array(ref("Cost")),
                "next_token": NS,
                "page_usd_per_hour": N,
                "price_basis": S,
                "instance_types": array(ref("InstanceType")),
            }
        ),
        "NeuronCore": core,
        "Chip": chip,
        "Host": host,
        "HostList": obj({"items": array(ref("Host")), "next_token": NS, "emulated": B}),
        "NeuronLs": obj(
            {
                "emulated": B,
                "host_id": S,
                "instance_type": S,
                "neuron_devices": array(
                    obj(
                        {
                            "neuron_device": INT,
                            "bdf": S,
                            "connected_to": array(INT),
                            "nc_count": INT,
                            "memory_size": INT,
                            "neuroncore_ids": array(INT),
                            "neuron_processes": array(
                                obj({"pid": NI, "command": S, "neuron_runtime_version": S, "replica_id": NI})
                            ),
                        }
                    )
                ),
            }
        ),
        "NeuronMonitorReport": obj(
            {
                "neuron_runtime_data": array(
                    obj({"pid": INT, "address": S, "neuron_runtime_tag": S, "error": S, "report": ANY_OBJECT})
                ),
                "system_data": obj(
                    {"neuron_hw_counters": ANY_OBJECT, "vcpu_usage": ANY_OBJECT, "memory_info": ANY_OBJECT}
                ),
                "instance_data": obj({"instance_id": S, "instance_type": S, "instance_region": S, "emulated": B}),
                "neuron_hardware_info": obj({"neuron_device_count": INT, "neuroncore_per_device_count": INT}),
            }
        ),
        "InstanceType": instance_type,
        "InstanceTypeList": obj({"items": array(ref("InstanceType"))}),
        "CompilationJobSummary": job_summary,
        "CompilationJobList": listing("CompilationJobSummary"),
        "CompileReportSummary": report_view,
        "CompilationJob": job,
        "CompileReport": obj(
            {
                "name": S,
                "status": S,
                "available": B,
                "summary": nullable(ref("CompileReportSummary")),
                "report": nullable(ANY_OBJECT),
            }
        ),
        "CompileLog": obj({"name": S, "status": S, "source": S, "log": S}),
        "CompileProjections": obj(
            {"name": S, "status": S, "available": B, "projections": nullable(ref("ProjectionTable"))}
        ),
        "ProjectionTable": projections,
        "Account": account,
        "AccountList": listing("Account"),
        "AccountDetail": {"allOf": [ref("Account"), obj({"access_keys": array(ref("AccessKey"))})]},
        "AccessKey": access_key,
        "AccessKeyList": listing("AccessKey"),
        "NewAccount": obj({"account": ref("Account"), "access_key": ref("AccessKey")}),
        "RotatedKey": obj({"access_key": ref("AccessKey"), "replaced": ref("AccessKey")}),
        "Token": obj(
            {
                "token": S,
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "access_key_id": S,
                "account_id": S,
                "expires_at": TIME,
                "expires_in": INT,
            }
        ),
        "RevokeToken": obj({}, {"token": {**S, "description": "Another token of your account; default: yours"}}),
        "RevokedToken": obj(
            {
                "revoked": {"type": "boolean", "enum": [True]},
                "token_id": S,
                "purpose": {"type": "string", "enum": ["api", "console"]},
                "access_key_id": S,
                "account_id": S,
                "expires_at": TIME,
            }
        ),
        "RevokedKeyTokens": obj({"access_key_id": S, "account_id": S, "revoked_before": TIME, "expires_at": TIME}),
        "Throttling": obj(
            {
                "__type": {"type": "string", "enum": ["ThrottlingException"]},
                "message": S,
                "error": obj({"code": S, "message": S}),
            }
        ),
        "WhoAmI": obj(
            {
                "account_id": S,
                "account_name": NS,
                "is_admin": B,
                "access_key_id": S,
                "auth": {"type": "string", "enum": ["sigv4", "bearer"]},
                "region": S,
            }
        ),
        "Artifact": artifact,
        "ArtifactList": listing("Artifact"),
        "BucketList": obj(
            {
                "items": array(obj({"name": S, "created_at": NTIME, "region": S})),
                "next_token": NS,
                "default_bucket": S,
            }
        ),
        "CreateModel": obj(
            {"name": S, "image": S},
            {
                "model_data_url": S,
                "environment": {"type": "object", "additionalProperties": S},
                "execution_role_arn": S,
            },
        ),
        "CreateEndpoint": obj(
            {"name": S, "model_name": S, "instance_type": S},
            {"instance_count": {"type": "integer", "minimum": 1}, "variant_name": S},
        ),
        "UpdateCapacity": obj(
            {
                "variants": array(
                    obj(
                        {"name": S},
                        {
                            "instance_count": {"type": "integer", "minimum": 1},
                            "weight": {"type": "number", "minimum": 0},
                        },
                    )
                )
            }
        ),
        "UpdateEndpoint": obj({"endpoint_config_name": S}, {"retain_all_variant_properties": B}),
        "CreateToken": obj(
            {},
            {
                "access_key_id": S,
                "secret_access_key": S,
                "ttl_seconds": {"type": "integer", "minimum": 60, "maximum": 129600},
            },
        ),
        "CreateAccount": obj({"name": S}, {"is_admin": B}),
        "StoreAccess": obj(
            {
                "account_id": S,
                "store": {"type": "string", "enum": ["embedded", "neurondock", "external"]},
                "in_effect": B,
                "access_key_id": nullable(S),
                "has_credentials": B,
                "buckets": array(S),
                "artifact_bucket": S,
            }
        ),
        "SetStoreAccess": obj(
            {},
            {
                "access_key_id": {**S, "description": "The account's own key for the external store"},
                "secret_access_key": {**S, "description": "Its secret (write-only)"},
                "buckets": {**array(S), "description": "Buckets the operator maps to the account"},
            },
        ),
    }
