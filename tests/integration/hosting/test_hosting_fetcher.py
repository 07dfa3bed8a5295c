"""The host process's model-data fetcher: fetch_model in a child holding botocore, gone when idle."""

from __future__ import annotations

import pytest
from tests.support.waiting import wait_for

from neurondock_platform.s3_client import OwnerClients, StoreOwner
from neurondock_workers.hosting.artifacts import ModelDataError, fetch_model
from neurondock_workers.hosting.fetcher import ChildFetcher

from .conftest import ACCOUNT_ID

OWNER = StoreOwner(ACCOUNT_ID, None)


@pytest.fixture
def clients(settings, sessions):
    return OwnerClients(settings, sessions, session_name="fetcher-tests")


def test_the_child_unpacks_what_an_in_process_fetch_unpacks_and_leaves_once_idle(clients, upload, tmp_path):
    url = upload({"model.pth": b"weights", "code/inference.py": b"x = 1\n"})
    fetcher = ChildFetcher(clients.keys, idle_seconds=0.5)
    try:
        directory, digest = fetcher(OWNER, url, tmp_path / "child", None)
        first = fetcher._child
        assert first is not None
        # The same version, named the same way, as the host process fetching it itself.
        here, here_digest = fetch_model(clients(OWNER), url, tmp_path / "here")
        assert digest == here_digest
        assert (directory / "model.pth").read_bytes() == (here / "model.pth").read_bytes() == b"weights"
        # A second fetch soon after is answered by the same child, from the unpacked copy.
        assert fetcher(OWNER, url, tmp_path / "child", None) == (directory, digest)
        assert fetcher._child is first

        wait_for(lambda: first.poll() is not None, 10, what="the idle fetcher to exit")
        assert first.returncode == 0
        fetcher.reap_exited()
        assert fetcher._child is None
        # The next fetch starts another child.
        assert fetcher(OWNER, url, tmp_path / "child", None) == (directory, digest)
        assert fetcher._child is not None and fetcher._child.pid != first.pid
    finally:
        fetcher.close()
    assert fetcher._child is None


def test_the_child_signs_with_the_owners_keys_and_refuses_a_bucket_not_mapped_to_it(clients, s3, upload, tmp_path):
    # The external store's shared key could read this bucket: the owner's mapping does not name it.
    s3.create_bucket(Bucket="not-the-owners")
    s3.put_object(Bucket="not-the-owners", Key="model.tar.gz", Body=b"not yours")
    fetcher = ChildFetcher(clients.keys)
    try:
        with pytest.raises(ModelDataError) as caught:
            fetcher(OWNER, "s3://not-the-owners/model.tar.gz", tmp_path, None)
        assert "AccessDenied" in caught.value.message and not caught.value.transient
        with pytest.raises(ModelDataError) as missing:
            fetcher(OWNER, upload(b"").rsplit("/", 1)[0] + "/absent.tar.gz", tmp_path, None)
        assert "NoSuchKey" in missing.value.message and not missing.value.transient
    finally:
        fetcher.close()


def test_a_fetcher_that_exits_as_a_request_reaches_it_is_replaced_for_that_request(clients, upload, tmp_path):
    url = upload({"model.pth": b"w"})
    fetcher = ChildFetcher(clients.keys)
    try:
        fetcher.start_spare()
        spare = fetcher._child
        assert spare is not None
        spare.kill()
        spare.wait()
        # Exited, though the host process has not seen it yet: as when its idle time ends as a request comes.
        spare.poll = lambda: None  # type: ignore[method-assign]
        directory, _digest = fetcher(OWNER, url, tmp_path, None)
        assert (directory / "model.pth").read_bytes() == b"w"
        assert fetcher._child is not None and fetcher._child.pid != spare.pid
    finally:
        fetcher.close()


def test_closing_ends_a_download_in_progress_and_starts_no_other_child(tmp_path):
    import socket
    import threading
    import time

    from neurondock_platform.s3_client import StoreKeys

    # A store that accepts the connection and never answers: the download would wait out botocore's
    # read timeout (a minute, and its retries) past the host's stop budget.
    with socket.create_server(("127.0.0.1", 0)) as store:
        keys = StoreKeys(ACCOUNT_ID, f"http://127.0.0.1:{store.getsockname()[1]}", "us-east-1", "AK", "SK")
        fetcher = ChildFetcher(lambda owner: keys)
        failed: list[ModelDataError] = []

        def fetch() -> None:
            try:
                fetcher(OWNER, "s3://b/model.tar.gz", tmp_path, None)
            except ModelDataError as exc:
                failed.append(exc)

        thread = threading.Thread(target=fetch, daemon=True)
        thread.start()
        store.settimeout(30)
        connection, _ = store.accept()  # the child's HEAD is in flight
        with connection:
            started = time.monotonic()
            fetcher.close()
            thread.join(10)
            assert not thread.is_alive() and time.monotonic() - started < 5
        assert failed and failed[0].transient
        assert fetcher._child is None
        with pytest.raises(ModelDataError, match="the host is stopping"):
            fetcher(OWNER, "s3://b/model.tar.gz", tmp_path, None)
        assert fetcher._child is None
