"""Bucket operations over the signed rest-xml API: create, head, list, location, delete, ownership."""

from __future__ import annotations

from tests.integration.s3.s3_helpers import error_code, key_path, parse_xml

CONFIG_EU = (
    b'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"
)


def test_create_head_and_list_buckets(s3_request):
    resp = s3_request("PUT", "/alpha")
    assert resp.status_code == 200
    assert resp.headers["Location"] == "/alpha"
    assert resp.headers["x-amz-request-id"]
    assert s3_request("PUT", "/beta").status_code == 200

    head = s3_request("HEAD", "/alpha")
    assert head.status_code == 200
    assert head.headers["x-amz-bucket-region"] == "us-east-1"
    assert head.data == b""

    listed = parse_xml(s3_request("GET", "/").data)
    assert listed.tag == "ListAllMyBucketsResult"
    assert [b.findtext("Name") for b in listed.iter("Bucket")] == ["alpha", "beta"]
    assert listed.findtext("Owner/ID") == "123456789012"
    assert listed.find("Buckets/Bucket/CreationDate").text.endswith("Z")


def test_create_bucket_with_location_constraint(s3_request):
    assert s3_request("PUT", "/eu-bucket", body=CONFIG_EU).status_code == 200
    location = parse_xml(s3_request("GET", "/eu-bucket?location").data)
    assert location.tag == "LocationConstraint"
    assert location.text == "eu-west-1"
    assert s3_request("HEAD", "/eu-bucket").headers["x-amz-bucket-region"] == "eu-west-1"


def test_us_east_1_location_is_empty(s3_request, bucket):
    location = parse_xml(s3_request("GET", f"/{bucket}?location").data)
    assert location.tag == "LocationConstraint"
    assert not location.text


def test_malformed_bucket_configuration(s3_request):
    resp = s3_request("PUT", "/cfg-bucket", body=b"<CreateBucketConfiguration><oops")
    assert resp.status_code == 400
    assert error_code(resp) == "MalformedXML"
    resp = s3_request(
        "PUT",
        "/cfg-bucket",
        body=b"<CreateBucketConfiguration><LocationConstraint>moon</LocationConstraint></CreateBucketConfiguration>",
    )
    assert error_code(resp) == "InvalidLocationConstraint"
    assert s3_request("HEAD", "/cfg-bucket").status_code == 404


def test_create_existing_bucket_you_own(s3_request, bucket):
    """S3's legacy us-east-1 behaviour: re-creating your own bucket there succeeds; elsewhere it is a 409."""
    resp = s3_request("PUT", f"/{bucket}")
    assert resp.status_code == 200, resp.data
    config = (
        b"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"
    )
    assert s3_request("PUT", "/eu-bucket", body=config).status_code == 200
    for name, body in (("eu-bucket", config), ("eu-bucket", b""), (bucket, config)):
        resp = s3_request("PUT", f"/{name}", body=body)
        assert resp.status_code == 409, (name, body)
        assert error_code(resp) == "BucketAlreadyOwnedByYou"
        assert parse_xml(resp.data).findtext("BucketName") == name


INVALID_NAMES = [
    "ab",
    "a" * 64,
    "Upper",
    "under_score",
    "-dash",
    "dash-",
    "a..b",
    "192.168.1.1",
    "xn--abc",
    "b.-c",
]


def test_invalid_bucket_names(s3_request, settings):
    for name in [*INVALID_NAMES, "a-s3alias"]:
        resp = s3_request("PUT", f"/{name}")
        assert resp.status_code == 400, name
        assert error_code(resp) == "InvalidBucketName"
        assert not (settings.objects_dir / name).exists()


def test_missing_bucket(s3_request):
    for method, path in [("GET", "/nope?list-type=2"), ("DELETE", "/nope"), ("GET", "/nope/key")]:
        resp = s3_request(method, path)
        assert resp.status_code == 404
        assert error_code(resp) == "NoSuchBucket"
        assert parse_xml(resp.data).findtext("BucketName") == "nope"
    head = s3_request("HEAD", "/nope")
    assert head.status_code == 404
    assert head.data == b""


def test_dotdot_bucket_never_touches_disk(s3_request, settings):
    for path in ["/../x", "/%2E%2E/x", "/..", "/.locks/x"]:
        resp = s3_request("GET", path)
        assert resp.status_code in (400, 403, 404), path
    assert not (settings.objects_dir.parent / "x").exists()


