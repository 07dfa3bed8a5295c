"""The embedded S3-compatible store run on its own (``neurondock store``), apart from any API process.

A fleet with several API processes needs one store they and every worker host share; this is the
same store the API mounts at ``/s3`` (same SigV4 keys from the database, same rest-xml), served at
``<url>/s3`` by its own process with its objects in its own data dir. Point
``NEURONDOCK_S3_ENDPOINT_URL`` of every other process at it. See docs/scaling.md ("Topology").
"""

from __future__ import annotations

from a2wsgi import WSGIMiddleware
from flask import Flask, Response

from neurondock_platform.api.s3 import make_blueprint
from neurondock_platform.app import base_app
from neurondock_platform.config import Settings
from neurondock_platform.db import make_engine, make_sessionmaker


def create_store_app(settings: Settings) -> Flask:
    """A Flask app serving only the S3 store (at ``/s3``) and ``/ping``."""
    app, credentials = base_app("neurondock_store", settings, make_sessionmaker(make_engine(settings.database_url)))
    app.register_blueprint(make_blueprint(credentials), url_prefix="/s3")

    @app.get("/ping")
    def ping() -> Response:
        return Response("", status=200)

    return app


def serve_store(settings: Settings) -> None:
    """Serve the store on ``settings.host:settings.port`` until SIGINT/SIGTERM."""
    from neurondock_platform.server import run_server

    app = WSGIMiddleware(create_store_app(settings), workers=16)  # type: ignore[arg-type]
    run_server(app, settings, lifespan="off")
