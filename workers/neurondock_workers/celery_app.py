"""The Celery app of the workers, configured from Settings (never from import-time environment)."""

from __future__ import annotations

from celery import Celery

from neurondock_platform.broker import celery_config
from neurondock_platform.config import Settings

app = Celery("neurondock", include=["neurondock_workers.tasks"])


def configure(settings: Settings) -> Celery:
    """Point the app at the settings' broker and remember the settings for the tasks."""
    app.conf.update(celery_config(settings.broker_url, settings.queue))
    app.conf.neurondock_settings = settings
    return app
