"""The host process's reads of model data: a signed S3 HEAD and GET of its own, as the model's owner.

Model data needs two requests (a HEAD for the version, a GET for the archive); botocore, which made
them before, cost the host process ~13 MB for good once S3's model was parsed, and then a child
process of ~41 MB while replicas started (docs/measured.md). This client is ``http.client`` and the
platform's own SigV4 signer (``sigv4.sign``), and keeps what botocore's client did here:

- **The owner's keys** (``s3_client.OwnerClients.keys``): the role's AssumeRole credentials with their
  session token (``X-Amz-Security-Token``), or the account's external-store grant; where that grant is
  the platform's shared key, a bucket not mapped to the account is refused before a request leaves
  (``s3_client.unmapped``).
- **The store as configured**: its endpoint URL (a path under it too: the embedded store's ``/s3``),
  its region, path-style addressing, TLS for an ``https`` URL (``AWS_CA_BUNDLE`` if set, else the
  system's roots), 5 s to connect and 60 s per read.
- **The proxy botocore would have used** (``proxies.proxy_for``: ``HTTP(S)_PROXY`` and ``NO_PROXY``, read
  when a reader is made): an ``http`` store through it with the absolute URL as the request target, an
  ``https`` one through a CONNECT tunnel, the store's certificate still verified at its end. Either way
  the request is signed for the store's Host and path, never the proxy's.
- **S3's error codes**: from the error body (``NoSuchKey``, ``NoSuchBucket``, ``AccessDenied``), or
  named from the status where a HEAD has no body.

Retrying is the caller's (``launcher.ReplicaLauncher.fetch`` retries transient failures for a minute).
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.client
import os
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from neurondock_platform import sigv4
from neurondock_platform.s3_client import OwnerClients, StoreKeys, StoreOwner, unmapped
from neurondock_workers.hosting.proxies import Proxy, proxy_for

__all__ = ["ModelStores", "ObjectHead", "ObjectReader", "OwnerClients", "StoreError", "StoreKeys", "StoreOwner"]

_Connection = http.client.HTTPConnection
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# An error body is a few hundred bytes; more is not read.
_ERROR_BODY_LIMIT = 64 * 1024
_CODE = re.compile(rb"<Code>([^<]{1,128})</Code>")
# A HEAD's error has no body: its status named as S3 names the error (as botocore's parser did).
_STATUS_CODES = {404: "NoSuchKey", 403: "AccessDenied", 400: "BadRequest"}
# How http.client's CONNECT reports a proxy's refusal (``HTTPConnection._tunnel``).
_TUNNEL_REFUSED = re.compile(r"Tunnel connection failed: (\d{3})\s*(.*)")


class StoreError(Exception):
    """The store refused a request (``code`` as S3 names it, ``status`` its HTTP status), or was not reached (0)."""

    def __init__(self, code: str, status: int = 0) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class ObjectHead:
    """What a HEAD says of an object: its ETag as sent (quotes and all), else its time and size."""

    etag: str | None
    last_modified: str | None
    length: int | None


class ObjectBody:
    """A GET's body, read in pieces; ``length`` is its Content-Length (None when not sent)."""

    def __init__(self, response: http.client.HTTPResponse, done: Callable[[], None], url: str) -> None:
        self._response = response
        self._done = done
        self._url = url
        length = response.getheader("content-length")
        self.length = int(length) if length and length.isdigit() else None

    def read(self, size: int) -> bytes:
        try:
            return self._response.read(size)
        except (OSError, http.client.HTTPException) as exc:
            raise StoreError(_network_message(self._url, exc, reading=True)) from exc

    def close(self) -> None:
        self._done()


