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


def test_the_shared_loader_keeps_s3s_endpoints_only_and_resolves_as_botocore_does():
    import botocore.session

    from neurondock_platform import s3_client

    client = make_s3_client("http://127.0.0.1:9", "us-east-1", access_key_id="AK", secret_access_key="s")
    table = client._loader.load_data("endpoints")
    assert {name for p in table["partitions"] for name in p["services"]} == {"s3"}
    # Without an endpoint URL a client resolves AWS's, from the table and the rule set: as a stock session does.
    for region in ("us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"):
        ours = s3_client._session().client("s3", region_name=region, aws_access_key_id="AK", aws_secret_access_key="s")
        stock = botocore.session.Session().create_client(
            "s3", region_name=region, aws_access_key_id="AK", aws_secret_access_key="s"
        )
        assert ours.meta.endpoint_url == stock.meta.endpoint_url, region
        assert ours.meta.partition == stock.meta.partition, region
