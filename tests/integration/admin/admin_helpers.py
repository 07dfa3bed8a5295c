"""Helpers of the admin-API tests: signed calls, an OpenAPI response validator, fake fleet rows."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jsonschema import Draft202012Validator
from tests.conftest import ACCESS_KEY, SECRET_KEY, sign

DATA = Path(__file__).parent / "data"
PREFIX = "/api/v1"


@cache
def spec() -> dict[str, Any]:
    from neurondock_platform.api.admin import openapi

    return openapi.document("http://localhost")


def template_for(path: str, method: str) -> str | None:
    """Return the documented path template matching a concrete path (without the /api/v1 prefix)."""
    for template, item in spec()["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return template
    return None


def validate_response(method: str, path: str, status: int, body: bytes, content_type: str) -> None:
    """Assert the response is documented for this route and status and matches its schema."""
    template = template_for(path, method)
    assert template is not None, f"{method} {path} is not in the OpenAPI document"
    operation = spec()["paths"][template][method.lower()]
    documented = operation["responses"].get(str(status))
    assert documented is not None, f"{method} {template} answered {status}, which is not documented"
    content = documented.get("content") or {}
    if "application/json" in content:
        assert content_type.startswith("application/json"), content_type
        schema = {**content["application/json"]["schema"], "components": spec()["components"]}
        Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(json.loads(body))


class AdminClient:
    """Call the admin API through the Flask test client, signed with SigV4 or a bearer token."""

    def __init__(self, client: Any, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> None:
        self.client = client
        self.access_key = access_key
        self.secret_key = secret_key
        self.token: str | None = None

    def as_key(self, access_key: str, secret_key: str) -> AdminClient:
        return AdminClient(self.client, access_key, secret_key)

    def with_token(self, token: str) -> AdminClient:
        other = AdminClient(self.client, self.access_key, self.secret_key)
        other.token = token
        return other

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: str = "sigv4",
        validate: bool = True,
    ) -> Any:
        qs = urlencode(query or {})
        body = data if data is not None else (json.dumps(json_body).encode() if json_body is not None else b"")
        hdrs = dict(headers or {})
        if json_body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        url = f"http://localhost{PREFIX}{path}" + (f"?{qs}" if qs else "")
        if auth == "sigv4" and self.token is None:
            hdrs = sign(
                method,
                url,
                service="neurondock",
                body=body,
                headers=hdrs,
                access_key=self.access_key,
                secret_key=self.secret_key,
            )
        elif self.token is not None:
            hdrs["Authorization"] = f"Bearer {self.token}"
        resp = self.client.open(PREFIX + path, method=method, query_string=qs, data=body, headers=hdrs)
        if validate:
            validate_response(method, path, resp.status_code, resp.data, resp.content_type or "")
        return resp

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json_body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json_body=json_body if json_body is not None else {}, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        resp = self.request(method, path, **kw)
        assert resp.status_code == status, (method, path, resp.status_code, resp.get_data(as_text=True))
        return resp.get_json() if resp.content_type == "application/json" else resp


def compile_report() -> dict[str, Any]:
    """A real report of the emulated compiler (an embedding falls back to the CPU)."""
    data: dict[str, Any] = json.loads((DATA / "compile_report_embedding.json").read_text())
    return data


def compile_log() -> str:
    return (DATA / "compile_embedding.log").read_text()
