"""Bucket ownership in the database (both backends): the in-process API other platform code uses."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.conftest import ACCOUNT_ID

from neurondock_platform.db import session_scope
from neurondock_platform.services import objects as svc


def test_bucket_lifecycle_and_ownership(session_factory, settings, other_account):
    other_id, _, _ = other_account
    store = svc.ObjectStore(settings.objects_dir)
    with session_scope(session_factory) as session:
        bucket = svc.create_bucket(session, store, name="artifacts", account_id=ACCOUNT_ID, region="us-east-1")
        assert bucket.created_at is not None
    with session_scope(session_factory) as session:
        assert [b.name for b in svc.list_buckets(session, ACCOUNT_ID)] == ["artifacts"]
        assert svc.list_buckets(session, other_id) == []
        assert svc.owned_bucket(session, "artifacts", ACCOUNT_ID).region == "us-east-1"
        with pytest.raises(svc.AccessDenied):
            svc.owned_bucket(session, "artifacts", other_id)
        with pytest.raises(svc.NoSuchBucket):
            svc.owned_bucket(session, "nothing-here", ACCOUNT_ID)
        with pytest.raises(svc.BucketAlreadyOwnedByYou):
            svc.create_bucket(session, store, name="artifacts", account_id=ACCOUNT_ID, region="us-east-1")
    with session_scope(session_factory) as session, pytest.raises(svc.BucketAlreadyExists):
        svc.create_bucket(session, store, name="artifacts", account_id=other_id, region="us-east-1")

    # ensure_bucket is idempotent for the owner, so platform code can call it before every write.
    with session_scope(session_factory) as session:
        svc.ensure_bucket(session, store, name="artifacts", account_id=ACCOUNT_ID, region="us-east-1")
        svc.ensure_bucket(session, store, name="compiled", account_id=ACCOUNT_ID, region="us-east-1")
    store.put_object("compiled", "job/model.tar.gz", b"tarball")
    assert store.get_object("compiled", "job/model.tar.gz") == b"tarball"

    with session_scope(session_factory) as session, pytest.raises(svc.BucketNotEmpty):
        svc.delete_bucket(session, store, name="compiled", account_id=ACCOUNT_ID)
    store.delete_object("compiled", "job/model.tar.gz")
    with session_scope(session_factory) as session:
        svc.delete_bucket(session, store, name="compiled", account_id=ACCOUNT_ID)
    with session_scope(session_factory) as session:
        assert [b.name for b in svc.list_buckets(session, ACCOUNT_ID)] == ["artifacts"]
    assert store.list_bucket_names() == ["artifacts"]


def test_concurrent_creates_have_one_winner(session_factory, settings, other_account):
    other_id, _, _ = other_account
    store = svc.ObjectStore(settings.objects_dir)

    def create(account_id: str) -> str:
        try:
            with session_scope(session_factory) as session:
                svc.create_bucket(session, store, name="contested", account_id=account_id, region="us-east-1")
            return "created"
        except svc.S3Error as err:
            return err.code

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(create, [ACCOUNT_ID, other_id] * 3))
    assert outcomes.count("created") == 1
    assert set(outcomes) - {"created"} <= {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
