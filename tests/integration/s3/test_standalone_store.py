"""`neurondock store`: the embedded S3 store as a process of its own, sharing keys through the database."""

from __future__ import annotations

import subprocess

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from tests.support.platform import ACCESS_KEY, REGION, SECRET_KEY
from tests.support.store import start_store


@pytest.fixture
def store(tmp_path):
    proc, url = start_store(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    yield url + "/s3", tmp_path / "store"
    proc.terminate()
    proc.wait(10)


def _s3(url, key=ACCESS_KEY, secret=SECRET_KEY):
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_store_serves_s3_with_the_database_keys_and_keeps_objects_in_its_data_dir(store):
    url, data_dir = store
    s3 = _s3(url)
    s3.create_bucket(Bucket="shared")
    s3.put_object(Bucket="shared", Key="a/b.bin", Body=b"x" * 1000)
    assert s3.get_object(Bucket="shared", Key="a/b.bin")["Body"].read() == b"x" * 1000
    assert any(p.is_file() for p in (data_dir / "objects").rglob("*"))
    with pytest.raises(ClientError) as err:
        _s3(url, secret="not-the-secret").list_objects_v2(Bucket="shared")
    assert err.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
