"""ObjectStore on a temporary directory: layout safety, atomic commits, listing, multipart, checksums."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from neurondock_platform.api.s3 import errors as wire
from neurondock_platform.services import objects as svc

MIB = 1024 * 1024


@pytest.fixture
def store(tmp_path):
    st = svc.ObjectStore(tmp_path / "objects")
    st.create_bucket("bkt")
    return st


def test_put_get_head_delete(store):
    meta = svc.ObjectMeta(content_type="text/plain", metadata={"a": "1"}, headers={"Cache-Control": "no-cache"})
    info = store.put_object("bkt", "dir/k", b"hello", meta)
    assert info.etag == hashlib.md5(b"hello").hexdigest()
    assert info.size == 5
    assert info.checksums == {"CRC32": svc.checksum_of(b"hello", "CRC32")}
    head = store.head_object("bkt", "dir/k")
    assert head.meta == meta
    assert head.last_modified == info.last_modified
    assert store.get_object("bkt", "dir/k") == b"hello"
    assert store.object_path("bkt", "dir/k").read_bytes() == b"hello"
    info2, f = store.open_object("bkt", "dir/k")
    with f:
        assert f.read() == b"hello"
    assert info2.etag == info.etag
    assert store.delete_object("bkt", "dir/k") is True
    assert store.delete_object("bkt", "dir/k") is False
    with pytest.raises(svc.NoSuchKey):
        store.head_object("bkt", "dir/k")


def test_put_accepts_files_and_iterables(store):
    assert store.put_object("bkt", "f", io.BytesIO(b"abc")).size == 3
    assert store.put_object("bkt", "i", iter([b"a", b"bc"])).etag == hashlib.md5(b"abc").hexdigest()


def test_checksum_mismatch_stores_nothing(store, tmp_path):
    with pytest.raises(svc.BadDigest):
        store.put_object("bkt", "k", b"data", checksums={"CRC32": svc.checksum_of(b"other", "CRC32")})
    with pytest.raises(svc.NoSuchKey):
        store.head_object("bkt", "k")
    assert list((tmp_path / "objects" / "bkt" / "blobs").iterdir()) == []


def test_open_handle_survives_overwrite(store):
    store.put_object("bkt", "k", b"v1")
    _, f = store.open_object("bkt", "k")
    store.put_object("bkt", "k", b"v2")
    with f:
        assert f.read() == b"v1"
    assert store.get_object("bkt", "k") == b"v2"


@pytest.mark.parametrize("key", ["..", "../x", "a/../../b", "/abs", ".hidden", "~x", "é/中", "a" * 1000, "sp ace"])
def test_keys_map_to_flat_safe_names(key):
    name = svc.encode_key(key)
    assert "/" not in name
    assert not name.startswith(".")
    assert len(name) <= 200 + 1
    if not name.startswith("~"):
        assert svc.decode_name(name) == key


def test_long_keys_are_hashed_and_listed(store):
    key = "deep/" + "é" * 300
    store.put_object("bkt", key, b"x")
    assert store.iter_keys("bkt") == [key]
    assert store.get_object("bkt", key) == b"x"


def test_key_limits():
    with pytest.raises(svc.KeyTooLongError):
        svc.encode_key("x" * 1025)
    with pytest.raises(svc.InvalidArgument):
        svc.encode_key("")


@pytest.mark.parametrize("name", ["ok-name", "a.b.c", "abc", "1bucket", "a" * 63])
def test_valid_bucket_names(name):
    svc.validate_bucket_name(name)


@pytest.mark.parametrize("name", ["..", ".", "a", "ab", "A-b", "a_b", "a..b", "-ab", "ab-", "10.0.0.1", "sthree-x"])
def test_invalid_bucket_names(name, tmp_path):
    with pytest.raises(svc.InvalidBucketName):
        svc.validate_bucket_name(name)
    with pytest.raises(svc.InvalidBucketName):
        svc.ObjectStore(tmp_path).create_bucket(name)


def test_missing_bucket(tmp_path):
    st = svc.ObjectStore(tmp_path)
    with pytest.raises(svc.NoSuchBucket):
        st.put_object("nobucket", "k", b"x")
    assert st.list_bucket_names() == []


def test_delete_bucket(store):
    store.put_object("bkt", "k", b"x")
    with pytest.raises(svc.BucketNotEmpty):
        store.delete_bucket("bkt")
    store.delete_object("bkt", "k")
    store.create_multipart_upload("bkt", "pending")
    store.delete_bucket("bkt")
    assert not store.bucket_exists("bkt")
    assert store.list_bucket_names() == []


def test_listing_with_delimiter_and_paging(store):
    keys = ["a", "b/1", "b/2", "c", "d/x/1", "d/y"]
    for key in keys:
        store.put_object("bkt", key, b"x")
    page = store.list_objects("bkt", delimiter="/")
    assert [o.key for o in page.contents] == ["a", "c"]
    assert page.common_prefixes == ["b/", "d/"]
    assert not page.is_truncated

    seen, after, is_prefix = [], "", False
    while True:
        page = store.list_objects("bkt", delimiter="/", after=after, after_is_prefix=is_prefix, max_keys=1)
        seen += [o.key for o in page.contents] + page.common_prefixes
        if not page.is_truncated:
            break
        after, is_prefix = page.last, page.last_is_prefix
    assert seen == ["a", "b/", "c", "d/"]
    assert [o.key for o in store.list_objects("bkt", prefix="d/").contents] == ["d/x/1", "d/y"]
    assert store.list_objects("bkt", prefix="d/", delimiter="/").common_prefixes == ["d/x/"]
    assert [o.key for o in store.list_objects("bkt", after="b/1").contents] == ["b/2", "c", "d/x/1", "d/y"]


def test_multipart_upload(store):
    upload = store.create_multipart_upload("bkt", "big", svc.ObjectMeta(content_type="x/y"), checksum_algorithm="CRC32")
    p1, p2 = b"1" * (5 * MIB), b"2" * 10
    parts = [
        store.upload_part("bkt", "big", upload.upload_id, 2, p2),
        store.upload_part("bkt", "big", upload.upload_id, 1, p1),
    ]
    assert [p.part_number for p in store.list_parts("bkt", "big", upload.upload_id)] == [1, 2]
    assert [u.key for u in store.list_uploads("bkt")] == ["big"]
    info = store.complete_multipart_upload(
        "bkt",
        "big",
        upload.upload_id,
        [svc.CompletedPart(1, parts[1].quoted_etag), svc.CompletedPart(2, parts[0].etag)],
    )
    assert info.etag == svc.multipart_etag([hashlib.md5(p1).hexdigest(), hashlib.md5(p2).hexdigest()])
    assert info.etag.endswith("-2")
    assert info.parts_count == 2
    assert info.part_sizes == (5 * MIB, 10)
    assert info.content_type == "x/y"
    assert store.get_object("bkt", "big") == p1 + p2
    assert store.list_uploads("bkt") == []
    with pytest.raises(svc.NoSuchUpload):
        store.complete_multipart_upload("bkt", "big", upload.upload_id, [svc.CompletedPart(1, parts[1].etag)])


def test_multipart_validation(store):
    upload = store.create_multipart_upload("bkt", "k")
    small = store.upload_part("bkt", "k", upload.upload_id, 1, b"x")
    last = store.upload_part("bkt", "k", upload.upload_id, 2, b"y")
    with pytest.raises(svc.EntityTooSmall):
        store.complete_multipart_upload(
            "bkt", "k", upload.upload_id, [svc.CompletedPart(1, small.etag), svc.CompletedPart(2, last.etag)]
        )
    with pytest.raises(svc.InvalidPartOrder):
        store.complete_multipart_upload(
            "bkt", "k", upload.upload_id, [svc.CompletedPart(2, last.etag), svc.CompletedPart(1, small.etag)]
        )
    with pytest.raises(svc.InvalidPart):
        store.complete_multipart_upload("bkt", "k", upload.upload_id, [svc.CompletedPart(1, "0" * 32)])
    with pytest.raises(svc.InvalidArgument):
        store.upload_part("bkt", "k", upload.upload_id, 10001, b"x")
    with pytest.raises(svc.NoSuchUpload):
        store.upload_part("bkt", "other-key", upload.upload_id, 1, b"x")
    with pytest.raises(svc.NoSuchUpload):
        store.get_upload("bkt", "k", "../../../../etc")
    store.abort_multipart_upload("bkt", "k", upload.upload_id)
    with pytest.raises(svc.NoSuchUpload):
        store.list_parts("bkt", "k", upload.upload_id)


def test_concurrent_parts_and_writers(store, tmp_path):
    upload = store.create_multipart_upload("bkt", "k")
    data = {n: bytes([n]) * (5 * MIB if n < 10 else 100) for n in range(1, 11)}
    with ThreadPoolExecutor(10) as pool:
        parts = list(pool.map(lambda n: store.upload_part("bkt", "k", upload.upload_id, n, data[n]), data))
    done = store.complete_multipart_upload(
        "bkt",
        "k",
        upload.upload_id,
        [svc.CompletedPart(p.part_number, p.etag) for p in sorted(parts, key=lambda p: p.part_number)],
    )
    assert done.size == sum(len(d) for d in data.values())
    assert store.get_object("bkt", "k") == b"".join(data[n] for n in sorted(data))

    # Many writers racing on one key: exactly one version wins and no bytes leak.
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        store.put_object("bkt", "race", bytes([i]) * 1000)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    winner = store.get_object("bkt", "race")
    assert winner in {bytes([i]) * 1000 for i in range(8)}
    assert len(list((tmp_path / "objects" / "bkt" / "blobs").iterdir())) == 2


def test_copy_object(store):
    store.create_bucket("other")
    store.put_object("bkt", "src", b"payload", svc.ObjectMeta(metadata={"m": "1"}))
    copied = store.copy_object("bkt", "src", "other", "dst")
    assert copied.metadata == {"m": "1"}
    assert store.get_object("other", "dst") == b"payload"
    replaced = store.copy_object("bkt", "src", "other", "dst2", svc.ObjectMeta(metadata={"n": "2"}))
    assert replaced.metadata == {"n": "2"}


def test_errors_pickle_and_carry_s3_fields():
    err = pickle.loads(pickle.dumps(svc.NoSuchKey(key="a/b")))
    assert isinstance(err, svc.NoSuchKey)
    assert err.message == "The specified key does not exist."
    assert wire.xml_details(svc.NoSuchKey(key="a/b")) == {"Key": "a/b"}
    assert wire.xml_details(svc.NoSuchKey(key=None)) == {}
    assert wire.xml_details(wire.InvalidRange(range="bytes=9-", size=3)) == {
        "RangeRequested": "bytes=9-",
        "ActualObjectSize": "3",
    }
    assert wire.InvalidRange(range="bytes=9-", size=3).http_status == 416


def _conditional_put(root: str, i: int, barrier: Any) -> str:
    store = svc.ObjectStore(root)
    barrier.wait()
    try:
        store.put_object("bkt", "lock", bytes([i]) * 100_000, condition=svc.WriteCondition(if_none_match="*"))
    except svc.PreconditionFailed:
        return "refused"
    return "won"


def test_conditional_writers_in_separate_processes(store, tmp_path):
    """The bucket lock is an flock: If-None-Match holds across worker processes, not just threads."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(4)
        with ctx.Pool(4) as pool:
            outcomes = pool.starmap(_conditional_put, [(str(store.root), i, barrier) for i in range(4)])
    assert sorted(outcomes) == ["refused", "refused", "refused", "won"]
    winner = outcomes.index("won")
    assert store.get_object("bkt", "lock") == bytes([winner]) * 100_000
    # The losers' bytes were discarded: one blob is left, the winner's.
    assert len(list((tmp_path / "objects" / "bkt" / "blobs").iterdir())) == 1


