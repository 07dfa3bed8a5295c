"""The S3 clients one process builds share one botocore data loader: S3's service model is parsed once."""

from __future__ import annotations

from neurondock_platform.s3_client import make_s3_client


def test_clients_share_one_loader_whose_search_paths_do_not_grow():
    clients = [
        make_s3_client("http://127.0.0.1:9", "us-east-1", access_key_id=f"AK{i}", secret_access_key="s")
        for i in range(3)
    ]

    assert len({id(client._loader) for client in clients}) == 1
    paths = clients[0]._loader.search_paths
    assert len(paths) == len(set(paths)), paths
    # Each client still signs with its own keys.
    urls = [c.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}) for c in clients]
    assert [url.startswith("http://127.0.0.1:9/b/k?") and f"AK{i}" in url for i, url in enumerate(urls)] == [True] * 3
