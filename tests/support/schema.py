"""Databases that already hold neurondock's schema, for the tests' ``engine`` fixture.

``Base.metadata.create_all`` costs about 0.1 s a test on SQLite; on PostgreSQL, creating a database
with its tables and dropping it afterwards costs about a second a test. So a test's SQLite file is a
copy of one file made per run, and a PostgreSQL database is emptied after a test and used again.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import services

_sqlite_template: list[Path] = []
_postgres_pool: list[str] = []  # databases holding the schema and no rows, for the next test


def _create_schema(url: str) -> None:
    from neurondock_platform import models  # noqa: F401  (registers the tables)
    from neurondock_platform.db import Base, make_engine

    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()


def sqlite_with_schema(path: Path) -> str:
    """Put a SQLite file holding the schema at ``path``; return its URL."""
    if not _sqlite_template:
        folder = tempfile.mkdtemp(prefix="nd-schema-")
        atexit.register(shutil.rmtree, folder, True)
        _sqlite_template.append(Path(folder) / "schema.db")
        _create_schema(f"sqlite:///{_sqlite_template[0]}")
    shutil.copyfile(_sqlite_template[0], path)
    return f"sqlite:///{path}"


def _new_postgres_database() -> str:
    name = services.create_postgres_database()
    atexit.register(services.drop_postgres_database, name)
    _create_schema(services.postgres_url(name))
    return name


_OTHER_SESSIONS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
)
_RESTART_SEQUENCES = (
    "SELECT setval(s.seqrelid, s.seqstart, false) FROM pg_sequence s"
    " JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
)


def _emptied(name: str) -> bool:
    """Delete every row and restart every sequence of database ``name``; False if its tables changed."""
    import sqlalchemy as sa

    from neurondock_platform.db import Base

    engine = sa.create_engine(services.postgres_url(name))
    try:
        with engine.begin() as conn:
            # A connection the test left open could hold locks the DELETEs would wait on.
            conn.execute(sa.text(_OTHER_SESSIONS), {"n": name})
            tables = set(conn.scalars(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")))
            if tables != set(Base.metadata.tables):
                return False
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
            conn.execute(sa.text(_RESTART_SEQUENCES))
        return True
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


@contextmanager
def postgres_with_schema() -> Iterator[str]:
    """A PostgreSQL database holding the schema and no rows; yields its URL, then empties it for the next test."""
    name = _postgres_pool.pop() if _postgres_pool else _new_postgres_database()
    try:
        yield services.postgres_url(name)
    finally:
        if _emptied(name):
            _postgres_pool.append(name)
        else:
            services.drop_postgres_database(name)
