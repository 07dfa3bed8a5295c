"""A PUT refused before its body was read must not poison the next request on the connection."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from a2wsgi import WSGIMiddleware
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.support.platform import free_port
from tests.support.waiting import wait_for


@pytest.fixture
def live_url(app):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(WSGIMiddleware(app), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, what="uvicorn to start", interval=0.01)
    yield f"http://127.0.0.1:{port}/s3"
    server.should_exit = True
    thread.join(10)


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_put_to_missing_bucket_then_put_again_is_fast(live_url, engine):
    s3 = boto3.client(
        "s3",
        endpoint_url=live_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    s3.create_bucket(Bucket="exists")
    with pytest.raises(s3.exceptions.NoSuchBucket):
        s3.put_object(Bucket="missing", Key="k", Body=bytes(100_000))
    started = time.monotonic()
    s3.put_object(Bucket="exists", Key="k", Body=bytes(100_000))
    # Without the fix the second call waits out botocore's 60 s read timeout.
    assert time.monotonic() - started < 10
    assert s3.get_object(Bucket="exists", Key="k")["Body"].read() == bytes(100_000)
