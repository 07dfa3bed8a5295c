"""The host's model-data reads (hosting/s3.py) through the proxy the environment names, as botocore went.

The store is the embedded one (``neurondock store``), which verifies every signature; the proxy and a
TLS front for it are tests.support.proxy's, on loopback.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.support.platform import ACCESS_KEY, ACCOUNT_ID, REGION, SECRET_KEY
from tests.support.proxy import forwarding_proxy, tls_front
from tests.support.store import start_store

from neurondock_platform.s3_client import StoreKeys, StoreOwner
from neurondock_workers.hosting.artifacts import ModelDataError, fetch_model
from neurondock_workers.hosting.s3 import ModelStores, StoreError

OWNER = StoreOwner(ACCOUNT_ID, None)
BUCKET, KEY = "proxied", "model/data.bin"
DATA = b"model bytes " * 100


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets names a proxy (urllib drops the uppercase HTTP_PROXY under REQUEST_METHOD)."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name in ("REQUEST_METHOD", "AWS_CA_BUNDLE"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded store holding one object; yields its endpoint URL (http)."""
    proc, url = start_store(tmp_path_factory.mktemp("store"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s3 = boto3.client(
            "s3", endpoint_url=url + "/s3", region_name=REGION, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, config=Config(s3={"addressing_style": "path"}, proxies={}),
        )  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=DATA)
        yield url + "/s3"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def tls_store(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The same store behind TLS with a self-signed certificate for 127.0.0.1; yields its URL and the CA file."""
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = _self_signed(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    with tls_front(urlsplit(store).port or 80, context) as port:
        yield f"https://127.0.0.1:{port}/s3", str(cert_file)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "neurondock test store")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def _stores(endpoint: str, secret: str = SECRET_KEY) -> ModelStores:
    return ModelStores(lambda owner: StoreKeys(ACCOUNT_ID, endpoint, REGION, ACCESS_KEY, secret))


def _read(endpoint: str, secret: str = SECRET_KEY) -> bytes:
    """HEAD then GET the object with a reader made now (so with the environment as it is now)."""
    reader = _stores(endpoint, secret)(OWNER)
    assert reader.head(BUCKET, KEY).length == len(DATA)
    body = reader.get(BUCKET, KEY)
    try:
        return body.read(2 * len(DATA))
    finally:
        body.close()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_an_http_store_is_read_through_HTTP_PROXY_signed_for_the_store(store, monkeypatch):
    with forwarding_proxy(credentials=("reader", "p@ss:word")) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        assert _read(store) == DATA
        # The store checked the forwarded requests' signatures: a wrong secret is found out (a GET's body says so).
        with pytest.raises(StoreError) as wrong:
            _stores(store, secret="not-the-secret")(OWNER).get(BUCKET, KEY)
    assert wrong.value.code == "SignatureDoesNotMatch"
    url = f"{store}/{BUCKET}/{KEY}"
    assert [(p.method, p.target) for p in proxy.passed] == [("HEAD", url), ("GET", url), ("GET", url)]
    # The request names the store's host; the proxy's credentials (unquoted from its URL) go to the proxy.
    assert {p.headers["host"] for p in proxy.passed} == {urlsplit(store).netloc}
    assert {p.headers["proxy-authorization"] for p in proxy.passed} == {_basic("reader", "p@ss:word")}


def test_no_proxy_sends_a_store_it_names_direct(store, monkeypatch):
    with forwarding_proxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("no_proxy", "example.com,127.0.0.1")
        monkeypatch.setenv("NO_PROXY", "example.com")  # the lowercase one is used, as urllib uses it
        assert _read(store) == DATA
        assert proxy.passed == []
        monkeypatch.delenv("no_proxy")
        assert _read(store) == DATA
    assert [p.method for p in proxy.passed] == ["HEAD", "GET"]


def test_an_https_store_is_read_through_a_connect_tunnel_its_certificate_verified(tls_store, monkeypatch):
    endpoint, ca_file = tls_store
    netloc = urlsplit(endpoint).netloc
    with forwarding_proxy(credentials=("reader", "secret")) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the other scheme's: never used
        monkeypatch.setenv("AWS_CA_BUNDLE", ca_file)
        assert _read(endpoint) == DATA
        assert [(p.method, p.target) for p in proxy.passed] == [("CONNECT", netloc)] * 2
        assert {p.headers["proxy-authorization"] for p in proxy.passed} == {_basic("reader", "secret")}
        # Through the tunnel it is the store's certificate that is checked: unknown without the bundle.
        monkeypatch.delenv("AWS_CA_BUNDLE")
        with pytest.raises(StoreError, match="Could not connect to the endpoint URL") as unverified:
            _read(endpoint)
    assert isinstance(unverified.value.__cause__, ssl.SSLCertVerificationError)
    assert [p.method for p in proxy.passed] == ["CONNECT"] * 3


def test_a_proxy_refusing_the_request_fails_the_fetch_and_names_the_proxy(store, tls_store, monkeypatch, tmp_path):
    endpoint, ca_file = tls_store
    monkeypatch.setenv("AWS_CA_BUNDLE", ca_file)
    with forwarding_proxy(credentials=("reader", "secret")) as proxy:
        bare = proxy.url.replace("reader:secret@", "")
        monkeypatch.setenv("HTTPS_PROXY", bare)
        monkeypatch.setenv("HTTP_PROXY", bare)
        for url, how in ((endpoint, "refused a tunnel to"), (store, "answered 407")):
            with pytest.raises(StoreError) as refused:
                _read(url)
            assert refused.value.status == 407 and f'The proxy "{bare}" {how}' in refused.value.code
            assert "Proxy Authentication Required" in refused.value.code
            # As a replica's start reports it: not worth retrying, whatever the store holds.
            with pytest.raises(ModelDataError) as failed:
                fetch_model(_stores(url)(OWNER), f"s3://{BUCKET}/{KEY}", tmp_path)
            assert not failed.value.transient and failed.value.message.endswith("407 Proxy Authentication Required")
        assert [p.method for p in proxy.passed] == ["CONNECT", "CONNECT", "HEAD", "HEAD"]


def test_a_proxy_not_reached_is_retried_and_one_not_usable_is_named(store, monkeypatch, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        closed = listener.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"reader:secret@127.0.0.1:{closed}")  # no scheme: http://, as botocore
    with pytest.raises(StoreError) as away:
        _read(store)
    # Named as botocore named it, the credentials masked.
    assert away.value.code == f'Failed to connect to proxy URL: "http://***:***@127.0.0.1:{closed}"'
    assert away.value.status == 0
    with pytest.raises(ModelDataError) as failed:
        fetch_model(_stores(store)(OWNER), f"s3://{BUCKET}/{KEY}", tmp_path)
    assert failed.value.transient
    monkeypatch.setenv("HTTP_PROXY", "https://proxy.example:3129")
    with pytest.raises(StoreError, match="only http:// proxies are used") as tls_proxy:
        _read(store)
    assert tls_proxy.value.status == 400
