"""Open Inference Protocol clients for end-to-end tests: Triton's own, with a bearer-token header plugin."""

from __future__ import annotations

from typing import Any


def triton_client(port: int, token: str | None = None) -> Any:
    """A ``tritonclient.http`` client of the platform; with ``token`` it sends ``Authorization: Bearer``.

    tritonclient cannot sign SigV4 (its plugins see a request's headers, not its body), so a plugin that
    adds an admin API token is how it authenticates (docs/oip.md, "Authentication").
    """
    import tritonclient.http as triton
    from tritonclient._plugin import InferenceServerClientPlugin

    class Bearer(InferenceServerClientPlugin):
        def __init__(self, value: str) -> None:
            self.value = value

        def __call__(self, request: Any) -> None:
            request.headers["Authorization"] = f"Bearer {self.value}"

    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    if token is not None:
        client.register_plugin(Bearer(token))
    return client
