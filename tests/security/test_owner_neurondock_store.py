"""A standalone `neurondock store` on the platform's database (NEURONDOCK_S3_STORE_KIND=neurondock).

Workers and the admin API reach it as the account, with the account's own short-lived STS
credentials: the store verifies them against the shared database and enforces ownership itself.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.integration.admin.admin_helpers import AdminClient
from tests.support.identity import new_account

from neurondock_platform.config import Settings
from neurondock_platform.s3_client import OwnerClients, StoreOwner, make_s3_client
from neurondock_workers.hosting.s3 import ModelStores, StoreError

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def store_port() -> int:
    return _free_port()


@pytest.fixture
def settings(tmp_path, store_port) -> Settings:
    return Settings.from_env(
        {}, data_dir=tmp_path / "nd", root_access_key_id=ACCESS_KEY, root_secret_access_key=SECRET_KEY,
        account_id="123456789012", host_id="host-test", s3_endpoint_url=f"http://127.0.0.1:{store_port}/s3",
        s3_store_kind="neurondock",
    )  # fmt: skip


@pytest.fixture
def store(settings, session_factory, store_port) -> Iterator[str]:
    """`neurondock store` on the platform's database, with its objects in a data dir of its own."""
    import uvicorn
    from a2wsgi import WSGIMiddleware

    from neurondock_platform.store import create_store_app

    store_settings = settings.with_overrides(data_dir=settings.data_dir.parent / "store", port=store_port)
    server = uvicorn.Server(
        uvicorn.Config(
            WSGIMiddleware(create_store_app(store_settings)), host="127.0.0.1", port=store_port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the store did not start"
        time.sleep(0.01)
    yield settings.s3_endpoint_url
    server.should_exit = True
    thread.join(timeout=15)


def test_the_admin_api_and_workers_reach_a_neurondock_store_as_the_account(client, session_factory, settings, store):
    root = make_s3_client(store, "us-east-1", access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    root.create_bucket(Bucket="admins")
    root.put_object(Bucket="admins", Key="model.tar.gz", Body=b"admin's")
    team = new_account(session_factory, "team")
    as_team = AdminClient(client, team.access_key_id, team.secret_access_key)

    bucket = f"nd-artifacts-{team.account_id}"
    up = as_team.request("PUT", f"/artifacts/{bucket}/object", query={"key": "m.tar.gz"}, data=b"team's")
    assert up.status_code == 201, up.get_data(as_text=True)
    assert as_team.request("GET", "/artifacts/admins/object", query={"key": "model.tar.gz"}).status_code == 404

    # In the store, not in the API's own data dir: read back with the team's own keys.
    direct = make_s3_client(
        store, "us-east-1", access_key_id=team.access_key_id, secret_access_key=team.secret_access_key
    )
    assert direct.get_object(Bucket=bucket, Key="m.tar.gz")["Body"].read() == b"team's"

    clients = OwnerClients(settings, session_factory, session_name="store-test")
    worker = clients(StoreOwner(team.account_id, "arn:aws:iam::111122223333:role/Whatever"))
    assert worker.get_object(Bucket=bucket, Key="m.tar.gz")["Body"].read() == b"team's"
    with pytest.raises(ClientError) as caught:
        worker.get_object(Bucket="admins", Key="model.tar.gz")
    assert caught.value.response["Error"]["Code"] == "AccessDenied"

    # The host process's own reads (hosting/s3.py) sign with the role's temporary keys and their token.
    owner = StoreOwner(team.account_id, "arn:aws:iam::111122223333:role/Whatever")
    assert clients.keys(owner).session_token
    reader = ModelStores(clients.keys)(owner)
    body = reader.get(bucket, "m.tar.gz")
    assert body.read(100) == b"team's"
    body.close()
    assert reader.head(bucket, "m.tar.gz").etag
    for key in ("model.tar.gz", "absent.tar.gz"):
        with pytest.raises(StoreError) as denied:
            reader.head("admins", key)
        assert (denied.value.code, denied.value.status) == ("AccessDenied", 403)