def test_completion_retry_window(store, monkeypatch):
    upload = store.create_multipart_upload("bkt", "k")
    part = store.upload_part("bkt", "k", upload.upload_id, 1, b"data")
    parts = [svc.CompletedPart(1, part.etag)]
    first = store.complete_multipart_upload("bkt", "k", upload.upload_id, parts)
    again = store.complete_multipart_upload("bkt", "k", upload.upload_id, parts)
    assert (again.etag, again.size, again.key) == (first.etag, first.size, "k")
    with pytest.raises(svc.NoSuchUpload):
        store.abort_multipart_upload("bkt", "k", upload.upload_id)
    monkeypatch.setattr("neurondock_platform.services.objects.uploads.COMPLETION_RETRY_WINDOW", -1.0)
    with pytest.raises(svc.NoSuchUpload):
        store.complete_multipart_upload("bkt", "k", upload.upload_id, parts)


def test_tags_live_with_the_object(store):
    store.put_object("bkt", "k", b"v", svc.ObjectMeta(tags=(("b", "2"), ("a", "1"))))
    assert store.head_object("bkt", "k").meta.tags == (("b", "2"), ("a", "1"))
    etag = store.head_object("bkt", "k").etag
    store.set_tags("bkt", "k", [("z", ""), ("y", "x")])
    info = store.head_object("bkt", "k")
    assert (info.meta.tags, info.etag) == ((("y", "x"), ("z", "")), etag)
    with pytest.raises(svc.InvalidTag):
        store.set_tags("bkt", "k", [(str(i), "") for i in range(11)])
    with pytest.raises(svc.NoSuchKey):
        store.set_tags("bkt", "missing", [])
    store.put_object("bkt", "k", b"new")  # a new object starts without the old one's tags
    assert store.head_object("bkt", "k").meta.tags == ()
