"""The HTTP proxy a model-data request goes through: chosen from the environment as botocore chooses.

botocore, which made these requests before, took its clients' proxies from ``HTTP_PROXY``,
``HTTPS_PROXY`` and ``NO_PROXY`` (any case, lowercase winning) through urllib's ``getproxies`` and
``proxy_bypass``, once per client for its endpoint URL: the proxy for the request's scheme, ``http://``
put in front of one written without a scheme, and the URL's ``user:password`` sent to the proxy as
``Proxy-Authorization: Basic``. The same rules here, read when a reader is made (docs/security.md).
"""

from __future__ import annotations

import base64
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["Proxy", "proxy_for"]


@dataclass(frozen=True)
class Proxy:
    """An http proxy to go through: ``url`` as configured, its address, its Proxy-Authorization (if any)."""

    url: str
    host: str
    port: int
    authorization: str | None

    @property
    def masked(self) -> str:
        """The URL with its credentials shown as ``***``, as botocore's errors show it."""
        return _masked(self.url)

    def headers(self) -> dict[str, str]:
        """The headers the proxy itself is sent: its credentials, when its URL has both parts."""
        return {"Proxy-Authorization": self.authorization} if self.authorization else {}


def proxy_for(url: str) -> Proxy | None:
    """The proxy the environment names for ``url`` now: None when none does or NO_PROXY bypasses it.

    Raises ValueError for a proxy URL that cannot be used: no host, a port that is not one, or an
    ``https://`` proxy (TLS to the proxy, and an https store's TLS inside that, are not done here).
    """
    parts = urlsplit(url)
    # botocore's own calls (``utils.get_environ_proxies``); on Linux, urllib's *_environment functions.
    proxies = urllib.request.getproxies()
    if not proxies.get(parts.scheme) or urllib.request.proxy_bypass(parts.netloc):
        return None
    configured = proxies[parts.scheme]
    if not configured.startswith(("http:", "https:")):
        configured = ("http:" if configured.startswith("//") else "http://") + configured
    proxy = urlsplit(configured)
    try:
        port = proxy.port or 80
        host = proxy.hostname
        if not host:
            raise ValueError("it names no host")
        if proxy.scheme != "http":
            raise ValueError("only http:// proxies are used for model data")
        authorization = None
        if proxy.username and proxy.password:
            credentials = f"{unquote(proxy.username)}:{unquote(proxy.password)}"
            authorization = "Basic " + base64.b64encode(credentials.encode("ascii")).decode()
    except UnicodeEncodeError:
        # botocore encodes them as ASCII too; the error would quote a character of the password.
        raise ValueError(f"the proxy URL {_masked(configured)!r} has credentials that are not ASCII") from None
    except ValueError as exc:
        raise ValueError(f"the proxy URL {_masked(configured)!r} cannot be used: {exc}") from None
    return Proxy(configured, host, port, authorization)


def _masked(url: str) -> str:
    # The userinfo itself is replaced: botocore's text replace would mask the first place the secret
    # appears, which for a short one ("p", "t") is inside "http" and leaves the credentials shown.
    parts = urlsplit(url)
    userinfo, at, address = parts.netloc.rpartition("@")
    if not at:
        return url
    masked = ":".join("***" for _ in userinfo.split(":", 1))
    return urlunsplit(parts._replace(netloc=f"{masked}@{address}"))
