"""proxies.proxy_for: the proxy's credentials never show in what it is called in errors."""

from __future__ import annotations

import pytest

from neurondock_workers.hosting.proxies import proxy_for


@pytest.mark.parametrize(
    ("configured", "shown"),
    [
        ("http://p:t@127.0.0.1:3128", "http://***:***@127.0.0.1:3128"),  # secrets also found inside "http"
        ("http://user:secret@proxy.example:8080", "http://***:***@proxy.example:8080"),
        ("http://only-a-user@proxy.example", "http://***@proxy.example"),
        ("http://proxy.example:3128", "http://proxy.example:3128"),
    ],
)
def test_the_masked_url_hides_the_userinfo_whatever_it_holds(monkeypatch, configured, shown):
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", configured)
    proxy = proxy_for("http://store.example:9000/s3")
    assert proxy is not None
    assert proxy.masked == shown
