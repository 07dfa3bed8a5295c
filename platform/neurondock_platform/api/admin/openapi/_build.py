"""The building blocks of the admin API's OpenAPI document: schema shorthands and operation helpers."""

from __future__ import annotations

from typing import Any

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
