"""The admin upload flow's bucket, ``nd-artifacts-<account id>``, belongs to that account before it exists.

Bucket names are global: if another account could create it first, the owner's uploads through the
admin API, the console and ``neurondock deploy`` would answer 409 from then on, and whatever the
squatter put there would be served as the owner's artifacts.
"""

from __future__ import annotations

import pytest
from tests.integration.admin.admin_helpers import AdminClient

from neurondock_platform.db import session_scope
from neurondock_platform.services import objects
from neurondock_platform.services.accounts import create_account


@pytest.fixture
def accounts(session_factory) -> dict[str, tuple[str, str, str]]:
    """Two ordinary accounts: (account id, access key id, secret)."""
    out = {}
    with session_scope(session_factory) as session:
        for name in ("owner", "squatter"):
            account, key = create_account(session, name)
            out[name] = (account.id, key.access_key_id, key.secret_access_key)
    return out


def _error_code(resp) -> str:
    return resp.get_data(as_text=True).split("<Code>", 1)[-1].split("</Code>", 1)[0]


def test_another_account_cannot_take_the_owners_artifact_bucket(client, s3_request, accounts):
    owner_id, owner_key, owner_secret = accounts["owner"]
    _, squat_key, squat_secret = accounts["squatter"]
    bucket = objects.artifact_bucket_name(owner_id)

    squat = s3_request("PUT", f"/{bucket}", access_key=squat_key, secret_key=squat_secret)
    assert squat.status_code == 409, squat.get_data(as_text=True)
    assert _error_code(squat) == "BucketAlreadyExists"

    # The owner's upload flow still creates and uses it.
    owner = AdminClient(client, owner_key, owner_secret)
    up = owner.request("PUT", f"/artifacts/{bucket}/object", query={"key": "models/m.tar.gz"}, data=b"weights")
    assert up.status_code == 201, up.get_data(as_text=True)
    assert up.get_json()["s3_uri"] == f"s3://{bucket}/models/m.tar.gz"

    # Taking it over now fails as for any owned bucket, and the owner's object stays the owner's.
    again = s3_request("PUT", f"/{bucket}", access_key=squat_key, secret_key=squat_secret)
    assert (again.status_code, _error_code(again)) == (409, "BucketAlreadyExists")
    peek = s3_request("GET", f"/{bucket}/models/m.tar.gz", access_key=squat_key, secret_key=squat_secret)
    assert (peek.status_code, _error_code(peek)) == (403, "AccessDenied")


def test_an_account_creates_its_own_artifact_bucket_directly(s3_request, accounts):
    owner_id, owner_key, owner_secret = accounts["owner"]
    bucket = objects.artifact_bucket_name(owner_id)
    created = s3_request("PUT", f"/{bucket}", access_key=owner_key, secret_key=owner_secret)
    assert created.status_code == 200, created.get_data(as_text=True)
    # Creating it again is S3's legacy us-east-1 answer for a bucket you own: 200 (docs/s3.md).
    again = s3_request("PUT", f"/{bucket}", access_key=owner_key, secret_key=owner_secret)
    assert again.status_code == 200, again.get_data(as_text=True)