class ModelStores:
    """``owner → ObjectReader`` for the host process's fetches; ``close`` ends the reads in flight.

    The keys are resolved for each reader (``keys``: ``OwnerClients.keys``, which reissues temporary
    ones 15 minutes before they expire), so a reader is made per fetch.
    """

    def __init__(self, keys: Callable[[StoreOwner], StoreKeys]) -> None:
        self._keys = keys
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self._closed = False

    def __call__(self, owner: StoreOwner) -> ObjectReader:
        return ObjectReader(self._keys(owner), self)

    def close(self) -> None:
        """End every read in flight (it fails as the store being away would) and allow no other."""
        with self._lock:
            self._closed = True
            connections = list(self._open)
        for connection in connections:
            sock = connection.sock
            if sock is not None:
                # shutdown, not close: a thread blocked in recv on it returns at once.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _opened(self, connection: http.client.HTTPConnection) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._open.add(connection)
            return True

    def _stopping(self) -> bool:
        with self._lock:
            return self._closed

    def _closed_one(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._open.discard(connection)
        connection.close()


class ObjectReader:
    """HEAD and GET of objects in one store, signed with one owner's keys."""

    def __init__(self, keys: StoreKeys, stores: ModelStores | None = None) -> None:
        self.keys = keys
        self._stores = stores if stores is not None else ModelStores(lambda owner: keys)
        parts = urlsplit(keys.endpoint_url)
        self._usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        self._https = parts.scheme == "https"
        self._hostname = parts.hostname or ""
        self._port = parts.port
        # The Host header as botocore signs it: without the scheme's default port.
        self._host = self._hostname if parts.port in (None, 443 if self._https else 80) else parts.netloc
        self._base = unquote(parts.path).rstrip("/")
        # The environment as it is now, as botocore read it when a client was made.
        self._proxy: Proxy | None = None
        self._proxy_unusable: str | None = None
        try:
            self._proxy = proxy_for(keys.endpoint_url) if self._usable else None
        except ValueError as exc:
            self._proxy_unusable = str(exc)

    def head(self, bucket: str, key: str) -> ObjectHead:
        """HEAD the object; raises StoreError."""
        connection, response = self._request("HEAD", bucket, key)
        self._stores._closed_one(connection)
        length = response.getheader("content-length")
        modified = response.getheader("last-modified")
        return ObjectHead(
            response.getheader("etag"),
            # As botocore's parsed timestamp printed (the version of an object without an ETag).
            str(email.utils.parsedate_to_datetime(modified)) if modified else None,
            int(length) if length and length.isdigit() else None,
        )

    def get(self, bucket: str, key: str) -> ObjectBody:
        """GET the object: its body, to read and close; raises StoreError."""
        connection, response = self._request("GET", bucket, key)
        return ObjectBody(response, lambda: self._stores._closed_one(connection), self._url(bucket, key))

    def _url(self, bucket: str, key: str) -> str:
        return f"{'https' if self._https else 'http'}://{self._host}{self._path(bucket, key)}"

    def _path(self, bucket: str, key: str) -> str:
        # Path-style; S3 signs the path URI-encoded once, as it is sent (sigv4's canonical path).
        return quote(f"{self._base}/{bucket}/{key}", safe="/~")

    def signed_headers(self, method: str, bucket: str, key: str, now: float | None = None) -> dict[str, str]:
        """The headers of a request for the object, signed with the owner's keys (no body: an empty payload)."""
        keys = self.keys
        headers = {"host": self._host}
        sigv4.sign(
            method,
            f"{self._base}/{bucket}/{key}",
            headers,
            access_key_id=keys.access_key_id,
            secret_access_key=keys.secret_access_key,
            region=keys.region,
            service="s3",
            payload_hash=_EMPTY_SHA256,
            session_token=keys.session_token,
            now=now,
        )
        return headers

    def _connection(self) -> http.client.HTTPConnection:
        proxy = self._proxy
        if self._https:
            bundle = os.environ.get("AWS_CA_BUNDLE") or None
            context = ssl.create_default_context(cafile=bundle)
            if proxy is None:
                return http.client.HTTPSConnection(self._hostname, self._port, timeout=CONNECT_TIMEOUT, context=context)
            # TLS with the store inside a CONNECT tunnel: http.client verifies the tunnel's far end.
            tunnelled = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=CONNECT_TIMEOUT, context=context)
            tunnelled.set_tunnel(self._hostname, self._port or 443, headers=proxy.headers())
            return tunnelled
        if proxy is None:
            return http.client.HTTPConnection(self._hostname, self._port, timeout=CONNECT_TIMEOUT)
        return http.client.HTTPConnection(proxy.host, proxy.port, timeout=CONNECT_TIMEOUT)

    def _target(self, bucket: str, key: str, headers: dict[str, str]) -> str:
        """The request target: the path, or the whole URL (and the proxy's credentials) for an http proxy."""
        if self._proxy is None or self._https:
            return self._path(bucket, key)
        headers.update(self._proxy.headers())
        return self._url(bucket, key)

    def _not_connected(self, url: str, exc: OSError) -> StoreError:
        """The StoreError of a connection not made: the store, or the proxy, not reached or refusing."""
        proxy = self._proxy
        if proxy is None or isinstance(exc, ssl.SSLError):
            return StoreError(_network_message(url, exc, reading=False))
        refused = _TUNNEL_REFUSED.match(str(exc))
        if refused:
            status = int(refused.group(1))
            reason = f"{status} {refused.group(2)}".strip()
            return StoreError(f'The proxy "{proxy.masked}" refused a tunnel to "{url}": {reason}', status)
        return StoreError(f'Failed to connect to proxy URL: "{proxy.masked}"')

    def _request(self, method: str, bucket: str, key: str) -> tuple[_Connection, http.client.HTTPResponse]:
        """Send one signed request on a connection of its own; its answer, when it is a success."""
        if not self._usable:
            # The operator's setting, not the store: as a store refusing the request (not retried).
            raise StoreError(f"the store's endpoint URL {self.keys.endpoint_url!r} is not an http(s) URL", 400)
        if self._proxy_unusable is not None:
            raise StoreError(self._proxy_unusable, 400)
        if unmapped(self.keys, bucket) is not None:
            raise StoreError("AccessDenied", 403)
        headers = self.signed_headers(method, bucket, key)
        url = self._url(bucket, key)
        connection = self._connection()
        if not self._stores._opened(connection):
            raise StoreError("the host is stopping")
        try:
            try:
                connection.connect()
            except OSError as exc:
                raise self._not_connected(url, exc) from exc
            assert connection.sock is not None
            if self._stores._stopping():
                # ``close`` came while this connected, before it could shut the socket down.
                raise StoreError("the host is stopping")
            connection.sock.settimeout(READ_TIMEOUT)
            try:
                connection.request(method, self._target(bucket, key, headers), headers=headers)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise StoreError(_network_message(url, exc, reading=True)) from exc
            if response.status == 407 and self._proxy is not None:
                # Only a proxy asks for its own credentials: named as the proxy's answer, not the store's.
                raise StoreError(f'The proxy "{self._proxy.masked}" answered 407 {response.reason}'.strip(), 407)
            if response.status >= 300:
                raise StoreError(_error_code(response), response.status)
        except BaseException:
            self._stores._closed_one(connection)
            raise
        return connection, response


def _error_code(response: http.client.HTTPResponse) -> str:
    try:
        body = response.read(_ERROR_BODY_LIMIT)
    except (OSError, http.client.HTTPException):
        body = b""
    found = _CODE.search(body)
    if found:
        return found.group(1).decode("utf-8", "replace")
    return _STATUS_CODES.get(response.status, str(response.status))


def _network_message(url: str, exc: BaseException, *, reading: bool) -> str:
    # Worded as botocore's errors were, so a failure reads as before in a replica's FailureReason.
    if not reading:
        return f'Could not connect to the endpoint URL: "{url}"'
    if isinstance(exc, TimeoutError):
        return f'Read timeout on endpoint URL: "{url}"'
    return f'Connection was closed before we received a valid response from endpoint URL: "{url}"'
