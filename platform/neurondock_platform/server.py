"""The HTTP front: uvicorn serving the runtime fast path (ASGI) and the Flask control plane (WSGI)."""

from __future__ import annotations

import logging
from typing import Any

from a2wsgi import WSGIMiddleware
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform import database_gate, dispatch
from neurondock_platform.api.admin._tokens import revocation_cache_of
from neurondock_platform.api.auth import VERIFIER_EXTENSION
from neurondock_platform.app import create_app
from neurondock_platform.config import Settings
from neurondock_platform.dataplane import async_invocations, oip, runtime
from neurondock_platform.dataplane.async_invocations import AsyncInvocationsApp
from neurondock_platform.dataplane.auth import default_authenticator, metrics_authenticator
from neurondock_platform.dataplane.oip import OipApp
from neurondock_platform.dataplane.runtime import Receive, RuntimeApp, Scope, Send
from neurondock_platform.db import make_engine, make_sessionmaker

log = logging.getLogger(__name__)


class NeurondockASGI:
    """Serve the data plane on the event loop and everything else through Flask.

    ``/endpoints/*`` (sagemaker-runtime) and ``/v2`` and ``/v2/*`` (Open Inference Protocol; both SigV4
    or an admin API token) and ``/metrics`` (Prometheus; likewise) run on the loop; the rest goes to
    the WSGI app.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session_factory: sessionmaker[Session] | None = None,
        dispatcher: dispatch.Dispatcher | None = None,
        wsgi_threads: int = 16,
    ) -> None:
        self.settings = settings
        factory = session_factory or make_sessionmaker(make_engine(settings.database_url))
        self.flask_app = create_app(settings, session_factory=factory, dispatcher=dispatcher)
        self.wsgi = WSGIMiddleware(self.flask_app, workers=wsgi_threads)  # type: ignore[arg-type]
        # The data plane verifies with the control plane's verifier and credential cache (one per process).
        verifier = self.flask_app.extensions[VERIFIER_EXTENSION]
        revocations = revocation_cache_of(self.flask_app)
        self.runtime = RuntimeApp(
            settings,
            factory,
            verifier,
            authenticator=default_authenticator(verifier, revocations),
            metrics_authenticator=metrics_authenticator(verifier, revocations),
            flush_interval=settings.metrics_flush_seconds,
        )
        self.oip = OipApp(self.runtime)
        self.async_invocations = AsyncInvocationsApp(self.runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http" and async_invocations.matches(scope["path"]):
            await self.async_invocations(scope, receive, send)
        elif kind == "http" and runtime.matches(scope["path"]):
            await self.runtime(scope, receive, send)
        elif kind == "http" and oip.matches(scope["path"]):
            await self.oip(scope, receive, send)
        elif kind == "http" and scope["path"] == "/metrics":
            await self.runtime.serve_metrics(scope, receive, send)
        else:
            await self.wsgi(scope, receive, send)  # type: ignore[arg-type]

    def direct(self, path: str) -> Any:
        """The app serving a POST to ``path`` without uvicorn's cycle (``uvicorn_server.DirectProtocol``), or None.

        InvokeEndpoint's ``/endpoints/<name>/invocations``; its response stream, asynchronous
        invocations and everything else keep uvicorn's cycle.
        """
        return self.runtime if runtime.matches(path) and path.endswith("/invocations") else None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.runtime.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> Any:
    """A uvicorn config with the serving choices neurondock relies on."""
    import uvicorn

    from neurondock_platform.uvicorn_server import DirectProtocol

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "lifespan": "on",
        "log_level": "warning",
        "access_log": False,
        # The address a request came from is the connection's (a reverse proxy's own, behind one:
        # api/admin/_tokens.client_address); and no Server header. Both are per-request work
        # (docs/measured.md, "The API's CPU per answer").
        "proxy_headers": False,
        "server_header": False,
        "timeout_keep_alive": 75,
        # boto3 sends Expect: 100-continue on uploads; uvicorn answers it when the app reads the body.
        # httptools', sending a response's head and body in one write and serving InvokeEndpoint's
        # plainest requests beside uvicorn's request-response cycle (uvicorn_server.DirectProtocol).
        "http": DirectProtocol,
        "loop": "uvloop",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def run_server(app: Any, settings: Settings, **overrides: Any) -> None:
    """Serve ``app`` with neurondock's uvicorn choices until SIGINT/SIGTERM."""
    from neurondock_platform.uvicorn_server import QuietServer

    QuietServer(uvicorn_config(app, settings, **overrides)).run()


def serve(settings: Settings, *, gate: int | None = None, preparing: int | None = None) -> None:
    """Serve the platform on ``settings.host:settings.port`` until SIGINT/SIGTERM.

    With ``gate`` (``up`` starts the API beside its migrations) the app is built first and the server
    starts once the database is ready; with ``preparing`` (the pid of the fork preparing the database,
    ``migrate.prepare_in_fork``) it is built, then the server starts once that fork succeeded.
    """
    # uvicorn configures only its own loggers; without this the platform's warnings and tracebacks
    # reach stderr through logging's last-resort handler, with no time, level or logger name.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = NeurondockASGI(settings)
    if preparing is not None:
        database_gate.joined(preparing)
    database_gate.wait(gate)
    run_server(app, settings)
