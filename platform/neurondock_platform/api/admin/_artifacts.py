"""Admin routes for artifacts: list, upload and download, per account (embedded store or external S3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from flask import Blueprint, Response, request

from neurondock_platform.api import context
from neurondock_platform.api.admin import _params as params
from neurondock_platform.api.admin._auth import caller
from neurondock_platform.api.admin._errors import BadRequest, json_body
from neurondock_platform.services import artifacts, objects
from neurondock_platform.services.fleet import iso


def object_json(info: objects.ObjectInfo) -> dict[str, object]:
    return {
        "bucket": info.bucket,
        "key": info.key,
        "size": info.size,
        "etag": info.etag,
        "content_type": info.content_type,
        "last_modified": iso(info.last_modified),
        "s3_uri": artifacts.s3_uri(info.bucket, info.key),
    }


def _key() -> str:
    key = params.string("key", max_length=objects.MAX_KEY_BYTES)
    if not key:
        raise BadRequest("Query parameter 'key' is required.")
    try:
        objects.validate_key(key)
    except objects.S3Error as exc:
        raise BadRequest(exc.message) from exc
    return key


def _bucket(name: str) -> str:
    try:
        objects.validate_bucket_name(name)
    except objects.S3Error as exc:
        raise BadRequest(f"{exc.message}: {name!r}") from exc
    return name


def _upload_body() -> IO[bytes] | bytes:
    # SigV4 has already read the body to check it against the signed payload hash; a bearer token
    # signs no body, so it streams.
    if caller().method == "bearer":
        return request.stream
    return request.get_data(cache=True)


def iter_file(handle: IO[bytes], chunk: int = 256 * 1024) -> Iterator[bytes]:
    """Yield a file's bytes in chunks and close it (a streamed download's body)."""
    with handle:
        while True:
            data = handle.read(chunk)
            if not data:
                return
            yield data


def register(bp: Blueprint) -> None:
    @bp.get("/artifacts")
    def list_buckets() -> Response:
        who = caller()
        settings = context.settings()
        if settings.s3_endpoint_url:
            # An external store: the account's one artifact bucket (see services/external_artifacts.py).
            name = objects.artifact_bucket_name(who.account_id)
            listed = [{"name": name, "created_at": None, "region": settings.region}]
        else:
            listed = [
                {"name": b.name, "created_at": iso(b.created_at), "region": b.region}
                for b in objects.list_buckets(context.db(), who.account_id)
            ]
        items, token = params.slice_page(listed, scope=f"buckets:{who.account_id}")
        return json_body(
            {"items": items, "next_token": token, "default_bucket": objects.artifact_bucket_name(who.account_id)}
        )

    @bp.get("/artifacts/<bucket>")
    def list_objects(bucket: str) -> Response:
        page = artifacts.list_artifacts(
            context.db(),
            context.settings(),
            account_id=caller().account_id,
            bucket=_bucket(bucket),
            prefix=params.string("prefix", "", max_length=objects.MAX_KEY_BYTES) or "",
            limit=params.integer("limit", params.DEFAULT_LIMIT, minimum=1, maximum=1000),
            next_token=params.string("next_token", max_length=4096),
        )
        return json_body({"items": [object_json(i) for i in page.items], "next_token": page.next_token})

    @bp.put("/artifacts/<bucket>/object")
    def put_object(bucket: str) -> Response:
        session = context.db()
        info = artifacts.put_artifact(
            session,
            context.settings(),
            account_id=caller().account_id,
            bucket=_bucket(bucket),
            key=_key(),
            body=_upload_body(),
            content_type=request.headers.get("Content-Type"),
        )
        session.commit()
        return json_body(object_json(info), status=201)

    @bp.get("/artifacts/<bucket>/object")
    def get_object(bucket: str) -> Response:
        info, handle = artifacts.open_artifact(
            context.db(), context.settings(), account_id=caller().account_id, bucket=_bucket(bucket), key=_key()
        )
        filename = info.key.rsplit("/", 1)[-1].replace('"', "") or "artifact"
        return Response(
            iter_file(handle),
            content_type=info.content_type,
            headers={
                "Content-Length": str(info.size),
                "ETag": info.quoted_etag,
                "Content-Disposition": f'attachment; filename="{filename}"',
            },
            direct_passthrough=True,
        )
