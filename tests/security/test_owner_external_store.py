"""An external S3 store (NEURONDOCK_S3_ENDPOINT_URL): each account reaches what it may, with the keys it should.

The external store here is a second, separate neurondock store (its own database and accounts), so a
real S3 server verifies every signature and enforces its own bucket ownership. In it the platform has
an external key (the store's root pair), team A has store credentials of its own, and someone else
owns a private bucket. On the platform, an admin gives team A those credentials and maps one of the
platform key's buckets to team B.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.integration.admin.admin_helpers import AdminClient
from tests.support.identity import Keys, new_account

from neurondock_platform.config import Settings
from neurondock_platform.s3_client import OwnerClients, StoreOwner, make_s3_client
from neurondock_workers.hosting.artifacts import ModelDataError, fetch_model
from neurondock_workers.hosting.s3 import ModelStores, StoreError

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

EXT_ROOT = Keys("999999999999", "AKNDEXTERNALROOT0001", "external-store-root-secret-000000000001")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def external(tmp_path) -> Iterator[dict[str, Any]]:
    """A separate neurondock store with three parties and their buckets; yields its URL and keys."""
    import uvicorn
    from a2wsgi import WSGIMiddleware

    from neurondock_platform import models  # noqa: F401  (registers the tables)
    from neurondock_platform.db import Base, make_engine, make_sessionmaker, session_scope
    from neurondock_platform.services.accounts import create_account, ensure_root_account, root_identity
    from neurondock_platform.store import create_store_app

    port = _free_port()
    settings = Settings.from_env(
        {}, data_dir=tmp_path / "external", port=port, root_access_key_id=EXT_ROOT.access_key_id,
        root_secret_access_key=EXT_ROOT.secret_access_key, account_id=EXT_ROOT.account_id,
    )  # fmt: skip
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings.database_url)
    Base.metadata.create_all(engine)
    keys = {"root": EXT_ROOT}
    with session_scope(make_sessionmaker(engine)) as session:
        ensure_root_account(session, root_identity(settings))
        for name in ("team-a", "someone-else"):
            account, key = create_account(session, name)
            keys[name] = Keys(account.id, key.access_key_id, key.secret_access_key)
    server = uvicorn.Server(
        uvicorn.Config(WSGIMiddleware(create_store_app(settings)), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the external store did not start"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}/s3"
    for owner, bucket in (("root", "platform-mapped"), ("team-a", "team-a-own"), ("someone-else", "private")):
        k = keys[owner]
        s3 = make_s3_client(url, "us-east-1", access_key_id=k.access_key_id, secret_access_key=k.secret_access_key)
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="model.tar.gz", Body=f"{owner}'s model".encode())
    yield {"url": url, "keys": keys}
    server.should_exit = True
    thread.join(timeout=15)
    engine.dispose()


@pytest.fixture
def settings(tmp_path, external) -> Settings:
    """The platform under test, on the external store, with the store's root pair as its external key."""
    return Settings.from_env(
        {}, data_dir=tmp_path / "nd", root_access_key_id=ACCESS_KEY, root_secret_access_key=SECRET_KEY,
        account_id="123456789012", host_id="host-test", s3_endpoint_url=external["url"],
        s3_access_key_id=EXT_ROOT.access_key_id, s3_secret_access_key=EXT_ROOT.secret_access_key,
    )  # fmt: skip


@pytest.fixture
def teams(session_factory, client, external) -> dict[str, Keys]:
    """Platform accounts A and B; an admin gives A its store credentials and maps a bucket to B (admin API)."""
    a, b = new_account(session_factory, "team-a"), new_account(session_factory, "team-b")
    admin = AdminClient(client)
    ext_a = external["keys"]["team-a"]
    body = {"access_key_id": ext_a.access_key_id, "secret_access_key": ext_a.secret_access_key}
    shown = admin.ok("PUT", f"/accounts/{a.account_id}/store-access", json_body=body)
    assert shown["has_credentials"] and shown["in_effect"] and "secret_access_key" not in shown
    admin.ok("PUT", f"/accounts/{b.account_id}/store-access", json_body={"buckets": ["platform-mapped"]})
    # A bucket is mapped to one account at most.
    taken = admin.request(
        "PUT", f"/accounts/{a.account_id}/store-access", json_body={**body, "buckets": ["platform-mapped"]}
    )
    assert taken.status_code == 409
    # Only admins set it.
    assert AdminClient(client, a.access_key_id, a.secret_access_key).get(
        f"/accounts/{a.account_id}/store-access"
    ).status_code == 403  # fmt: skip
    return {"a": a, "b": b}


