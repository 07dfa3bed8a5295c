"""safe_extract refuses anything that could escape the model directory; fetch_model_data caches by ETag."""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Any

import pytest
from botocore.exceptions import ClientError

from neurondock_workers.hosting.artifacts import (
    ModelDataError,
    UnsafeArchiveError,
    fetch_model_data,
    safe_extract,
)

BUCKET = "models"
KEY = "tiny/model.tar.gz"
URL = f"s3://{BUCKET}/{KEY}"


def _member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_safe_extract_unpacks_files_and_directories(tmp_path, make_tarball):
    tarball = make_tarball({"model.pth": b"weights", "code/inference.py": b"# hooks\n"})

    out = safe_extract(tarball, tmp_path / "out")

    assert (out / "model.pth").read_bytes() == b"weights"
    assert (out / "code" / "inference.py").read_text() == "# hooks\n"


def test_safe_extract_accepts_members_under_dot(tmp_path, make_tarball):
    # What `tar czf model.tar.gz -C model_dir .` produces.
    tarball = make_tarball({"./model.pth": b"weights", "./code/inference.py": b""})

    out = safe_extract(tarball, tmp_path / "out")

    assert sorted(p.name for p in out.iterdir()) == ["code", "model.pth"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.py", "path traversal"),
        ("code/../../evil.py", "path traversal"),
        ("/tmp/evil.py", "absolute path"),
    ],
)
def test_safe_extract_refuses_paths_outside_the_directory(tmp_path, make_tarball, name, reason):
    tarball = make_tarball({"model.pth": b"w", name: b"boom"})

    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(tarball, tmp_path / "out" / "model")

    assert repr(name) in info.value.message
    assert reason in info.value.message
    assert not (tmp_path / "out" / "evil.py").exists()
    assert not (tmp_path / "out" / "model" / "model.pth").exists(), "nothing is extracted from a bad archive"


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_member("model.pth", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link to '/etc/passwd'"),
        (_member("weights.pth", tarfile.LNKTYPE, "real.pth"), "hard link to 'real.pth'"),
        (_member("tty", tarfile.CHRTYPE), "device file"),
        (_member("disk", tarfile.BLKTYPE), "device file"),
        (_member("pipe", tarfile.FIFOTYPE), "FIFO"),
    ],
)
def test_safe_extract_refuses_links_and_special_files(tmp_path, make_tarball, member, reason):
    tarball = make_tarball({"real.pth": b"w"}, members=[member])

    with pytest.raises(UnsafeArchiveError, match=reason) as info:
        safe_extract(tarball, tmp_path / "out")

    assert f"member {member.name!r}" in info.value.message


def test_safe_extract_names_a_file_that_is_not_a_gzip_tarball(tmp_path):
    not_gzip = tmp_path / "model.tar.gz"
    not_gzip.write_bytes(b"PK\x03\x04 this is a zip, not a tarball")

    with pytest.raises(ModelDataError, match=r"model\.tar\.gz is not a gzip tarball"):
        safe_extract(not_gzip, tmp_path / "out")


def test_safe_extract_refuses_an_uncompressed_tar(tmp_path):
    plain = tmp_path / "model.tar"
    with tarfile.open(plain, "w") as tar:
        info = tarfile.TarInfo("model.pth")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"w"))

    with pytest.raises(ModelDataError, match="not a gzip tarball"):
        safe_extract(plain, tmp_path / "out")


def test_safe_extract_reports_a_truncated_tarball(tmp_path, make_tarball):
    tarball = make_tarball({"model.pth": bytes(range(256)) * 400})
    data = tarball.read_bytes()
    tarball.write_bytes(data[: len(data) // 2])

    with pytest.raises(ModelDataError, match="not a gzip tarball"):
        safe_extract(tarball, tmp_path / "out")


class FakeS3:
    """The two calls fetch_model_data makes, with S3's error shapes (HEAD has no error body)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.gets = 0

    def _etag(self, data: bytes) -> str:
        return '"' + hashlib.md5(data).hexdigest() + '"'

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        data = self.objects.get((Bucket, Key))
        if data is None:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return {"ETag": self._etag(data), "ContentLength": len(data)}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        if not any(bucket == Bucket for bucket, _ in self.objects):
            raise ClientError({"Error": {"Code": "NoSuchBucket", "Message": "no bucket"}}, "GetObject")
        data = self.objects.get((Bucket, Key))
        if data is None:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "no key"}}, "GetObject")
        self.gets += 1
        return {"Body": io.BytesIO(data), "ETag": self._etag(data)}


@pytest.fixture
def s3(make_tarball) -> FakeS3:
    fake = FakeS3()
    fake.objects[(BUCKET, KEY)] = make_tarball({"model.pth": b"v1"}).read_bytes()
    return fake


def test_fetch_model_data_extracts_into_dest_and_caches_by_etag(tmp_path, s3, make_tarball):
    cache, dest = tmp_path / "cache", tmp_path / "replica" / "model"

    assert fetch_model_data(s3, URL, cache, dest=dest) == dest
    (dest / "scratch.txt").write_text("written by user code")
    assert fetch_model_data(s3, URL, cache, dest=dest) == dest

    assert s3.gets == 1, "the second fetch of an unchanged object is served from the cache"
    assert (dest / "model.pth").read_bytes() == b"v1"
    assert not (dest / "scratch.txt").exists(), "every fetch extracts into a fresh directory"

    s3.objects[(BUCKET, KEY)] = make_tarball({"model.pth": b"v2"}, name="v2.tar.gz").read_bytes()
    fetch_model_data(s3, URL, cache, dest=dest)

    assert s3.gets == 2, "a new ETag means a new download"
    assert (dest / "model.pth").read_bytes() == b"v2"
    assert len(list((cache / "downloads").glob("*.tar.gz"))) == 1, "the superseded version is evicted"


def test_fetch_model_data_without_dest_makes_a_new_directory(tmp_path, s3):
    first = fetch_model_data(s3, URL, tmp_path / "cache")
    second = fetch_model_data(s3, URL, tmp_path / "cache")

    assert first != second
    assert (first / "model.pth").read_bytes() == (second / "model.pth").read_bytes() == b"v1"


DOWNLOAD_ERROR = "Could not download model data from "


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"s3://{BUCKET}/missing.tar.gz", f"{DOWNLOAD_ERROR}s3://{BUCKET}/missing.tar.gz: NoSuchKey"),
        ("s3://nobucket/m.tar.gz", f"{DOWNLOAD_ERROR}s3://nobucket/m.tar.gz: NoSuchBucket"),
        ("https://example.com/model.tar.gz", "ModelDataUrl must look like s3://bucket/key"),
    ],
)
def test_fetch_model_data_errors_say_what_to_fix(tmp_path, s3, url, message):
    with pytest.raises(ModelDataError) as info:
        fetch_model_data(s3, url, tmp_path / "cache", dest=tmp_path / "model")

    assert info.value.message.startswith(message)
    assert not (tmp_path / "model").exists()


def test_fetch_model_data_keeps_the_old_directory_when_the_new_tarball_is_bad(tmp_path, s3):
    dest = tmp_path / "model"
    fetch_model_data(s3, URL, tmp_path / "cache", dest=dest)
    s3.objects[(BUCKET, KEY)] = b"garbage"

    with pytest.raises(ModelDataError, match="not a gzip tarball"):
        fetch_model_data(s3, URL, tmp_path / "cache", dest=dest)

    assert (dest / "model.pth").read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model-")] == [], "no staging dirs left"
