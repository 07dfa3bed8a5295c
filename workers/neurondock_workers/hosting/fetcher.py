"""Model data fetched in a short-lived child of the host process, which alone holds botocore.

botocore and boto3 cost a process ~13 MB RSS for good once imported and S3's model parsed
(docs/measured.md); the host process needs them only while it fetches model data, which it does in
bursts: when replicas start. So ``ChildFetcher`` runs ``artifacts.fetch_model`` in a child,
``python -m neurondock_workers.hosting.fetcher``, that parses S3's model as it starts, answers
requests one at a time on its stdin and stdout, and exits once ``IDLE_SECONDS`` pass without one
(``SPARE_SECONDS`` for the spare the host process starts with, so that its first replica's download
does not wait for botocore). The next fetch starts another.

What the child signs with is what the host process's in-process clients signed with: the owner's
own keys (``s3_client.OwnerClients.keys``: the role's AssumeRole credentials, or the account's
external-store grant and its bucket mapping, checked in the child before a request leaves), sent
with each request on a pipe. The child is the host process's own: the same user, outside the user
code sandbox, with the host process's environment (which never holds the root keys), and no
database (docs/security.md, "Model data downloads").
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from neurondock_platform import lifetime
from neurondock_workers.hosting.artifacts import ModelDataError
from neurondock_workers.hosting.s3 import StoreKeys, StoreOwner

MODULE = "neurondock_workers.hosting.fetcher"
# How long a child waits for its next request after answering one: the fetches of one launch (its
# replicas, each asking which version the URL names) come within a second of each other.
IDLE_SECONDS = 2.0
# How long the spare started with the host process waits for its first request.
SPARE_SECONDS = 600.0


class ChildFetcher:
    """``fetch_model`` run in a child process holding botocore, started when needed, gone when idle."""

    def __init__(
        self,
        keys: Callable[[StoreOwner], StoreKeys],
        *,
        idle_seconds: float = IDLE_SECONDS,
        spare_seconds: float = SPARE_SECONDS,
    ) -> None:
        self._keys = keys
        self.idle_seconds = idle_seconds
        self.spare_seconds = spare_seconds
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._closed = False

    def start_spare(self) -> None:
        """Start a child now (the host process's start), so that the first fetch finds S3's model parsed."""
        with self._lock:
            self._running(self.spare_seconds)

    def _running(self, first_wait: float) -> subprocess.Popen[bytes]:
        child = self._child
        if child is not None and child.poll() is None:
            return child
        self._child = lifetime.spawn(
            [sys.executable, "-m", MODULE, str(first_wait), str(self.idle_seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return self._child

    def __call__(self, owner: StoreOwner, url: str, cache_dir: Path, max_bytes: int | None) -> tuple[Path, str]:
        """``artifacts.fetch_model`` as ``owner``, in the child; raises ModelDataError as it does."""
        keys = self._keys(owner)  # before the lock: issuing keys reads the database
        request = {"keys": dataclasses.asdict(keys), "url": url, "cache_dir": str(cache_dir), "max_bytes": max_bytes}
        line = (json.dumps(request) + "\n").encode()
        with self._lock:
            # A child may time out just as a request reaches it: then one new child is asked. Fetching
            # twice is safe (a version is unpacked once, atomically, under a lock: artifacts.fetch_model).
            for _attempt in range(2):
                if self._closed:
                    raise ModelDataError(
                        f"Could not download model data from {url}: the host is stopping", transient=True
                    )
                answer = _ask(self._running(self.idle_seconds), line)
                if answer is not None:
                    break
                self._reap()
            else:
                raise ModelDataError(f"Could not download model data from {url}: the fetcher exited", transient=True)
        if "path" in answer:
            return Path(answer["path"]), str(answer["digest"])
        raise ModelDataError(str(answer["error"]), transient=bool(answer.get("transient")))

    def _reap(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            _close(child)

    def reap_exited(self) -> None:
        """Collect a child that exited by itself (idle), unless a fetch holds it now."""
        if self._lock.acquire(blocking=False):
            try:
                if self._child is not None and self._child.poll() is not None:
                    self._reap()
            finally:
                self._lock.release()

    def close(self) -> None:
        """Stop the child, if one runs, and start no other (the host process's shutdown)."""
        self._closed = True
        child = self._child
        if child is not None:
            # A download in progress ends now, not after the host's stop budget: its fetch fails.
            child.kill()
        with self._lock:
            self._reap()


def _ask(child: subprocess.Popen[bytes], line: bytes) -> dict[str, Any] | None:
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(line)
        child.stdin.flush()
        answer = child.stdout.readline()
    except (BrokenPipeError, ValueError):
        return None
    return dict(json.loads(answer)) if answer else None


def _close(child: subprocess.Popen[bytes]) -> None:
    for pipe in (child.stdin, child.stdout):
        if pipe is not None:
            # A request still buffered for a child that is gone cannot be flushed: nothing to keep.
            with contextlib.suppress(OSError):
                pipe.close()
    try:
        child.wait(5)  # the child exits at its stdin's end
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


# --- the child ---------------------------------------------------------------------------------------


def _serve(request: dict[str, Any], clients: dict[StoreKeys, Any]) -> dict[str, Any]:
    from neurondock_workers.hosting.artifacts import fetch_model
    from neurondock_workers.hosting.s3 import client_for

    raw = request["keys"]
    keys = StoreKeys(**{**raw, "buckets": None if raw["buckets"] is None else tuple(raw["buckets"])})
    client = clients.get(keys)
    if client is None:
        client = clients[keys] = client_for(keys)
    try:
        path, digest = fetch_model(client, request["url"], request["cache_dir"], max_bytes=request["max_bytes"])
    except ModelDataError as exc:
        return {"error": exc.message, "transient": exc.transient}
    except Exception as exc:
        # Anything else (a full disk, say): the host process reports it as the replica's failure.
        return {"error": f"Could not fetch model data from {request['url']}: {exc}", "transient": False}
    return {"path": str(path), "digest": digest}


def serve(requests: IO[bytes], answers: IO[bytes], first_wait: float, idle: float) -> None:
    """Answer one JSON request per line until the input ends or nothing comes for a while."""
    clients: dict[StoreKeys, Any] = {}
    wait = first_wait
    while select.select([requests], [], [], wait)[0]:
        line = requests.readline()
        if not line:
            return
        answers.write((json.dumps(_serve(json.loads(line), clients)) + "\n").encode())
        answers.flush()
        wait = idle


def main(argv: list[str]) -> int:
    """The child: parse S3's model, then serve requests on stdin, answers on stdout."""
    from neurondock_workers.hosting.s3 import warm

    # Answers go to the pipe alone: anything a library prints goes to stderr (the host's log).
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    warm()
    serve(sys.stdin.buffer, answers, float(argv[0]), float(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
