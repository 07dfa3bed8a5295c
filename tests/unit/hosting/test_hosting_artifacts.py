"""safe_extract refuses anything that could escape the model directory; fetch_model unpacks once per ETag."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading

import pytest

from neurondock_workers.hosting import artifacts
from neurondock_workers.hosting.artifacts import (
    ModelDataError,
    UnsafeArchiveError,
    fetch_model,
    safe_extract,
)
from neurondock_workers.hosting.s3 import ObjectHead, StoreError

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


def test_safe_extract_reads_the_archive_once(tmp_path, make_tarball):
    # A FIFO can be read only once: checking every member, then seeking back to extract, would fail here.
    data = make_tarball({"model.pth": bytes(range(256)) * 400, "code/inference.py": b"# hooks\n"}).read_bytes()
    fifo = tmp_path / "model.tar.gz.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,), daemon=True)
    writer.start()

    out = safe_extract(fifo, tmp_path / "out")

    writer.join(5)
    assert (out / "model.pth").read_bytes() == bytes(range(256)) * 400
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


def _corrupt_middle(data: bytes) -> bytes:
    out = bytearray(data)
    at = len(out) // 2
    out[at : at + 8] = bytes(b ^ 0xFF for b in out[at : at + 8])
    return bytes(out)


def _reserved_block_type(data: bytes) -> bytes:
    # A gzip header (10 bytes, no optional fields) and then a deflate block of the reserved type 0b11.
    return data[:3] + b"\x00" + data[4:10] + b"\x07" + data[11:]


@pytest.mark.parametrize("corrupt", [_corrupt_middle, _reserved_block_type], ids=["wrong CRC", "bad deflate block"])
def test_safe_extract_reports_a_corrupt_gzip_stream_and_keeps_nothing(tmp_path, make_tarball, corrupt):
    tarball = make_tarball({"model.pth": bytes(range(256)) * 4000, "code/inference.py": b"x = 1\n" * 1000})
    tarball.write_bytes(corrupt(tarball.read_bytes()))

    with pytest.raises(ModelDataError, match="not a gzip tarball"):
        safe_extract(tarball, tmp_path / "out")

    assert list((tmp_path / "out").iterdir()) == []


class FakeBody(io.BytesIO):
    """A GET's body; ``length`` None as for a chunked answer, and what was read counted."""

    def __init__(self, data: bytes, length: int | None) -> None:
        super().__init__(data)
        self.length = length
        self.served = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.served += len(chunk)
        return chunk


class FakeS3:
    """The two requests fetch_model makes, with S3's error shapes (HEAD has no error body)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.gets = 0
        self.bodies: list[FakeBody] = []
        self.send_length = True

    def _etag(self, data: bytes) -> str:
        return '"' + hashlib.md5(data).hexdigest() + '"'

    def head(self, bucket: str, key: str) -> ObjectHead:
        data = self.objects.get((bucket, key))
        if data is None:
            raise StoreError("NoSuchKey", 404)
        return ObjectHead(self._etag(data), None, len(data))

    def get(self, bucket: str, key: str) -> FakeBody:
        if not any(b == bucket for b, _ in self.objects):
            raise StoreError("NoSuchBucket", 404)
        data = self.objects.get((bucket, key))
        if data is None:
            raise StoreError("NoSuchKey", 404)
        self.gets += 1
        self.bodies.append(FakeBody(data, len(data) if self.send_length else None))
        return self.bodies[-1]


@pytest.fixture
def s3(make_tarball) -> FakeS3:
    fake = FakeS3()
    fake.objects[(BUCKET, KEY)] = make_tarball({"model.pth": b"v1"}).read_bytes()
    return fake


def test_fetch_model_unpacks_once_per_artifact_and_refetches_a_new_etag(tmp_path, s3, make_tarball):
    cache = tmp_path / "cache"

    first, digest = fetch_model(s3, URL, cache)
    second, again = fetch_model(s3, URL, cache)

    assert (first, digest) == (second, again), "replicas of one artifact share its one unpacked copy"
    assert s3.gets == 1, "the second fetch of an unchanged object is served from the host's copy"
    assert (first / "model.pth").read_bytes() == b"v1"
    assert not (cache / "downloads").exists() or not any((cache / "downloads").iterdir()), "no tarball kept"

    s3.objects[(BUCKET, KEY)] = make_tarball({"model.pth": b"v2"}, name="v2.tar.gz").read_bytes()
    newer, new_digest = fetch_model(s3, URL, cache)

    assert s3.gets == 2 and new_digest != digest, "a new ETag means a new download"
    assert (newer / "model.pth").read_bytes() == b"v2"
    assert (first / "model.pth").read_bytes() == b"v1", "replicas still on the old version keep their files"
    assert artifacts.prune(cache, {new_digest}) == [first]
    assert not first.exists() and newer.exists()
    assert artifacts.prune(cache, ()) == [newer]


def test_fetch_model_makes_the_model_readable_to_a_sandbox_uid(tmp_path, s3, make_tarball):
    info = tarfile.TarInfo("code/inference.py")
    info.size, info.mode = 1, 0o600
    s3.objects[(BUCKET, KEY)] = make_tarball(members=[info]).read_bytes()

    root, _ = fetch_model(s3, URL, tmp_path / "cache")

    assert (root / "code" / "inference.py").stat().st_mode & 0o777 == 0o644
    assert (root / "code").stat().st_mode & 0o777 == 0o755


DOWNLOAD_ERROR = "Could not download model data from "


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"s3://{BUCKET}/missing.tar.gz", f"{DOWNLOAD_ERROR}s3://{BUCKET}/missing.tar.gz: NoSuchKey"),
        ("s3://nobucket/m.tar.gz", f"{DOWNLOAD_ERROR}s3://nobucket/m.tar.gz: NoSuchBucket"),
        ("https://example.com/model.tar.gz", "ModelDataUrl must look like s3://bucket/key"),
    ],
)
def test_fetch_model_errors_say_what_to_fix(tmp_path, s3, url, message):
    with pytest.raises(ModelDataError) as info:
        fetch_model(s3, url, tmp_path / "cache")

    assert info.value.message.startswith(message)
    assert not (tmp_path / "cache" / "extracted").exists() or not any((tmp_path / "cache" / "extracted").iterdir())


def test_fetch_model_keeps_the_old_copy_when_the_new_tarball_is_bad(tmp_path, s3):
    cache = tmp_path / "cache"
    old, _ = fetch_model(s3, URL, cache)
    s3.objects[(BUCKET, KEY)] = b"garbage"

    with pytest.raises(ModelDataError, match="not a gzip tarball"):
        fetch_model(s3, URL, cache)

    assert (old / "model.pth").read_bytes() == b"v1"
    assert [p.name for p in (cache / "extracted").iterdir()] == [old.name], "no staging dirs left"
    assert not any((cache / "downloads").iterdir()), "nor the bad download"


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "chunked"])
def test_fetch_model_reads_no_more_of_an_archive_than_the_limit(tmp_path, s3, send_length):
    s3.objects[(BUCKET, KEY)] = os.urandom(3 * 1024 * 1024)
    s3.send_length = send_length
    limit = 1024 * 1024

    with pytest.raises(ModelDataError, match="larger than 1 MiB") as info:
        fetch_model(s3, URL, tmp_path / "cache", max_bytes=limit)

    assert not info.value.transient
    (body,) = s3.bodies
    # Refused from its Content-Length before a byte is read, else one byte past the limit at most.
    assert body.served == (0 if send_length else limit + 1)
    assert not any((tmp_path / "cache" / "downloads").iterdir()), "nothing of it kept"
