"""A paced load generator for InvokeEndpoint: keep-alive connections, SigV4 headers signed once.

Each thread sends, waits for the answer, then sleeps until its next slot (``rate`` is the total
requests per second over all threads, 0 = as fast as they can). Every answer's status is counted,
so a test can tell that no invocation failed while an endpoint scaled.
"""

from __future__ import annotations

import collections
import http.client
import threading
import time
from typing import Any


def signed_headers(
    url: str, region: str, access_key: str, secret_key: str, path: str, body: bytes, content_type: str
) -> dict[str, str]:
    """SigV4 headers for one invocation, valid for the server's 15-minute window."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=url + path, data=body, headers={"Content-Type": content_type})
    SigV4Auth(Credentials(access_key, secret_key), "sagemaker", region).add_auth(request)
    return dict(request.headers.items())


class InvokeLoad:
    """Invoke one endpoint from ``threads`` threads at ``rate`` requests per second in all."""

    def __init__(self, port: int, path: str, body: bytes, headers: dict[str, str], *, threads: int, rate: float):
        self.port, self.path, self.body, self.headers = port, path, body, headers
        self.threads = threads
        self.rate = rate
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.started_at = 0.0

    def set_rate(self, rate: float) -> None:
        self.rate = rate

    def start(self) -> InvokeLoad:
        self.started_at = time.monotonic()
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, args=(index,), name=f"load-{index}", daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=30)

    def __enter__(self) -> InvokeLoad:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def answered(self) -> int:
        with self._lock:
            return sum(self.statuses.values())

    def _run(self, index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        # Threads take turns: thread i starts i / rate seconds in.
        next_at = time.monotonic() + (index / self.rate if self.rate else 0.0)
        while not self._stop.is_set():
            if self.rate:
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_at = max(next_at + self.threads / self.rate, time.monotonic() - 1.0)
            try:
                conn.request("POST", self.path, body=self.body, headers=self.headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                with self._lock:
                    self.errors.append(repr(exc))
                continue
            with self._lock:
                self.statuses[status] += 1
        conn.close()
