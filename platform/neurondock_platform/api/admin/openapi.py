"""The OpenAPI 3.1 document of the admin API, written by hand beside the routes it describes.

``tests/integration/admin`` checks that every route of the blueprint is documented here and that the
server's answers validate against these schemas (and fuzzes it with schemathesis).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from neurondock_platform.models import CompilationJobStatus, EndpointStatus
from neurondock_platform.services import admin

VERSION = "1.0.0"
JSON = "application/json"

S: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
N: dict[str, Any] = {"type": "number"}
B: dict[str, Any] = {"type": "boolean"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Return ``schema`` that also accepts null."""
    if "$ref" in schema or "enum" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    out = dict(schema)
    kind = out.get("type")
    out["type"] = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
    return out


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Return an object schema whose ``required`` members must be present (values may still be null)."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        **extra,
    }


TIME = {"type": "string", "format": "date-time"}
NTIME = nullable(TIME)
NS = nullable(S)
NI = nullable(INT)
NN = nullable(N)
NB = nullable(B)
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def listing(item: str) -> dict[str, Any]:
    return obj({"items": array(ref(item)), "next_token": NS})


def _schemas() -> dict[str, Any]:
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
                }
            ),
        ]
    }
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
    }


# --- operations -----------------------------------------------------------------------------------


def param(
    name: str, schema: dict[str, Any], *, where: str = "query", required: bool = False, doc: str = ""
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "in": where, "required": required or where == "path", "schema": schema}
    if doc:
        out["description"] = doc
    return out


def path_param(name: str, example: str, doc: str = "") -> dict[str, Any]:
    out = param(name, {"type": "string", "minLength": 1}, where="path", doc=doc)
    out["example"] = example
    return out


LIMIT = param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}, doc="Page size.")
NEXT = param("next_token", S, doc="The next_token of the previous page.")
SORT_BY = param("sort_by", {"type": "string", "enum": ["name", "creation_time"]})
SORT_BY_STATUS = param("sort_by", {"type": "string", "enum": ["name", "creation_time", "status"]})
SORT_ORDER = param("sort_order", {"type": "string", "enum": ["asc", "desc"]})
NAME_CONTAINS = param("name_contains", {"type": "string", "maxLength": 63}, doc="Case-insensitive substring.")
CREATED_AFTER = param("created_after", {"type": "string", "format": "date-time"})
CREATED_BEFORE = param("created_before", {"type": "string", "format": "date-time"})
LIST_PARAMS = [LIMIT, NEXT, SORT_BY, SORT_ORDER, NAME_CONTAINS, CREATED_AFTER, CREATED_BEFORE]


def body(schema: str, content_type: str = JSON) -> dict[str, Any]:
    return {"required": True, "content": {content_type: {"schema": ref(schema)}}}


def ok(schema: str | None, status: str = "200", description: str = "OK") -> dict[str, Any]:
    if schema is None:
        return {status: {"description": description}}
    return {status: {"description": description, "content": {JSON: {"schema": ref(schema)}}}}


def errors(*statuses: str) -> dict[str, Any]:
    texts = {
        "400": "Invalid request",
        "401": "Not authenticated",
        "403": "Not allowed (admin-only)",
        "404": "Not found (or another account's)",
        "405": "Method not allowed",
        "409": "Conflict",
        "501": "Not offered by this deployment",
        "502": "The external S3 store failed the request",
    }
    return {
        s: {"description": texts[s], "content": {JSON: {"schema": ref("Error")}}} for s in ("400", "401", *statuses)
    }


def op(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    tag: str,
    parameters: list[dict[str, Any]] | None = None,
    request_body: dict[str, Any] | None = None,
    public: bool = False,
    error_codes: tuple[str, ...] = (),
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": {**responses, **errors(*error_codes)},
    }
    if parameters:
        out["parameters"] = parameters
    if request_body:
        out["requestBody"] = request_body
    if public:
        out["security"] = []
    return out


THROTTLED: dict[str, Any] = {
    "429": {
        "description": "Too many sign-in attempts from this address or for this access key",
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}},
        "content": {JSON: {"schema": ref("Throttling")}},
    }
}


