"""What real boto3 and the AWS CLI ask of the store and must never be silently ignored (docs/s3.md):
conditional writes, retried completions, headers for features the store lacks, full-object checksums,
tagging and version listing. One live server serves the whole module."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from neurondock_platform.services.objects import checksum_of

MIB = 1024 * 1024
AWS_CLI = Path(sys.executable).with_name("aws")


def _error(info: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


@pytest.fixture(scope="module")
def s3(live_store):
    return live_store.client()


@pytest.fixture
def bucket(s3, request) -> str:
    name = "conf-" + hashlib.md5(request.node.name.encode()).hexdigest()[:12]
    s3.create_bucket(Bucket=name)
    return name


def _body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


# -- conditional writes


def test_put_object_conditions_refuse_to_overwrite(s3, bucket):
    first = s3.put_object(Bucket=bucket, Key="lock", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="lock", Body=b"second", IfNoneMatch="*")
    assert _error(info) == (412, "PreconditionFailed")
    assert info.value.response["Error"]["Condition"] == "If-None-Match"
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="lock", Body=b"third", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert _error(info) == (412, "PreconditionFailed")
    assert _body(s3, bucket, "lock") == b"first"

    replaced = s3.put_object(Bucket=bucket, Key="lock", Body=b"fourth", IfMatch=first["ETag"])
    assert _body(s3, bucket, "lock") == b"fourth"
    with pytest.raises(ClientError) as info:  # the old ETag no longer matches
        s3.put_object(Bucket=bucket, Key="lock", Body=b"fifth", IfMatch=first["ETag"])
    assert _error(info) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as info:  # If-None-Match with the current ETag
        s3.put_object(Bucket=bucket, Key="lock", Body=b"sixth", IfNoneMatch=replaced["ETag"])
    assert _error(info) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="absent", Body=b"x", IfMatch="*")
    assert _error(info) == (404, "NoSuchKey")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="absent")


def test_concurrent_conditional_writers_exactly_one_wins(live_store, bucket):
    writers = 6
    start = threading.Barrier(writers)
    outcomes: dict[int, str] = {}

    def write(i: int) -> None:
        client = live_store.client()
        body = f"writer {i} ".encode() * 50_000
        start.wait()
        try:
            client.put_object(Bucket=bucket, Key="once", Body=body, IfNoneMatch="*")
            outcomes[i] = "won"
        except ClientError as err:
            outcomes[i] = err.response["Error"]["Code"]

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    assert sorted(o for o in outcomes.values() if o != "won") == ["PreconditionFailed"] * (writers - 1)
    stored = _body(live_store.client(), bucket, "once")
    assert stored == f"writer {winners[0]} ".encode() * 50_000


def _upload(s3, bucket: str, key: str, body: bytes) -> tuple[str, list[dict[str, object]]]:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=body)
    return upload_id, [{"PartNumber": 1, "ETag": part["ETag"]}]


def test_complete_multipart_upload_with_if_none_match(s3, bucket):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"original")
    upload_id, parts = _upload(s3, bucket, "obj", b"replacement")
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="obj", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
        )
    assert _error(info) == (412, "PreconditionFailed")
    assert _body(s3, bucket, "obj") == b"original"
    # The upload survives a failed precondition: completing it unconditionally still works.
    s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert _body(s3, bucket, "obj") == b"replacement"

    upload_id, parts = _upload(s3, bucket, "new", b"fresh")
    s3.complete_multipart_upload(
        Bucket=bucket, Key="new", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
    )
    upload_id, parts = _upload(s3, bucket, "new", b"later")
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="new", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfMatch='"nope"'
        )
    assert _error(info) == (412, "PreconditionFailed")
    assert _body(s3, bucket, "new") == b"fresh"


def test_retried_complete_answers_the_same(s3, bucket):
    upload_id, parts = _upload(s3, bucket, "retry", b"payload")
    kwargs = {"Bucket": bucket, "Key": "retry", "UploadId": upload_id, "MultipartUpload": {"Parts": parts}}
    first = s3.complete_multipart_upload(**kwargs, IfNoneMatch="*")
    # The SDK's retry after a lost response: same request, the object now exists.
    again = s3.complete_multipart_upload(**kwargs, IfNoneMatch="*")
    assert again["ETag"] == first["ETag"]
    assert again["Key"] == "retry"
    assert _body(s3, bucket, "retry") == b"payload"
    # A different part list is not a retry of that completion.
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(**{**kwargs, "MultipartUpload": {"Parts": [{**parts[0], "ETag": '"00"'}]}})
    assert _error(info) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(**{**kwargs, "Key": "other"})
    assert _error(info) == (404, "NoSuchUpload")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_delete_object_if_match(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="d", Body=b"x")
    with pytest.raises(ClientError) as info:
        s3.delete_object(Bucket=bucket, Key="d", IfMatch='"feedface"')
    assert _error(info) == (412, "PreconditionFailed")
    assert _body(s3, bucket, "d") == b"x"
    s3.delete_object(Bucket=bucket, Key="d", IfMatch=put["ETag"])
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


# -- headers for features the store does not have


UNIMPLEMENTED_PUTS = [
    ({"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32}, "x-amz-server-side-encryption-customer-algorithm"),
    ({"ServerSideEncryption": "AES256"}, "x-amz-server-side-encryption"),
    ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/x"}, "x-amz-server-side-encryption"),
    ({"ACL": "public-read"}, "x-amz-acl"),
    ({"GrantRead": 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'}, "x-amz-grant-read"),
    ({"StorageClass": "GLACIER"}, "x-amz-storage-class"),
    ({"WebsiteRedirectLocation": "/elsewhere"}, "x-amz-website-redirect-location"),
    ({"ObjectLockLegalHoldStatus": "ON"}, "x-amz-object-lock-legal-hold"),
]


@pytest.mark.parametrize(("params", "header"), UNIMPLEMENTED_PUTS, ids=[h for _, h in UNIMPLEMENTED_PUTS])
def test_unimplemented_headers_answer_not_implemented(s3, bucket, params, header):
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="k", Body=b"secret", **params)
    assert _error(info) == (501, "NotImplemented")
    assert info.value.response["Error"]["Header"].lower() == header  # AWS's <Header> element
    assert header in info.value.response["Error"]["Message"].lower()
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    with pytest.raises(ClientError) as info:
        s3.create_multipart_upload(Bucket=bucket, Key="k", **params)
    assert _error(info) == (501, "NotImplemented")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_default_valued_headers_are_accepted(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v", ACL="private", StorageClass="STANDARD", RequestPayer="requester")
    with pytest.raises(ClientError) as info:
        s3.get_object(
            Bucket=bucket,
            Key="k",
            SSECustomerAlgorithm="AES256",
            SSECustomerKey=base64.b64encode(b"k" * 32).decode(),
        )
    assert _error(info) == (501, "NotImplemented")
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket=bucket + "-locked", ObjectLockEnabledForBucket=True)
    assert _error(info) == (501, "NotImplemented")
    assert bucket + "-locked" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as info:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert _error(info) == (501, "NotImplemented")


def test_expected_bucket_owner(live_store, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v", ExpectedBucketOwner=live_store.root[0])
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="k", ExpectedBucketOwner=live_store.other[0])
    assert _error(info) == (403, "AccessDenied")
    with pytest.raises(ClientError) as info:
        s3.copy_object(
            Bucket=bucket,
            Key="copy",
            CopySource={"Bucket": bucket, "Key": "k"},
            ExpectedSourceBucketOwner=live_store.other[0],
        )
    assert _error(info) == (403, "AccessDenied")


def test_aws_cli_sse_is_refused(live_store, bucket, tmp_path):
    if not AWS_CLI.exists():
        pytest.skip("the AWS CLI is not installed in this environment")
    source = tmp_path / "f.txt"
    source.write_bytes(b"plaintext")
    _, key_id, secret = live_store.root
    env = {
        "PATH": str(AWS_CLI.parent) + ":/usr/bin:/bin",
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    args = [str(AWS_CLI), "--endpoint-url", live_store.url, "s3", "cp", str(source), f"s3://{bucket}/f.txt"]
    result = subprocess.run([*args, "--sse", "AES256"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "NotImplemented" in result.stderr
    assert "x-amz-server-side-encryption" in result.stderr
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- full-object checksums


def _crc(algorithm: str, data: bytes) -> str:
    if algorithm == "CRC32":
        return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    return checksum_of(data, algorithm)  # CRC32C / CRC64NVME: checked against a bitwise reference in unit tests


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_full_object_checksum_multipart(s3, bucket, algorithm):
    member = f"Checksum{algorithm}"
    created = s3.create_multipart_upload(
        Bucket=bucket, Key="big", ChecksumAlgorithm=algorithm, ChecksumType="FULL_OBJECT"
    )
    assert created["ChecksumType"] == "FULL_OBJECT"
    assert created["ChecksumAlgorithm"] == algorithm
    upload_id = created["UploadId"]
    pieces = [bytes(range(256)) * (5 * MIB // 256), b"tail of the object" * 100]
    parts = []
    for number, piece in enumerate(pieces, start=1):
        part = s3.upload_part(
            Bucket=bucket,
            Key="big",
            UploadId=upload_id,
            PartNumber=number,
            Body=piece,
            **{member: _crc(algorithm, piece)},
        )
        parts.append({"PartNumber": number, "ETag": part["ETag"], member: part[member]})
    whole = b"".join(pieces)
    done_args = {"Bucket": bucket, "Key": "big", "UploadId": upload_id, "MultipartUpload": {"Parts": parts}}
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(**done_args, **{member: _crc(algorithm, whole[:-1])}, ChecksumType="FULL_OBJECT")
    assert _error(info) == (400, "BadDigest")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)

    done = s3.complete_multipart_upload(
        **done_args, **{member: _crc(algorithm, whole)}, ChecksumType="FULL_OBJECT", MpuObjectSize=len(whole)
    )
    assert done[member] == _crc(algorithm, whole)
    assert done["ChecksumType"] == "FULL_OBJECT"
    head = s3.head_object(Bucket=bucket, Key="big", ChecksumMode="ENABLED")
    assert head[member] == _crc(algorithm, whole)
    assert head["ChecksumType"] == "FULL_OBJECT"


def test_composite_checksum_on_completion_and_its_retry(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="c", ChecksumAlgorithm="SHA256")["UploadId"]
    body = b"composite" * 1000
    part = s3.upload_part(
        Bucket=bucket, Key="c", UploadId=upload_id, PartNumber=1, Body=body, ChecksumAlgorithm="SHA256"
    )
    parts = [{"PartNumber": 1, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]}]
    expected = checksum_of(hashlib.sha256(body).digest(), "SHA256") + "-1"
    done_args = {"Bucket": bucket, "Key": "c", "UploadId": upload_id, "MultipartUpload": {"Parts": parts}}
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(**done_args, ChecksumSHA256=checksum_of(b"other", "SHA256") + "-1")
    assert _error(info) == (400, "BadDigest")
    first = s3.complete_multipart_upload(**done_args, ChecksumSHA256=expected)
    assert (first["ChecksumSHA256"], first["ChecksumType"]) == (expected, "COMPOSITE")
    again = s3.complete_multipart_upload(**done_args, ChecksumSHA256=expected)
    assert (again["ETag"], again["ChecksumSHA256"]) == (first["ETag"], expected)


def test_checksum_type_rules(s3, bucket):
    with pytest.raises(ClientError) as info:
        s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="SHA256", ChecksumType="FULL_OBJECT")
    assert _error(info) == (400, "InvalidRequest")
    created = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC64NVME")
    assert created["ChecksumType"] == "FULL_OBJECT"
    created = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC32")
    assert created["ChecksumType"] == "COMPOSITE"


# -- listing and parts


def test_listing_edges(s3, bucket):
    for key in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    for listing in (s3.list_objects_v2(Bucket=bucket, MaxKeys=0), s3.list_objects(Bucket=bucket, MaxKeys=0)):
        assert listing["IsTruncated"] is False
        assert "Contents" not in listing
    with pytest.raises(ClientError) as info:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="")
    assert _error(info) == (400, "InvalidArgument")


def test_part_number_past_the_last_part(s3, bucket):
    s3.put_object(Bucket=bucket, Key="single", Body=b"one part")
    assert s3.get_object(Bucket=bucket, Key="single", PartNumber=1)["Body"].read() == b"one part"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="single", PartNumber=2)
    assert _error(info) == (416, "InvalidPartNumber")


def test_list_object_versions_of_an_unversioned_bucket(live_store, s3, bucket):
    for key in ("x/1", "x/2", "y"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"v")
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    listed = s3.list_object_versions(Bucket=bucket)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in listed["Versions"]] == [
        ("x/1", "null", True),
        ("x/2", "null", True),
        ("y", "null", True),
    ]
    assert "DeleteMarkers" not in listed
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1})
    assert [v["Key"] for page in pages for v in page.get("Versions", [])] == ["x/1", "x/2", "y"]
    grouped = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["x/"]
    assert [v["Key"] for v in grouped["Versions"]] == ["y"]
    # s3-tests' and rclone's clean-up: delete what the version listing named, version id and all.
    deleted = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in listed["Versions"]]},
        BypassGovernanceRetention=True,
    )
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["x/1", "x/2", "y"]
    assert "Versions" not in s3.list_object_versions(Bucket=bucket)
    with pytest.raises(ClientError) as info:
        live_store.client(live_store.other).list_object_versions(Bucket=bucket)
    assert _error(info) == (403, "AccessDenied")


# -- tagging


def test_object_tagging(live_store, s3, bucket):
    s3.put_object(Bucket=bucket, Key="t", Body=b"v", Tagging="team=ml&empty=")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [
        {"Key": "empty", "Value": ""},
        {"Key": "team", "Value": "ml"},
    ]
    assert s3.head_object(Bucket=bucket, Key="t")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [{"Key": "stage", "Value": "prod"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "stage", "Value": "prod"}]

    s3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "t"})
    assert s3.get_object_tagging(Bucket=bucket, Key="copied")["TagSet"] == [{"Key": "stage", "Value": "prod"}]
    s3.copy_object(
        Bucket=bucket,
        Key="retagged",
        CopySource={"Bucket": bucket, "Key": "t"},
        TaggingDirective="REPLACE",
        Tagging="a=b",
    )
    assert s3.get_object_tagging(Bucket=bucket, Key="retagged")["TagSet"] == [{"Key": "a", "Value": "b"}]

    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp", Tagging="from=upload")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=b"p")
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert s3.get_object_tagging(Bucket=bucket, Key="mp")["TagSet"] == [{"Key": "from", "Value": "upload"}]

    assert s3.delete_object_tagging(Bucket=bucket, Key="t")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []
    assert _body(s3, bucket, "t") == b"v"

    other = live_store.client(live_store.other)
    for call in (
        lambda: other.get_object_tagging(Bucket=bucket, Key="copied"),
        lambda: other.put_object_tagging(Bucket=bucket, Key="copied", Tagging={"TagSet": []}),
        lambda: other.delete_object_tagging(Bucket=bucket, Key="copied"),
    ):
        with pytest.raises(ClientError) as info:
            call()
        assert _error(info) == (403, "AccessDenied")
    assert s3.get_object_tagging(Bucket=bucket, Key="copied")["TagSet"] == [{"Key": "stage", "Value": "prod"}]


TAG_LIMITS = [
    [{"Key": str(i), "Value": "v"} for i in range(11)],
    [{"Key": "k" * 129, "Value": "v"}],
    [{"Key": "k", "Value": "v" * 257}],
    [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}],
    [{"Key": "aws:reserved", "Value": "v"}],
]


@pytest.mark.parametrize("tag_set", TAG_LIMITS, ids=["11-tags", "long-key", "long-value", "duplicate", "aws-prefix"])
def test_tag_limits(s3, bucket, tag_set):
    s3.put_object(Bucket=bucket, Key="t", Body=b"v", Tagging="keep=me")
    with pytest.raises(ClientError) as info:
        s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": tag_set})
    assert _error(info) == (400, "InvalidTag")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "keep", "Value": "me"}]
    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [{"Key": "k" * 128, "Value": "v" * 256}] * 1})


# -- object attributes


def test_get_object_attributes(live_store, s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="small", Body=b"foo")
    wanted = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
    small = s3.get_object_attributes(Bucket=bucket, Key="small", ObjectAttributes=wanted)
    assert (small["ETag"], small["ObjectSize"], small["StorageClass"]) == (put["ETag"].strip('"'), 3, "STANDARD")
    assert small["Checksum"] == {"ChecksumCRC32": _crc("CRC32", b"foo"), "ChecksumType": "FULL_OBJECT"}
    assert "ObjectParts" not in small

    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32")["UploadId"]
    pieces = [b"a" * (5 * MIB), b"b" * (5 * MIB), b"c" * 10]
    parts = []
    for number, piece in enumerate(pieces, start=1):
        part = s3.upload_part(
            Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=number, Body=piece, ChecksumAlgorithm="CRC32"
        )
        parts.append({"PartNumber": number, "ETag": part["ETag"], "ChecksumCRC32": part["ChecksumCRC32"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts})
    page = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=wanted, MaxParts=1, PartNumberMarker=1)
    object_parts = page["ObjectParts"]
    assert (object_parts["TotalPartsCount"], object_parts["IsTruncated"], object_parts["NextPartNumberMarker"]) == (
        3,
        True,
        2,
    )
    assert object_parts["Parts"] == [{"PartNumber": 2, "Size": 5 * MIB, "ChecksumCRC32": _crc("CRC32", pieces[1])}]
    assert page["Checksum"]["ChecksumType"] == "COMPOSITE"
    # GetObject of one part carries that part's checksum (botocore validates the body against it).
    third = s3.get_object(Bucket=bucket, Key="mp", PartNumber=3, ChecksumMode="ENABLED")
    assert third["Body"].read() == pieces[2]
    assert (third["ChecksumCRC32"], third["ChecksumType"]) == (_crc("CRC32", pieces[2]), "COMPOSITE")
    with pytest.raises(ClientError) as info:
        live_store.client(live_store.other).get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=wanted)
    assert _error(info) == (403, "AccessDenied")
