"""Object tagging: Get/Put/DeleteObjectTagging (``?tagging``); ``x-amz-tagging`` on writes is read in ``common``."""

from __future__ import annotations

from flask import Response

from neurondock_platform.api.s3 import xmlio
from neurondock_platform.api.s3.common import empty_response, store, xml_response
from neurondock_platform.api.s3.payload import read_small_body
from neurondock_platform.models import Bucket
from neurondock_platform.services import objects as svc
from neurondock_platform.services.credentials import CredentialCache


def get_object_tagging(bucket: Bucket, key: str) -> Response:
    info = store().head_object(bucket.name, key)
    root = xmlio.root("Tagging")
    tag_set = xmlio.sub(root, "TagSet")
    for name, value in info.meta.tags:
        tag = xmlio.sub(tag_set, "Tag")
        xmlio.sub(tag, "Key", name)
        xmlio.sub(tag, "Value", value)
    return xml_response(root)


def put_object_tagging(credentials: CredentialCache, bucket: Bucket, key: str) -> Response:
    document = xmlio.parse(read_small_body(credentials, limit=64 * 1024), "Tagging")
    tag_set = document.find("TagSet")
    if tag_set is None:
        raise svc.MalformedXML()
    pairs = []
    for tag in tag_set.findall("Tag"):
        name, value = xmlio.text(tag, "Key"), xmlio.text(tag, "Value")
        if name is None or value is None:
            raise svc.MalformedXML()
        pairs.append((name, value))
    store().set_tags(bucket.name, key, pairs)
    return empty_response(200)


def delete_object_tagging(bucket: Bucket, key: str) -> Response:
    store().set_tags(bucket.name, key, ())
    return empty_response(204)