# What each account reads of each bucket: its bytes, or the error code.
READS = [
    # Team A: its own store credentials, so the external store itself decides.
    ("a", "team-a-own", b"team-a's model"),
    ("a", "private", "AccessDenied"),
    ("a", "platform-mapped", "AccessDenied"),
    # Team B: the platform's key, limited to what was mapped to B (the key itself could read more).
    ("b", "platform-mapped", b"root's model"),
    ("b", "team-a-own", "AccessDenied"),
    ("b", "private", "AccessDenied"),
]


def _check_reads(read: Callable[[str, str], bytes | str], teams: dict[str, Keys]) -> None:
    """Every read of READS through ``read(account_id, bucket)`` gives what READS says."""
    assert [read(teams[team].account_id, bucket) for team, bucket, _ in READS] == [want for *_, want in READS]


def _read(clients: OwnerClients, account_id: str, bucket: str) -> bytes | str:
    try:
        body = clients(StoreOwner(account_id, None)).get_object(Bucket=bucket, Key="model.tar.gz")["Body"]
        return bytes(body.read())
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])


def test_workers_read_as_the_account_with_its_own_store_credentials_or_only_its_mapped_buckets(
    settings, session_factory, teams
):
    clients = OwnerClients(settings, session_factory, session_name="external-test")
    _check_reads(lambda account_id, bucket: _read(clients, account_id, bucket), teams)


def _host_read(stores: ModelStores, account_id: str, bucket: str) -> bytes | str:
    try:
        body = stores(StoreOwner(account_id, None)).get(bucket, "model.tar.gz")
    except StoreError as exc:
        return exc.code
    try:
        return body.read(1024)
    finally:
        body.close()


def test_the_host_reads_model_data_as_the_account_by_the_same_rules(settings, session_factory, teams, tmp_path):
    # The host process's own HEAD and GET (hosting/s3.py), not botocore's: B's model cannot read A's data.
    stores = ModelStores(OwnerClients(settings, session_factory, session_name="external-host").keys)
    _check_reads(lambda account_id, bucket: _host_read(stores, account_id, bucket), teams)
    b = teams["b"].account_id
    # As a replica's start reports it: denied, the same whether or not the key exists.
    for key in ("model.tar.gz", "no-such-key.tar.gz"):
        with pytest.raises(ModelDataError) as denied:
            fetch_model(stores(StoreOwner(b, None)), f"s3://team-a-own/{key}", tmp_path)
        assert denied.value.message.endswith(": AccessDenied") and not denied.value.transient


def test_the_admin_api_moves_artifacts_with_the_same_rules(client, teams):
    a = teams["a"]
    as_a = AdminClient(client, a.access_key_id, a.secret_access_key)
    up = as_a.request("PUT", "/artifacts/team-a-own/object", query={"key": "up/m.tar.gz"}, data=b"uploaded by A")
    assert up.status_code == 201, up.get_data(as_text=True)
    got = as_a.request("GET", "/artifacts/team-a-own/object", query={"key": "up/m.tar.gz"}, validate=False)
    assert got.data == b"uploaded by A"
    denied = as_a.request("GET", "/artifacts/private/object", query={"key": "model.tar.gz"})
    # Refused by the external store; reported as the admin API reports another account's bucket.
    assert denied.status_code == 404, denied.get_data(as_text=True)

    b = teams["b"]
    as_b = AdminClient(client, b.access_key_id, b.secret_access_key)
    assert as_b.get("/artifacts/platform-mapped").status_code == 200
    mapped = as_b.request("PUT", "/artifacts/platform-mapped/object", query={"key": "b/m"}, data=b"B's")
    assert mapped.status_code == 201, mapped.get_data(as_text=True)
    for bucket in ("private", "team-a-own"):
        assert as_b.request("PUT", f"/artifacts/{bucket}/object", query={"key": "x"}, data=b"x").status_code == 404


def test_the_cli_shows_sets_and_clears_store_access(live_front, root_keys, teams, external):
    b = teams["b"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NEURONDOCK_"))}
    env.update(AWS_ACCESS_KEY_ID=root_keys.access_key_id, AWS_SECRET_ACCESS_KEY=root_keys.secret_access_key)

    def cli(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "neurondock_platform.cli", "accounts", "store-access", b.account_id, *args,
             "--endpoint-url", live_front.url, "-o", "json"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    assert cli()["buckets"] == ["platform-mapped"]
    ext_b = external["keys"]["someone-else"]
    env["NEURONDOCK_STORE_SECRET_ACCESS_KEY"] = ext_b.secret_access_key
    set_ = cli("--access-key-id", ext_b.access_key_id, "--bucket", "another")
    assert (set_["access_key_id"], set_["buckets"], set_["store"]) == (ext_b.access_key_id, ["another"], "external")
    cleared = cli("--clear")
    assert (cleared["access_key_id"], cleared["buckets"]) == (None, [])
