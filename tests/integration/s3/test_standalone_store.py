"""`neurondock store`: the embedded S3 store as a process of its own, sharing keys through the database."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from tests.support.platform import ACCESS_KEY, ACCOUNT_ID, REGION, SECRET_KEY, free_port
from tests.support.waiting import wait_for


@pytest.fixture
def store(tmp_path):
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "NEURONDOCK_DATA_DIR": str(tmp_path / "store"),
        "NEURONDOCK_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "NEURONDOCK_PORT": str(port),
        "NEURONDOCK_ROOT_ACCESS_KEY_ID": ACCESS_KEY,
        "NEURONDOCK_ROOT_SECRET_ACCESS_KEY": SECRET_KEY,
        "NEURONDOCK_ACCOUNT_ID": ACCOUNT_ID,
    }
    cli = [sys.executable, "-m", "neurondock_platform.cli"]
    # The operator's two steps: migrate (which bootstraps the root key), then run the store.
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen([*cli, "store"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        with urllib.request.urlopen(url + "/ping", timeout=1):
            return True

    wait_for(answers, 30, what="the store to answer /ping", ignoring=(OSError,))
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