def _paths() -> dict[str, Any]:
    model = path_param("name", "my-model")
    config = path_param("name", "my-endpoint-config")
    name = path_param("name", "my-endpoint")
    job = path_param("name", "my-compilation-job")
    host = path_param("host_id", "host-1")
    account = path_param("account_id", "123456789012")
    key = path_param("access_key_id", "AKNDEXAMPLE000000000")
    return {
        "/openapi.json": {
            "get": op(
                "getOpenApi",
                "This document",
                {"200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": ANY_OBJECT}}}},
                tag="meta",
                public=True,
            )
        },
        "/tokens": {
            "post": op(
                "createToken",
                "Issue a bearer token for an access key (sign with SigV4, or send the key pair in the body)",
                {**ok("Token", "201", "Created"), **THROTTLED},
                tag="identity",
                request_body={"required": False, "content": {JSON: {"schema": ref("CreateToken")}}},
                public=True,
                error_codes=("403",),
            )
        },
        "/whoami": {"get": op("whoAmI", "The calling account and key", ok("WhoAmI"), tag="identity")},
        "/models": {
            "get": op("listModels", "List models", ok("ModelList"), tag="models", parameters=LIST_PARAMS),
            "post": op(
                "createModel",
                "Create a model (one container), checked like CreateModel",
                ok("Model", "201", "Created"),
                tag="models",
                request_body=body("CreateModel"),
                error_codes=("409",),
            ),
        },
        "/models/{name}": {
            "parameters": [model],
            "get": op("getModel", "Describe a model", ok("Model"), tag="models", error_codes=("404",)),
            "delete": op(
                "deleteModel", "Delete a model", ok(None, "204", "Deleted"), tag="models", error_codes=("404",)
            ),
        },
        "/endpoint-configs": {
            "get": op(
                "listEndpointConfigs",
                "List endpoint configs",
                ok("EndpointConfigList"),
                tag="endpoint-configs",
                parameters=LIST_PARAMS,
            )
        },
        "/endpoint-configs/{name}": {
            "parameters": [config],
            "get": op(
                "getEndpointConfig",
                "Describe an endpoint config",
                ok("EndpointConfig"),
                tag="endpoint-configs",
                error_codes=("404",),
            ),
            "delete": op(
                "deleteEndpointConfig",
                "Delete an endpoint config",
                ok(None, "204", "Deleted"),
                tag="endpoint-configs",
                error_codes=("404",),
            ),
        },
        "/endpoints": {
            "get": op(
                "listEndpoints",
                "List endpoints",
                ok("EndpointList"),
                tag="endpoints",
                parameters=[
                    LIMIT,
                    NEXT,
                    SORT_BY_STATUS,
                    SORT_ORDER,
                    NAME_CONTAINS,
                    param("status", {"type": "string", "enum": [s.value for s in EndpointStatus]}),
                    CREATED_AFTER,
                    CREATED_BEFORE,
                ],
            ),
            "post": op(
                "createEndpoint",
                "Deploy a model: create a one-variant endpoint config and the endpoint",
                ok("Endpoint", "201", "Created"),
                tag="endpoints",
                request_body=body("CreateEndpoint"),
                error_codes=("404", "409"),
            ),
        },
        "/endpoints/{name}": {
            "parameters": [name],
            "get": op(
                "getEndpoint",
                "Describe an endpoint with its variants, replicas, hosts and NeuronCores",
                ok("Endpoint"),
                tag="endpoints",
                error_codes=("404",),
            ),
            "delete": op(
                "deleteEndpoint",
                "Delete an endpoint (it moves to Deleting, then disappears)",
                ok("EndpointDeleting", "202", "Accepted"),
                tag="endpoints",
                error_codes=("404",),
            ),
        },
        "/endpoints/{name}/capacity": {
            "parameters": [name],
            "post": op(
                "updateEndpointCapacity",
                "Change variants' instance counts and weights (UpdateEndpointWeightsAndCapacities)",
                ok("Endpoint", "202", "Accepted"),
                tag="endpoints",
                request_body=body("UpdateCapacity"),
                error_codes=("404",),
            ),
        },
        "/endpoints/{name}/update": {
            "parameters": [name],
            "post": op(
                "updateEndpoint",
                "Move the endpoint to another endpoint config (UpdateEndpoint, blue/green)",
                ok("Endpoint", "202", "Accepted"),
                tag="endpoints",
                request_body=body("UpdateEndpoint"),
                error_codes=("404",),
            ),
        },
        "/endpoints/{name}/replicas": {
            "parameters": [name],
            "get": op(
                "listEndpointReplicas",
                "The endpoint's replicas with their host, chips and NeuronCores",
                ok("ReplicaList"),
                tag="endpoints",
                error_codes=("404",),
            ),
        },
        "/endpoints/{name}/history": {
            "parameters": [name],
            "get": op(
                "getEndpointHistory",
                "The endpoint's timeline, derived from its current records",
                ok("History"),
                tag="endpoints",
                error_codes=("404",),
            ),
        },
        "/endpoints/{name}/logs": {
            "parameters": [name],
            "get": op(
                "getEndpointLogs",
                "Replica logs (pass the returned cursor back to follow)",
                ok("Logs"),
                tag="endpoints",
                parameters=[
                    param("replica_id", {"type": "integer", "minimum": 0}),
                    param("variant", {"type": "string", "maxLength": 63}),
                    param("lines", {"type": "integer", "minimum": 0, "maximum": 5000, "default": 200}),
                    param("cursor", S),
                ],
                error_codes=("404",),
            ),
        },
        "/endpoints/{name}/events": {
            "parameters": [name],
            "get": op(
                "getEndpointEvents",
                "The endpoint's status changes, newest first (kept after a delete until the name is reused)",
                ok("EndpointEvents"),
                tag="endpoints",
                parameters=[LIMIT, NEXT],
                error_codes=("404",),
            ),
        },
        "/endpoints/{name}/errors": {
            "parameters": [name],
            "get": op(
                "getEndpointErrors",
                "Recent failed invocations as the runtime answered them, newest first (flushed every ~10 s)",
                ok("InvocationErrors"),
                tag="endpoints",
                parameters=[LIMIT, NEXT],
                error_codes=("404",),
            ),
        },
        "/endpoints/{name}/metrics": {
            "parameters": [name],
            "get": op(
                "getEndpointMetrics",
                "A metric time series of the endpoint or one variant (available: false until recorded)",
                ok("MetricSeries"),
                tag="endpoints",
                parameters=[
                    param("metric", {"type": "string", "enum": list(admin.METRICS)}),
                    param("statistic", {"type": "string", "enum": list(admin.STATISTICS)}),
                    param("variant", {"type": "string", "maxLength": 63}),
                    param("start", {"type": "string", "format": "date-time"}),
                    param("end", {"type": "string", "format": "date-time"}),
                    param(
                        "period", {"type": "integer", "minimum": 10, "maximum": 86400, "multipleOf": 10, "default": 60}
                    ),
                ],
                error_codes=("404",),
            ),
        },
        "/endpoints/{name}/costs": {
            "parameters": [name],
            "get": op(
                "getEndpointCost",
                "Hourly cost, cost per million and the inf1/g4dn/c5 alternatives",
                ok("Cost"),
                tag="costs",
                error_codes=("404",),
            ),
        },
        "/costs": {
            "get": op(
                "listCosts",
                "Cost of every endpoint (paged) with the instance catalog",
                ok("CostList"),
                tag="costs",
                parameters=[LIMIT, NEXT, SORT_BY_STATUS, SORT_ORDER, NAME_CONTAINS],
            )
        },
        "/compilation-jobs": {
            "get": op(
                "listCompilationJobs",
                "List compilation jobs",
                ok("CompilationJobList"),
                tag="compilation-jobs",
                parameters=[
                    LIMIT,
                    NEXT,
                    SORT_BY_STATUS,
                    SORT_ORDER,
                    NAME_CONTAINS,
                    param("status", {"type": "string", "enum": [s.value for s in CompilationJobStatus]}),
                    CREATED_AFTER,
                    CREATED_BEFORE,
                ],
            )
        },
        "/compilation-jobs/{name}": {
            "parameters": [job],
            "get": op(
                "getCompilationJob",
                "Describe a compilation job with its compile-report headline",
                ok("CompilationJob"),
                tag="compilation-jobs",
                error_codes=("404",),
            ),
        },
        "/compilation-jobs/{name}/report": {
            "parameters": [job],
            "get": op(
                "getCompileReport",
                "The whole compile report (emulated) and its headline",
                ok("CompileReport"),
                tag="compilation-jobs",
                error_codes=("404",),
            ),
        },
        "/compilation-jobs/{name}/log": {
            "parameters": [job],
            "get": op(
                "getCompileLog",
                "The compile log in torch-neuron's line formats",
                ok("CompileLog"),
                tag="compilation-jobs",
                error_codes=("404",),
            ),
        },
        "/compilation-jobs/{name}/projections": {
            "parameters": [job],
            "get": op(
                "getCompileProjections",
                "Projected latency, throughput and cost per instance type beside the CPU measurement",
                ok("CompileProjections"),
                tag="compilation-jobs",
                error_codes=("404",),
            ),
        },
        "/hosts": {
            "get": op(
                "listHosts",
                "Hosts with their emulated chips and NeuronCores (detail=true adds chips and replicas)",
                ok("HostList"),
                tag="fleet",
                parameters=[LIMIT, NEXT, param("detail", {"type": "string", "enum": ["true", "false"]})],
            )
        },
        "/hosts/{host_id}": {
            "parameters": [host],
            "get": op("getHost", "One host in detail", ok("Host"), tag="fleet", error_codes=("404",)),
        },
        "/hosts/{host_id}/neuron-ls": {
            "parameters": [host],
            "get": op(
                "getNeuronLs",
                "neuron-ls -j for one host (emulated)",
                ok("NeuronLs"),
                tag="fleet",
                error_codes=("404",),
            ),
        },
        "/hosts/{host_id}/neuron-monitor": {
            "parameters": [host],
            "get": op(
                "getNeuronMonitor",
                "One neuron-monitor JSON report for a host (emulated; latencies in seconds)",
                ok("NeuronMonitorReport"),
                tag="fleet",
                parameters=[
                    param(
                        "period",
                        {"type": "integer", "minimum": 1, "maximum": 3600, "default": 60},
                        doc="Seconds of recorded metrics the report covers.",
                    )
                ],
                error_codes=("400", "404"),
            ),
        },
        "/instance-types": {
            "get": op(
                "listInstanceTypes",
                "The instance catalog with hardware and list prices (basis and date)",
                ok("InstanceTypeList"),
                tag="costs",
                parameters=[param("family", {"type": "string", "enum": ["inf1", "g4dn", "c5"]})],
            )
        },
        "/artifacts": {
            "get": op(
                "listBuckets",
                "The account's buckets in the embedded store",
                ok("BucketList"),
                tag="artifacts",
                parameters=[LIMIT, NEXT],
                error_codes=("502",),
            )
        },
        "/artifacts/{bucket}": {
            "parameters": [path_param("bucket", "nd-artifacts-123456789012")],
            "get": op(
                "listArtifacts",
                "List objects of one of the account's buckets",
                ok("ArtifactList"),
                tag="artifacts",
                parameters=[
                    param("prefix", {"type": "string", "maxLength": 1024}),
                    param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}),
                    NEXT,
                ],
                error_codes=("404", "502"),
            ),
        },
        "/artifacts/{bucket}/object": {
            "parameters": [
                path_param("bucket", "nd-artifacts-123456789012"),
                {**param("key", {"type": "string", "minLength": 1}, required=True), "example": "models/model.tar.gz"},
            ],
            "get": op(
                "downloadArtifact",
                "Download an object",
                {
                    "200": {
                        "description": "The object's bytes",
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    }
                },
                tag="artifacts",
                error_codes=("404", "502"),
            ),
            "put": op(
                "uploadArtifact",
                "Upload an object (the bucket is created when it does not exist)",
                ok("Artifact", "201", "Created"),
                tag="artifacts",
                request_body={
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                },
                error_codes=("404", "409", "502"),
            ),
        },
        "/accounts": {
            "get": op(
                "listAccounts",
                "List accounts (admin)",
                ok("AccountList"),
                tag="accounts",
                parameters=[LIMIT, NEXT],
                error_codes=("403",),
            ),
            "post": op(
                "createAccount",
                "Create an account with one access key; the secret is shown once (admin)",
                ok("NewAccount", "201", "Created"),
                tag="accounts",
                request_body=body("CreateAccount"),
                error_codes=("403",),
            ),
        },
        "/accounts/{account_id}": {
            "parameters": [account],
            "get": op(
                "getAccount",
                "An account and its keys (admin)",
                ok("AccountDetail"),
                tag="accounts",
                error_codes=("403", "404"),
            ),
        },
        "/accounts/{account_id}/access-keys": {
            "parameters": [account],
            "get": op(
                "listAccountKeys",
                "An account's access keys (admin)",
                ok("AccessKeyList"),
                tag="accounts",
                parameters=[LIMIT, NEXT],
                error_codes=("403", "404"),
            ),
            "post": op(
                "createAccessKey",
                "Add an access key; the secret is shown once (admin)",
                ok("AccessKey", "201", "Created"),
                tag="accounts",
                error_codes=("403", "404"),
            ),
        },
        "/access-keys": {
            "get": op(
                "listAccessKeys",
                "Every access key (admin)",
                ok("AccessKeyList"),
                tag="accounts",
                parameters=[LIMIT, NEXT],
                error_codes=("403",),
            )
        },
        "/access-keys/{access_key_id}/disable": {
            "parameters": [key],
            "post": op(
                "disableAccessKey",
                "Disable a key; its tokens stop working too (admin)",
                ok("AccessKey"),
                tag="accounts",
                error_codes=("403", "404", "409"),
            ),
        },
        "/access-keys/{access_key_id}/enable": {
            "parameters": [key],
            "post": op(
                "enableAccessKey",
                "Enable a key (admin)",
                ok("AccessKey"),
                tag="accounts",
                error_codes=("403", "404", "409"),
            ),
        },
        "/access-keys/{access_key_id}/rotate": {
            "parameters": [key],
            "post": op(
                "rotateAccessKey",
                "Issue a new key for the same account and disable the old one (admin)",
                ok("RotatedKey", "201", "Created"),
                tag="accounts",
                error_codes=("403", "404", "409"),
            ),
        },
        "/access-keys/{access_key_id}/revoke-tokens": {
            "parameters": [key],
            "post": op(
                "revokeAccessKeyTokens",
                "Revoke every token and console session issued so far for a key; the key stays active (admin)",
                ok("RevokedKeyTokens"),
                tag="accounts",
                error_codes=("403", "404"),
            ),
        },
        # Last: called without a body it revokes the caller's own token, which ends a fuzzing run's token.
        "/tokens/revoke": {
            "post": op(
                "revokeToken",
                "Revoke a token before it expires: the presented bearer token, or 'token' of your account "
                "(an admin: any account)",
                ok("RevokedToken"),
                tag="identity",
                request_body={"required": False, "content": {JSON: {"schema": ref("RevokeToken")}}},
                error_codes=("403",),
            )
        },
    }


@functools.cache
def _document_template() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "neurondock admin API",
            "version": VERSION,
            "description": (
                "Operator API of neurondock: models, endpoint configs, endpoints with their replicas and "
                "emulated NeuronCores, compilation jobs, hosts, costs, logs, artifacts and accounts. "
                "Authenticate with SigV4 (any service name, the account's access key) or with "
                '\'Authorization: Bearer <token>\' from POST /tokens. Errors are {"error": {"code", "message"}}. '
                "Everything about Inferentia is emulated or projected and says so."
            ),
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A token from POST /tokens"},
                "sigv4": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "AWS Signature Version 4 with a neurondock access key",
                },
            },
        },
        "security": [{"bearer": []}, {"sigv4": []}],
    }


def document(public_url: str) -> dict[str, Any]:
    """Return the OpenAPI document with the server URL of this deployment."""
    doc = copy.deepcopy(_document_template())
    doc["servers"] = [{"url": f"{public_url.rstrip('/')}/api/v1"}]
    return doc
