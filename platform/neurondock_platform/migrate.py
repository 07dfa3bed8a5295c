"""Run Alembic migrations programmatically (settings from pyproject's [tool.alembic]).

A database that holds none of neurondock's tables is created from the models in one transaction and
stamped at the newest revision instead of replaying every revision: the first `up` on a new data directory waits
for this before anything can query (docs/supervision.md, "Start-up: the database gate"), and replaying
13 revisions, with Alembic and its templating imported for them, took about half of that child's time
(docs/measured.md). tests/integration/core/test_migrations.py proves the two schemas equal and that
``head_revision`` finds Alembic's head.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from neurondock_platform.config import Settings

if TYPE_CHECKING:
    from alembic.config import Config

# A revision file's own id and its parent's, as Alembic's templates write them (`revision: str = "0013"`).
_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
# Alembic's own bookkeeping table, as `alembic stamp` creates it.
VERSION_TABLE = "alembic_version"


def _project_root() -> Path:
    # platform/neurondock_platform/migrate.py → the repository root holding pyproject.toml.
    return Path(__file__).resolve().parents[2]


def _script_location() -> Path:
    shipped = Path(__file__).resolve().parent / "_migrations"
    return shipped if shipped.is_dir() else _project_root() / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config targeting ``database_url`` (pyproject's [tool.alembic] when in a checkout)."""
    from alembic.config import Config

    root = _project_root()
    pyproject = root / "pyproject.toml"
    cfg = Config(toml_file=str(pyproject)) if pyproject.exists() else Config()
    cfg.set_main_option("script_location", str(_script_location()))
    cfg.attributes["database_url"] = database_url
    return cfg


def head_revision() -> str:
    """The newest revision in the migrations directory, read from its files without importing Alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_script_location() / "versions").glob("*.py"):
        fields = {match[1]: match[2] for match in _REVISION_LINE.finditer(path.read_text())}
        if "revision" in fields:
            revisions.add(fields["revision"])
            parents.add(fields.get("down_revision", ""))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads, not one: {sorted(heads)}")
    return heads.pop()


def create_if_new(database_url: str) -> bool:
    """Create the models' schema at the newest revision when the database holds none of it; False (untouched) otherwise.

    "None of it" means no table of the models' and no Alembic version table: a database with any of
    them is upgraded by Alembic, revision by revision, as before. One transaction, so a crash leaves
    the database new (on SQLite an explicit ``BEGIN IMMEDIATE``: its driver would commit each CREATE
    on its own, and the write lock taken first keeps a second migrator out until the stamp is in).
    """
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, inspect

    from neurondock_platform import models  # noqa: F401  (registers every table on Base.metadata)
    from neurondock_platform.db import Base, make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            existing = set(inspect(conn).get_table_names())
            if existing & (set(Base.metadata.tables) | {VERSION_TABLE}):
                conn.rollback()
                return False
            Base.metadata.create_all(conn, checkfirst=False)
            version = Table(
                VERSION_TABLE,
                MetaData(),
                Column("version_num", String(32), nullable=False),
                PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
            )
            version.create(conn)
            conn.execute(version.insert().values(version_num=head_revision()))
            conn.commit()
        return True
    finally:
        engine.dispose()


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (at head, a new database is created from the models at once)."""
    if settings.database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if revision == "head" and create_if_new(settings.database_url):
        return
    from alembic import command

    command.upgrade(alembic_config(settings.database_url), revision)


def prepare_database(settings: Settings) -> None:
    """Apply migrations and make sure the root account and its key exist (safe on every start)."""
    from neurondock_platform.db import make_engine, make_sessionmaker, session_scope
    from neurondock_platform.services.accounts import ensure_root_account, root_identity

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings)
    engine = make_engine(settings.database_url)
    with session_scope(make_sessionmaker(engine)) as session:
        ensure_root_account(session, root_identity(settings))
    engine.dispose()


def prepare_in_fork(settings: Settings, fd: int) -> int:
    """Import what ``prepare_database`` needs, then run it in a fork that tells ``up`` on ``fd``; return its pid.

    The API calls it first thing: the fork shares these imports (SQLAlchemy, the models, the accounts
    service), prepares while the API imports the rest, and is joined before the API serves
    (database_gate.joined).
    """
    from neurondock_platform import database_gate, db, models  # noqa: F401  (for the fork to share)
    from neurondock_platform.services import accounts  # noqa: F401

    return database_gate.prepare_in_fork(fd, lambda: prepare_database(settings))
