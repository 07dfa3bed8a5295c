"""The REST admin API at ``/api/v1``: JSON over HTTP, SigV4 or bearer-token authentication, OpenAPI 3.

Every route authenticates (except ``/openapi.json`` and ``POST /tokens``, which checks credentials
itself), acts as the caller's account through the same services as the SageMaker API, and answers
errors as ``{"error": {"code", "message"}}``. The document at ``/api/v1/openapi.json`` lists every
route; a test checks that it matches what the server does.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from neurondock_platform.api import context
from neurondock_platform.api.admin import _accounts, _artifacts, _endpoints, _fleet, _models, openapi
from neurondock_platform.api.admin._auth import authenticate_request
from neurondock_platform.api.admin._errors import BadRequest, error_response, json_body, render
from neurondock_platform.services.credentials import CredentialCache

NAME = "admin_api"
PREFIX = "/api/v1"
_PUBLIC = {f"{NAME}.openapi_document", f"{NAME}.create_token", f"{NAME}.unknown_route"}
_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]

__all__ = ["NAME", "PREFIX", "make_blueprint"]


def make_blueprint(credentials: CredentialCache) -> Blueprint:
    """Return the admin API blueprint (mount it at ``/api/v1``)."""
    bp = Blueprint(NAME, __name__)

    @bp.before_request
    def authenticate() -> None:
        for value in (request.view_args or {}).values():
            # PostgreSQL refuses NUL in text, and no name, id or key can hold one.
            if isinstance(value, str) and "\x00" in value:
                raise BadRequest("Path parameters must not contain NUL characters.")
        if request.endpoint not in _PUBLIC:
            authenticate_request()

    @bp.after_request
    def no_store(response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @bp.get("/openapi.json")
    def openapi_document() -> Response:
        return json_body(openapi.document(context.settings().public_url))

    _models.register(bp)
    _endpoints.register(bp)
    _fleet.register(bp)
    _accounts.register(bp)
    _artifacts.register(bp)

    @bp.route("/", defaults={"rest": ""}, methods=_METHODS)
    @bp.route("/<path:rest>", methods=_METHODS)
    def unknown_route(rest: str) -> Response:
        # Flask hands routing errors to the app's handlers, not a blueprint's: answer them here.
        adapter = current_app.url_map.bind("localhost")
        allowed = []
        for method in _METHODS:
            if method == request.method:
                continue
            try:
                endpoint, _ = adapter.match(request.path, method=method)
            except (NotFound, MethodNotAllowed):
                continue
            if endpoint != f"{NAME}.unknown_route":
                allowed.append(method)
        if allowed:
            response = error_response("MethodNotAllowed", f"{request.method} is not allowed on {request.path}.", 405)
            response.headers["Allow"] = ", ".join(allowed)
            return response
        return error_response("NotFound", f"No admin API route {request.path}; see {PREFIX}/openapi.json.", 404)

    @bp.errorhandler(Exception)
    def handle_error(err: Exception) -> Response:
        context.db().rollback()
        return render(err)

    return bp