def test_delete_bucket(s3_request, bucket):
    assert s3_request("PUT", key_path(bucket, "k"), body=b"x").status_code == 200
    resp = s3_request("DELETE", f"/{bucket}")
    assert resp.status_code == 409
    assert error_code(resp) == "BucketNotEmpty"
    assert s3_request("DELETE", key_path(bucket, "k")).status_code == 204
    assert s3_request("DELETE", f"/{bucket}").status_code == 204
    assert s3_request("HEAD", f"/{bucket}").status_code == 404
    # The name is free again.
    assert s3_request("PUT", f"/{bucket}").status_code == 200


def test_delete_bucket_discards_unfinished_uploads(s3_request, bucket):
    resp = s3_request("POST", key_path(bucket, "big") + "?uploads")
    assert resp.status_code == 200
    assert s3_request("DELETE", f"/{bucket}").status_code == 204


def test_another_accounts_bucket(s3_request, bucket, other_account):
    _, access_key, secret = other_account
    as_other = {"access_key": access_key, "secret_key": secret}
    assert s3_request("PUT", key_path(bucket, "k"), body=b"mine").status_code == 200

    listed = parse_xml(s3_request("GET", "/", **as_other).data)
    assert [b.findtext("Name") for b in listed.iter("Bucket")] == []
    for method, path, body in [
        ("GET", key_path(bucket, "k"), b""),
        ("PUT", key_path(bucket, "k"), b"theirs"),
        ("DELETE", key_path(bucket, "k"), b""),
        ("GET", f"/{bucket}?list-type=2", b""),
        ("DELETE", f"/{bucket}", b""),
        ("POST", key_path(bucket, "k") + "?uploads", b""),
    ]:
        resp = s3_request(method, path, body=body, **as_other)
        assert resp.status_code == 403, (method, path)
        assert error_code(resp) == "AccessDenied"
    assert s3_request("HEAD", f"/{bucket}", **as_other).status_code == 403
    resp = s3_request("PUT", f"/{bucket}", **as_other)
    assert resp.status_code == 409
    assert error_code(resp) == "BucketAlreadyExists"
    # Nothing changed for the owner.
    assert s3_request("GET", key_path(bucket, "k")).data == b"mine"
    # And the other account can have its own buckets.
    assert s3_request("PUT", "/theirs", **as_other).status_code == 200
    assert [b.findtext("Name") for b in parse_xml(s3_request("GET", "/").data).iter("Bucket")] == [bucket]


def test_list_buckets_prefix_and_paging(s3_request):
    for name in ["pa-1", "pa-2", "pa-3", "zz-1"]:
        assert s3_request("PUT", f"/{name}").status_code == 200
    first = parse_xml(s3_request("GET", "/?prefix=pa-&max-buckets=2").data)
    assert [b.findtext("Name") for b in first.iter("Bucket")] == ["pa-1", "pa-2"]
    token = first.findtext("ContinuationToken")
    assert token
    second = parse_xml(s3_request("GET", f"/?prefix=pa-&max-buckets=2&continuation-token={token}").data)
    assert [b.findtext("Name") for b in second.iter("Bucket")] == ["pa-3"]
    assert second.findtext("ContinuationToken") is None


def test_unsupported_subresource_and_method(s3_request, bucket, client):
    resp = s3_request("GET", f"/{bucket}?acl")
    assert resp.status_code == 501
    assert error_code(resp) == "NotImplemented"
    resp = s3_request("PATCH", f"/{bucket}")
    assert resp.status_code == 405
    assert error_code(resp) == "MethodNotAllowed"
    resp = s3_request("POST", "/")
    assert resp.status_code == 405
    assert resp.headers["Content-Type"] == "application/xml"
    # PostObject (a browser form upload, signed by a policy in the form) is not implemented, so says so.
    form = b'--b\r\nContent-Disposition: form-data; name="key"\r\n\r\nk\r\n--b--\r\n'
    resp = client.post(f"/s3/{bucket}", data=form, content_type="multipart/form-data; boundary=b")
    assert resp.status_code == 501
    assert error_code(resp) == "NotImplemented"
    assert s3_request("HEAD", f"/{bucket}/k").status_code == 404


def test_get_bucket_versioning(s3_request, bucket):
    resp = s3_request("GET", f"/{bucket}?versioning")
    assert resp.status_code == 200
    assert parse_xml(resp.data).tag == "VersioningConfiguration"
