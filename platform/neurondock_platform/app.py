"""The Flask application factory for the control plane (SageMaker, CloudWatch and Application Auto
Scaling on ``POST /``, STS, the S3 store, admin)."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import HTTPException

from neurondock_platform import catalog, dispatch, sigv4, wakeup
from neurondock_platform.api import auth, autoscaling, cloudwatch, context, sts
from neurondock_platform.api.sagemaker import OPERATIONS, dispatch_target, json_response
from neurondock_platform.api.sagemaker import bp as sagemaker_bp
from neurondock_platform.config import Settings
from neurondock_platform.db import make_engine, make_sessionmaker
from neurondock_platform.errors import PlatformError
from neurondock_platform.services.credentials import CredentialCache

log = logging.getLogger(__name__)


def base_app(name: str, settings: Settings, session_factory: sessionmaker[Session]) -> tuple[Flask, CredentialCache]:
    """A Flask app carrying the platform state, one credential cache and one SigV4 verifier.

    The control plane builds on it, and so does the standalone S3 store (``store.py``).
    """
    app = Flask(name)
    app.config.update(MAX_CONTENT_LENGTH=None, NEURONDOCK_SETTINGS=settings)
    app.extensions[context.EXTENSION] = context.PlatformState(settings=settings, session_factory=session_factory)
    # One credential cache and one verifier per process, shared with the data plane (server.py).
    credentials = CredentialCache(session_factory)
    app.extensions["neurondock_credentials"] = credentials
    app.extensions[auth.VERIFIER_EXTENSION] = sigv4.Verifier(
        credentials, region=settings.region, skew_seconds=settings.clock_skew_seconds
    )
    app.teardown_appcontext(context.close_db)
    return app, credentials


def create_app(
    settings: Settings | None = None,
    *,
    session_factory: sessionmaker[Session] | None = None,
    dispatcher: dispatch.Dispatcher | None = None,
) -> Flask:
    """Build the control-plane app; tests pass their own session factory and dispatcher."""
    settings = settings or Settings.from_env()
    if session_factory is None:
        session_factory = make_sessionmaker(make_engine(settings.database_url))
    if dispatcher is None:
        dispatcher = dispatch.CeleryDispatcher(settings.broker_url, settings.queue)
    dispatch.install(session_factory, dispatcher)
    # Replica rows an API verb changes wake this host's agent and routing table (docs/supervision.md).
    wakeup.install(session_factory, settings.data_dir)

    # SageMaker's model is kept only for the operations served here: ~4 MB less for good (docs/measured.md).
    catalog.serve_only("sagemaker", OPERATIONS)
    app, credentials = base_app("neurondock_platform", settings, session_factory)

    @app.post("/")
    def aws_api() -> Response:
        # One front door for every AWS JSON service (by X-Amz-Target) and the Query ones (by body).
        target = request.headers.get("X-Amz-Target", "")
        if target.startswith(cloudwatch.TARGET_PREFIX):
            return cloudwatch.handle_json(target, lambda: auth.authenticate(request, services={auth.MONITORING}))
        if target.startswith(autoscaling.TARGET_PREFIX):
            return autoscaling.handle(target, lambda: auth.authenticate(request, services={auth.AUTOSCALING}))
        scoped = auth.scoped_service(request) if not target else None
        if scoped == auth.MONITORING:
            # CloudWatch's Query protocol (older SDKs and CLIs): a form body, no target.
            return cloudwatch.handle_query(lambda: auth.authenticate(request, services={auth.MONITORING}))
        if scoped == auth.STS:
            # STS's query protocol (no target) is served at / too, as by boto3 with one endpoint URL.
            return sts_api()
        auth.authenticate(request, services={auth.SAGEMAKER})
        return dispatch_target(target)

    @app.post("/sts")
    def sts_api() -> Response:
        try:
            auth.authenticate(request, services={auth.STS})
        except PlatformError as err:
            return sts.error_response(err)
        return sts.handle()

    @app.get("/ping")
    def ping() -> Response:
        return Response("", status=200)

    app.register_blueprint(sagemaker_bp)
    app.register_blueprint(cloudwatch.bp)
    _register_optional_blueprints(app, credentials)

    @app.errorhandler(PlatformError)
    def platform_error(err: PlatformError) -> Response:
        return json_response(err.body(), status=err.http_status)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        code = err.code or 500
        return json_response({"__type": err.name.replace(" ", ""), "message": err.description or ""}, status=code)

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"__type": "InternalFailure", "message": "An internal error occurred."}, status=500)

    return app


def _register_optional_blueprints(app: Flask, credentials: CredentialCache) -> None:
    # The S3 store and the admin API are separate blueprints with their own error rendering.
    from neurondock_platform.api.s3 import make_blueprint as make_s3_blueprint

    app.register_blueprint(make_s3_blueprint(credentials), url_prefix="/s3")

    from neurondock_platform.api.admin import make_blueprint as make_admin_blueprint
    from neurondock_platform.console import make_blueprint as make_console_blueprint

    app.register_blueprint(make_admin_blueprint(credentials), url_prefix="/api/v1")
    app.register_blueprint(make_console_blueprint(credentials), url_prefix="/console")
