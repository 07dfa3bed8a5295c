"""The embedded S3-compatible store over rest-xml, mounted at ``/s3`` with path-style addressing.

Unmodified ``boto3.client("s3", endpoint_url=".../s3")`` and ``aws s3 … --endpoint-url .../s3`` drive it
(docs/s3.md). Every request is SigV4-signed with service ``s3``; the handlers in ``buckets``,
``objects`` and ``multipart`` only parse the request and call ``services.objects``.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from flask import Blueprint, Response, g, request
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from neurondock_platform.api import auth as sigv4_auth
from neurondock_platform.api import context
from neurondock_platform.api.s3 import attributes, buckets, headers, multipart, objects, presign, tagging
from neurondock_platform.api.s3.errors import (
    InvalidURI,
    MethodNotAllowed,
    NotImplementedFeature,
    render_error,
)
from neurondock_platform.errors import MissingAuthenticationTokenException
from neurondock_platform.models import Bucket
from neurondock_platform.services import objects as svc
from neurondock_platform.services.credentials import CredentialCache

METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]
# Sub-resources S3 has and this store does not implement: answered NotImplemented, never ignored.
# (``tagging`` is implemented on objects only; ``versionId`` only as "null", the one version there is.)
UNSUPPORTED = frozenset(
    {
        "accelerate", "acl", "analytics", "cors", "encryption", "intelligent-tiering",
        "inventory", "legal-hold", "lifecycle", "logging", "metadataTable", "metrics", "notification",
        "object-lock", "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "replication",
        "requestPayment", "restore", "retention", "select", "torrent", "versionId", "website",
    }
)  # fmt: skip


class _AnyPath(BaseConverter):
    regex = ".*?"
    part_isolating = False


def _register_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("s3path", _AnyPath)


def make_blueprint(credentials: CredentialCache) -> Blueprint:
    """Build the S3 blueprint; register it at ``url_prefix="/s3"``."""
    bp = Blueprint("s3", __name__)

    def entry(rest: str = "") -> Response:
        refuse_unparsable_path()
        g.s3_resource = "/" + rest
        g.s3_base = request.path[: len(request.path) - len(rest)] if rest else request.path.rstrip("/") + "/"
        if request.method in ("OPTIONS", "PATCH"):
            raise MethodNotAllowed(method=request.method, resource_type="OBJECT" if "/" in rest else "BUCKET")
        if _is_post_object(rest):
            # Browser form uploads sign a policy in the form instead of the request: not implemented.
            raise NotImplementedFeature("POST Object (browser-based form uploads) is not implemented.")
        if presign.is_presigned():
            presign.authenticate_query(credentials)
        else:
            if not request.headers.get("Authorization"):
                # Refused before the body is touched: reading it would send "100 Continue" to a client
                # that asked first (Expect: 100-continue) and then upload a body only to get 403.
                raise MissingAuthenticationTokenException()
            sigv4_auth.authenticate(request, services={sigv4_auth.S3}, streamed_body=True, unsigned_payload=True)
        headers.refuse_unimplemented()
        bucket, _, key = rest.partition("/")
        return route(credentials, bucket, key)

    # Werkzeug's ``path`` converter refuses a leading "/" (``/s3//key``); this one takes any rest.
    bp.record_once(_register_converter)
    bp.add_url_rule("/", "service", entry, methods=METHODS, provide_automatic_options=False, strict_slashes=False)
    bp.add_url_rule(
        "/<s3path:rest>",
        "resource",
        entry,
        methods=METHODS,
        provide_automatic_options=False,
        merge_slashes=False,
    )
    bp.register_error_handler(Exception, render_error)
    return bp


def _path_bytes() -> bytes:
    """The request path's bytes, escapes decoded, before any server read them as text."""
    environ = request.environ
    scope = environ.get("asgi.scope")  # a2wsgi under uvicorn: the ASGI scope keeps the raw bytes
    if isinstance(scope, dict) and isinstance(scope.get("raw_path"), bytes):
        return unquote_to_bytes(scope["raw_path"])
    for name in ("RAW_URI", "REQUEST_URI"):  # gunicorn, Werkzeug's server
        if environ.get(name):
            return unquote_to_bytes(str(environ[name]).encode("latin-1").partition(b"?")[0])
    # PEP 3333: PATH_INFO carries the decoded bytes as latin-1 text.
    return str(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1", "replace")


def refuse_unparsable_path() -> None:
    """Refuse a path whose bytes are not UTF-8, before servers replace them with U+FFFD (docs/s3.md)."""
    try:
        _path_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidURI() from None


def _is_post_object(rest: str) -> bool:
    """Whether this is S3's PostObject: a multipart/form-data POST to a bucket."""
    content_type = request.headers.get("Content-Type", "").lower()
    return request.method == "POST" and "/" not in rest.strip("/") and content_type.startswith("multipart/form-data")


def _owned(name: str) -> Bucket:
    bucket = svc.owned_bucket(context.db(), name, context.auth().account_id)
    expected_owner = request.headers.get("x-amz-expected-bucket-owner")
    if expected_owner is not None and expected_owner != bucket.account_id:
        raise svc.AccessDenied()
    store = svc.ObjectStore(context.settings().objects_dir)
    if not store.bucket_exists(name):
        # The row outlived its directory (a wiped data dir): an empty bucket again.
        store.create_bucket(name)
    return bucket


def route(credentials: CredentialCache, bucket_name: str, key: str) -> Response:
    """Pick the S3 operation from the method, the path level and the sub-resource."""
    method, args = request.method, request.args
    unsupported = sorted(UNSUPPORTED.intersection(args))
    if unsupported and not (unsupported == ["versionId"] and args.get("versionId") == "null"):
        raise NotImplementedFeature(
            f"The {unsupported[0]} sub-resource is not implemented by neurondock's object store."
        )
    if not bucket_name and key:
        raise svc.InvalidBucketName(bucket="")
    if not bucket_name:
        if method == "GET":
            return buckets.list_buckets()
        raise MethodNotAllowed(method=method, resource_type="SERVICE")
    if not key:
        return _bucket_operation(credentials, bucket_name)
    svc.validate_key(key)
    bucket = _owned(bucket_name)
    if "tagging" in args:
        return _tagging_operation(credentials, bucket, key)
    if method == "PUT":
        if "uploadId" in args or "partNumber" in args:
            if "x-amz-copy-source" in request.headers:
                return multipart.upload_part_copy(bucket, key)
            return multipart.upload_part(credentials, bucket, key)
        if "x-amz-copy-source" in request.headers:
            return objects.copy_object(bucket, key)
        return objects.put_object(credentials, bucket, key)
    if method in ("GET", "HEAD"):
        if "uploadId" in args and method == "GET":
            return multipart.list_parts(bucket, key)
        if "attributes" in args and method == "GET":
            return attributes.get_object_attributes(bucket, key)
        return objects.get_object(bucket, key, head=method == "HEAD")
    if method == "DELETE":
        if "uploadId" in args:
            return multipart.abort_multipart_upload(bucket, key)
        return objects.delete_object(bucket, key)
    if method == "POST":
        if "uploads" in args:
            return multipart.create_multipart_upload(bucket, key)
        if "uploadId" in args:
            return multipart.complete_multipart_upload(credentials, bucket, key)
    raise MethodNotAllowed(method=method, resource_type="OBJECT")


def _tagging_operation(credentials: CredentialCache, bucket: Bucket, key: str) -> Response:
    if request.method == "GET":
        return tagging.get_object_tagging(bucket, key)
    if request.method == "PUT":
        return tagging.put_object_tagging(credentials, bucket, key)
    if request.method == "DELETE":
        return tagging.delete_object_tagging(bucket, key)
    raise MethodNotAllowed(method=request.method, resource_type="OBJECT")


def _bucket_operation(credentials: CredentialCache, name: str) -> Response:
    method, args = request.method, request.args
    if "tagging" in args:
        raise NotImplementedFeature("Bucket tagging is not implemented by neurondock's object store.")
    if method == "PUT":
        if "versioning" in args:
            raise NotImplementedFeature("Bucket versioning is not implemented by neurondock's object store.")
        return buckets.create_bucket(credentials, name)
    bucket = _owned(name)
    if method == "HEAD":
        return buckets.head_bucket(bucket)
    if method == "DELETE":
        return buckets.delete_bucket(bucket)
    if method == "POST":
        if "delete" in args:
            return objects.delete_objects(credentials, bucket)
        raise NotImplementedFeature("POST Object (browser-based form uploads) is not implemented.")
    if method == "GET":
        if "location" in args:
            return buckets.get_bucket_location(bucket)
        if "versioning" in args:
            return buckets.get_bucket_versioning(bucket)
        if "versions" in args:
            return buckets.list_object_versions(bucket)
        if "uploads" in args:
            return multipart.list_multipart_uploads(bucket)
        if args.get("list-type") == "2":
            return buckets.list_objects_v2(bucket)
        if "list-type" in args:
            raise svc.InvalidArgument(
                "Invalid List Type specified in Request", name="list-type", value=args["list-type"]
            )
        return buckets.list_objects_v1(bucket)
    raise MethodNotAllowed(method=method, resource_type="BUCKET")
