"""Celery broker settings shared by the platform (which sends) and the workers (which consume)."""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as _SQLAlchemyTransport

EMBEDDED_ALIAS = "ndsqla"


class EmbeddedTransport(_SQLAlchemyTransport):
    """kombu's SQLAlchemy transport, polled every 50 ms instead of every second.

    Its ``polling_interval`` cannot be set through transport options (they are passed on to
    ``create_engine``), and a one-second poll would dominate CreateEndpoint → InService.
    """

    polling_interval = 0.05


def register() -> None:
    """Make the embedded transport resolvable by kombu in this process."""
    TRANSPORT_ALIASES.setdefault(EMBEDDED_ALIAS, f"{__name__}:EmbeddedTransport")


def resolve_broker_url(url: str) -> str:
    """Map the documented ``sqla+sqlite://`` URL onto the faster embedded transport."""
    register()
    if url.startswith("sqla+sqlite"):
        return EMBEDDED_ALIAS + url[len("sqla") :]
    return url


def transport_options(url: str) -> dict[str, Any]:
    """Transport options: Redis must keep a task invisible longer than the longest compile."""
    if url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": 4 * 3600}
    return {}


def celery_config(broker_url: str, queue: str = "neurondock") -> dict[str, Any]:
    """Celery settings common to every neurondock process."""
    return {
        "broker_url": resolve_broker_url(broker_url),
        "task_default_queue": queue,
        "broker_transport_options": transport_options(broker_url),
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }
