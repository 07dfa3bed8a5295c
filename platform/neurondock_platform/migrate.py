"""Run Alembic migrations programmatically (settings from pyproject's [tool.alembic])."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from neurondock_platform.config import Settings


def _project_root() -> Path:
    # platform/neurondock_platform/migrate.py → the repository root holding pyproject.toml.
    return Path(__file__).resolve().parents[2]


def alembic_config(database_url: str) -> Config:
    """An Alembic config that reads pyproject.toml and targets ``database_url``."""
    root = _project_root()
    cfg = Config(toml_file=str(root / "pyproject.toml"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    if settings.database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.database_url), revision)
