"""A closed-loop load generator in a process of its own (so the test's interpreter is not the bottleneck).

``python -m tests.multihost.loadgen URL ENDPOINT CONNECTIONS SECONDS WARMUP`` keeps CONNECTIONS keep-alive
connections busy with InvokeEndpoint calls carrying SigV4 headers signed once (the server accepts them
for 15 minutes); prints a JSON line when warm, then one with the answers, failures and the window.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

from tests.multihost.deploy import BODY
from tests.support.platform import ACCESS_KEY, REGION, SECRET_KEY


def _request(url: str, endpoint: str) -> bytes:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    path = f"/endpoints/{endpoint}/invocations"
    body = BODY.encode()
    request = AWSRequest(method="POST", url=url + path, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(request)
    headers = dict(request.headers.items())
    headers["Host"] = urlsplit(url).netloc
    headers["Content-Length"] = str(len(body))
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + body


async def _connection(host: str, port: int, request: bytes, until: float, counts: dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            outcome = "ok" if status == 200 else f"http_{status}"
            counts[outcome] = counts.get(outcome, 0) + 1
    finally:
        writer.close()


async def run(url: str, endpoint: str, connections: int, seconds: float, warmup: float) -> dict[str, object]:
    """Warm up, then count answers in a window of ``seconds``."""
    parts = urlsplit(url)
    request = _request(url, endpoint)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    warm: dict[str, int] = {}
    warm_until = time.monotonic() + warmup
    await asyncio.gather(*(_connection(host, port, request, warm_until, warm) for _ in range(connections)))
    print(json.dumps({"warm": warm}), flush=True)
    counts: dict[str, int] = {}
    started = time.monotonic()
    await asyncio.gather(*(_connection(host, port, request, started + seconds, counts) for _ in range(connections)))
    return {"counts": counts, "window": time.monotonic() - started}


if __name__ == "__main__":
    url, endpoint, connections, seconds, warmup = sys.argv[1:6]
    print(json.dumps(asyncio.run(run(url, endpoint, int(connections), float(seconds), float(warmup)))))
