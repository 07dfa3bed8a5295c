"""The operations of the admin API's OpenAPI document, one entry per route of the blueprint."""

from __future__ import annotations

from typing import Any

from neurondock_platform.api.admin.openapi._build import (
    ANY_OBJECT,
    CREATED_AFTER,
    CREATED_BEFORE,
    JSON,
    LIMIT,
    LIST_PARAMS,
    NAME_CONTAINS,
    NEXT,
    SORT_BY_STATUS,
    SORT_ORDER,
    THROTTLED,
    S,
    body,
    ok,
    op,
    param,
    path_param,
    ref,
)
from neurondock_platform.models import CompilationJobStatus, EndpointStatus
from neurondock_platform.services import metric_series


def read(parameter: dict[str, Any], operation_id: str, summary: str, schema: str, tag: str) -> dict[str, Any]:
    """A path under one named resource with a single GET that answers ``schema`` or 404."""
    return {
        "parameters": [parameter],
        "get": op(operation_id, summary, ok(schema), tag=tag, error_codes=("404",)),
    }


def paths() -> dict[str, Any]:
    """Return ``paths``: one operation per route of the admin blueprint."""
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
        "/endpoints/{name}/replicas": read(
            name,
            "listEndpointReplicas",
            "The endpoint's replicas with their host, chips and NeuronCores",
            "ReplicaList",
            "endpoints",
        ),
        "/endpoints/{name}/history": read(
            name,
            "getEndpointHistory",
            "The endpoint's timeline, derived from its current records",
            "History",
            "endpoints",
        ),
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
                    param("metric", {"type": "string", "enum": list(metric_series.METRICS)}),
                    param("statistic", {"type": "string", "enum": list(metric_series.STATISTICS)}),
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
        "/endpoints/{name}/costs": read(
            name, "getEndpointCost", "Hourly cost, cost per million and the inf1/g4dn/c5 alternatives", "Cost", "costs"
        ),
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
        "/compilation-jobs/{name}": read(
            job,
            "getCompilationJob",
            "Describe a compilation job with its compile-report headline",
            "CompilationJob",
            "compilation-jobs",
        ),
        "/compilation-jobs/{name}/report": read(
            job,
            "getCompileReport",
            "The whole compile report (emulated) and its headline",
            "CompileReport",
            "compilation-jobs",
        ),
        "/compilation-jobs/{name}/log": read(
            job, "getCompileLog", "The compile log in torch-neuron's line formats", "CompileLog", "compilation-jobs"
        ),
        "/compilation-jobs/{name}/projections": read(
            job,
            "getCompileProjections",
            "Projected latency, throughput and cost per instance type beside the CPU measurement",
            "CompileProjections",
            "compilation-jobs",
        ),
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
        "/hosts/{host_id}/neuron-ls": read(
            host, "getNeuronLs", "neuron-ls -j for one host (emulated)", "NeuronLs", "fleet"
        ),
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
        "/accounts/{account_id}/store-access": {
            "parameters": [account],
            "get": op(
                "getStoreAccess",
                "What the account reaches in an external S3 store: its own store credentials or mapped buckets (admin)",
                ok("StoreAccess"),
                tag="accounts",
                error_codes=("403", "404"),
            ),
            "put": op(
                "setStoreAccess",
                "Set the account's external store credentials (both or neither) and its mapped buckets (admin)",
                ok("StoreAccess"),
                tag="accounts",
                request_body=body("SetStoreAccess"),
                error_codes=("403", "404", "409"),
            ),
            "delete": op(
                "clearStoreAccess",
                "Remove the account's store credentials and mapped buckets (admin)",
                ok("StoreAccess"),
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
