"""Find out whether PostgreSQL and Redis are reachable, so tests needing them can skip, saying why."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379"


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def postgres_available() -> bool:
    if not port_open("127.0.0.1", 5432):
        return False
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def redis_available() -> bool:
    return port_open("127.0.0.1", 6379)


def postgres_url(name: str) -> str:
    """The URL of database ``name`` on the test server."""
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(name: str) -> None:
    """Drop database ``name`` (and end its sessions) if it exists."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def create_postgres_database() -> str:
    """Create an empty database of a fresh name and return the name."""
    import sqlalchemy as sa

    name = f"nd_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        # A test's commits need not wait for the WAL to reach the disk (a crash of the server loses
        # nothing a test relies on); each would otherwise pay a flush here, hundreds of them a run.
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    admin.dispose()
    return name


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create a throwaway database and yield its URL; drop it afterwards."""
    name = create_postgres_database()
    try:
        yield postgres_url(name)
    finally:
        drop_postgres_database(name)


def fresh_redis_url() -> str:
    """A Redis URL on a database number of its own (flushed first)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for db in range(1, 16):
        candidate = redis.Redis.from_url(f"{REDIS_URL}/{db}")
        if candidate.dbsize() == 0:
            candidate.close()
            client.close()
            return f"{REDIS_URL}/{db}"
        candidate.close()
    client.close()
    redis.Redis.from_url(f"{REDIS_URL}/15").flushdb()
    return f"{REDIS_URL}/15"


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Run moto's S3 on an ephemeral loopback port and yield its URL (a stand-in external store)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextmanager
def wsgi_server(app: Any) -> Iterator[str]:
    """Serve a WSGI app with werkzeug on an ephemeral loopback port; yield its base URL."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    # serve_forever checks for shutdown every poll_interval (0.5 s by default); each test waited that out.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
