"""The host process's model-data reads (hosting/s3.py): a signed HEAD and GET as the owner, against moto's S3."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from neurondock_platform.s3_client import OwnerClients, StoreKeys, StoreOwner
from neurondock_workers.hosting.artifacts import ModelDataError, fetch_model
from neurondock_workers.hosting.s3 import ModelStores

from .conftest import ACCOUNT_ID

OWNER = StoreOwner(ACCOUNT_ID, None)


@pytest.fixture
def clients(settings, sessions):
    return OwnerClients(settings, sessions, session_name="model-reads-tests")


def _fetch(stores: ModelStores, url: str, cache, max_bytes: int | None = None):
    return fetch_model(stores(OWNER), url, cache, max_bytes=max_bytes)


def test_the_host_unpacks_model_data_under_the_digest_botocore_named_it_by(clients, s3, upload, tmp_path):
    url = upload({"model.pth": b"weights", "code/inference.py": b"x = 1\n"})
    stores = ModelStores(clients.keys)

    directory, digest = _fetch(stores, url, tmp_path)

    assert (directory / "model.pth").read_bytes() == b"weights"
    # The same version, named the same way, as when botocore's HEAD gave the ETag: host caches stay valid.
    bucket, key = url[len("s3://") :].split("/", 1)
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
    assert digest == f"{hashlib.sha256(url.encode()).hexdigest()[:32]}-{hashlib.sha256(etag.encode()).hexdigest()[:16]}"
    # Asked again, the store names the same version: the unpacked copy is reused.
    assert _fetch(stores, url, tmp_path) == (directory, digest)


def test_errors_name_what_the_store_said_and_a_bucket_not_mapped_to_the_owner_is_refused(clients, s3, upload, tmp_path):
    # The external store's shared key could read this bucket: the owner's mapping does not name it.
    s3.create_bucket(Bucket="not-the-owners")
    s3.put_object(Bucket="not-the-owners", Key="model.tar.gz", Body=b"not yours")
    stores = ModelStores(clients.keys)
    with pytest.raises(ModelDataError) as denied:
        _fetch(stores, "s3://not-the-owners/model.tar.gz", tmp_path)
    assert denied.value.message.endswith(": AccessDenied") and not denied.value.transient
    with pytest.raises(ModelDataError) as missing:
        _fetch(stores, upload(b"").rsplit("/", 1)[0] + "/absent.tar.gz", tmp_path)
    assert missing.value.message.endswith(": NoSuchKey") and not missing.value.transient


def test_an_unmapped_bucket_is_refused_before_a_request_leaves_and_an_absent_store_is_transient(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as store:
        port = store.getsockname()[1]
        keys = StoreKeys(ACCOUNT_ID, f"http://127.0.0.1:{port}", "us-east-1", "AK", "SK", buckets=("mine",))
        stores = ModelStores(lambda owner: keys)
        with pytest.raises(ModelDataError, match=r": AccessDenied$"):
            _fetch(stores, "s3://theirs/model.tar.gz", tmp_path)
        store.setblocking(False)
        with pytest.raises(BlockingIOError):
            store.accept()  # nothing reached the store
    # The port is closed now: the store is away, which is worth retrying.
    with pytest.raises(ModelDataError) as away:
        _fetch(stores, "s3://mine/model.tar.gz", tmp_path)
    assert away.value.transient and "Could not connect to the endpoint URL" in away.value.message


def test_an_archive_larger_than_the_limit_is_refused_unread(clients, upload, tmp_path):
    url = upload(os.urandom(2 * 1024 * 1024))

    with pytest.raises(ModelDataError, match="larger than 1 MiB"):
        _fetch(ModelStores(clients.keys), url, tmp_path, max_bytes=1024 * 1024)

    assert not any((tmp_path / "downloads").iterdir())
    assert not (tmp_path / "extracted").exists() or not any((tmp_path / "extracted").iterdir())


def test_closing_ends_a_download_in_progress_and_allows_no_other(tmp_path):
    # A store that accepts the connection and never answers: the read would wait out its 60 s timeout,
    # past the host's stop budget.
    with socket.create_server(("127.0.0.1", 0)) as store:
        keys = StoreKeys(ACCOUNT_ID, f"http://127.0.0.1:{store.getsockname()[1]}", "us-east-1", "AK", "SK")
        stores = ModelStores(lambda owner: keys)
        failed: list[ModelDataError] = []

        def fetch() -> None:
            try:
                _fetch(stores, "s3://b/model.tar.gz", tmp_path)
            except ModelDataError as exc:
                failed.append(exc)

        thread = threading.Thread(target=fetch, daemon=True)
        thread.start()
        store.settimeout(30)
        connection, _ = store.accept()  # the HEAD is in flight
        with connection:
            started = time.monotonic()
            stores.close()
            thread.join(10)
            assert not thread.is_alive() and time.monotonic() - started < 5
        assert failed and failed[0].transient
        with pytest.raises(ModelDataError, match="the host is stopping"):
            _fetch(stores, "s3://b/model.tar.gz", tmp_path)
