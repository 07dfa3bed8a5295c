"""Run Alembic migrations programmatically (settings from pyproject's [tool.alembic])."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from neurondock_platform.config import Settings


def _project_root() -> Path:
    # platform/neurondock_platform/migrate.py → the repository root holding pyproject.toml.
    return Path(__file__).resolve().parents[2]


def _script_location() -> Path:
    shipped = Path(__file__).resolve().parent / "_migrations"
    return shipped if shipped.is_dir() else _project_root() / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config targeting ``database_url`` (pyproject's [tool.alembic] when in a checkout)."""
    root = _project_root()
    pyproject = root / "pyproject.toml"
    cfg = Config(toml_file=str(pyproject)) if pyproject.exists() else Config()
    cfg.set_main_option("script_location", str(_script_location()))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    if settings.database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.database_url), revision)
