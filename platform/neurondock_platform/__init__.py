"""neurondock control plane: Flask app factory, settings, persistence, services and wire protocols."""

from __future__ import annotations

# Not imported from typing: the watch, which imports this package, imports nothing else that needs it.
TYPE_CHECKING = False

__version__ = "0.1.0"

if TYPE_CHECKING:
    from typing import Any

    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """Build the control-plane Flask app (see ``neurondock_platform.app.create_app``)."""
    from neurondock_platform.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["__version__", "create_app"]
