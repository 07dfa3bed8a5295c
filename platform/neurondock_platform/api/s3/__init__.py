"""The embedded S3-compatible store over rest-xml, mounted at ``/s3`` with path-style addressing.

Unmodified ``boto3.client("s3", endpoint_url=".../s3")`` and ``aws s3 … --endpoint-url .../s3`` drive it
(s3-wire.md). Every request is SigV4-signed with service ``s3``; the handlers in ``buckets``,
``objects`` and ``multipart`` only parse the request and call ``services.objects``.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from neurondock_platform.api import context
from neurondock_platform.api.auth import CredentialCache, authenticate
from neurondock_platform.api.s3 import buckets, multipart, objects, presign
from neurondock_platform.api.s3.errors import render_error
from neurondock_platform.models import Bucket
from neurondock_platform.services import objects as svc

METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]
# Sub-resources S3 has and this store does not implement: answered NotImplemented, never ignored.
UNSUPPORTED = frozenset(
    {
        "accelerate", "acl", "analytics", "attributes", "cors", "encryption", "intelligent-tiering",
        "inventory", "legal-hold", "lifecycle", "logging", "metadataTable", "metrics", "notification",
        "object-lock", "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "replication",
        "requestPayment", "restore", "retention", "select", "tagging", "torrent", "versionId", "versions",
        "website",
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
        g.s3_resource = "/" + rest
        g.s3_base = request.path[: len(request.path) - len(rest)] if rest else request.path.rstrip("/") + "/"
        if request.method in ("OPTIONS", "PATCH"):
            raise svc.MethodNotAllowed(
                method=request.method, resource_type="OBJECT" if "/" in rest else "BUCKET"
            )
        auth = (
            presign.authenticate_query(credentials)
            if presign.is_presigned()
            else authenticate(request, credentials, streamed_body=True)
        )
        if auth.service != "s3":
            raise svc.AuthorizationHeaderMalformed(
                reason=f'incorrect service "{auth.service}". This endpoint belongs to "s3".'
            )
        bucket, _, key = rest.partition("/")
        return route(credentials, bucket, key)

    # Werkzeug's ``path`` converter refuses a leading "/" (``/s3//key``); this one takes any rest.
    bp.record_once(_register_converter)
    bp.add_url_rule(
        "/", "service", entry, methods=METHODS, provide_automatic_options=False, strict_slashes=False
    )
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


def _owned(name: str) -> Bucket:
    bucket = svc.owned_bucket(context.db(), name, context.auth().account_id)
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
        raise svc.NotImplementedFeature(
            f"The {unsupported[0]} sub-resource is not implemented by neurondock's object store."
        )
    if not bucket_name and key:
        raise svc.InvalidBucketName(bucket="")
    if not bucket_name:
        if method == "GET":
            return buckets.list_buckets()
        raise svc.MethodNotAllowed(method=method, resource_type="SERVICE")
    if not key:
        return _bucket_operation(credentials, bucket_name)
    svc.validate_key(key)
    bucket = _owned(bucket_name)
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
    raise svc.MethodNotAllowed(method=method, resource_type="OBJECT")


def _bucket_operation(credentials: CredentialCache, name: str) -> Response:
    method, args = request.method, request.args
    if method == "PUT":
        if "versioning" in args:
            raise svc.NotImplementedFeature(
                "Bucket versioning is not implemented by neurondock's object store."
            )
        return buckets.create_bucket(credentials, name)
    bucket = _owned(name)
    if method == "HEAD":
        return buckets.head_bucket(bucket)
    if method == "DELETE":
        return buckets.delete_bucket(bucket)
    if method == "POST":
        if "delete" in args:
            return objects.delete_objects(credentials, bucket)
        raise svc.MethodNotAllowed(method=method, resource_type="BUCKET")
    if method == "GET":
        if "location" in args:
            return buckets.get_bucket_location(bucket)
        if "versioning" in args:
            return buckets.get_bucket_versioning(bucket)
        if "uploads" in args:
            return multipart.list_multipart_uploads(bucket)
        if args.get("list-type") == "2":
            return buckets.list_objects_v2(bucket)
        if "list-type" in args:
            raise svc.InvalidArgument(
                "Invalid List Type specified in Request", name="list-type", value=args["list-type"]
            )
        return buckets.list_objects_v1(bucket)
    raise svc.MethodNotAllowed(method=method, resource_type="BUCKET")
