"""Token buckets for sign-in attempts: console sign-in and ``POST /api/v1/tokens`` share one limiter.

Every attempt takes one token from the bucket of the client's address and one from the bucket of
that address *and* the access key id it names (known or not, so the limit tells nothing about which
keys exist); a failed attempt takes ``failure_cost - 1`` more. Buckets refill continuously (``limit``
tokens per ``period_seconds``) and never go below empty, so a correct key pair gets in again at most
``period_seconds / limit`` after the failures stop: nothing is locked out for good.

The second bucket is per address and key rather than per key so that whoever guesses at a key throttles
only themselves: a key's owner signing in from another address is never refused because of someone
else's wrong secrets (a per-key bucket let five wrong tries lock the owner out, and one every 12 s keep
them out). Guessing across many addresses stays hopeless: a secret is 40 random characters.

The buckets live in the process: each API process limits on its own (N processes allow N times the
limit), and a restart forgets them. Behind a reverse proxy every client has the proxy's address.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import ClassVar

from neurondock_platform.config import Settings
from neurondock_platform.errors import PlatformError

MAX_BUCKETS = 10_000


class ThrottlingException(PlatformError):
    """Too many attempts: ``retry_after`` says in how many seconds the next one will be allowed."""

    code: ClassVar[str] = "ThrottlingException"
    http_status: ClassVar[int] = 429
    fmt: ClassVar[str] = "Rate exceeded"

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait (at least 1), as a Retry-After header says it."""
        # Shave float noise so a wait of exactly 6 s does not read 7.
        return max(1, math.ceil(float(self.kwargs.get("retry_after", 1)) - 1e-6))


class TokenBuckets:
    """Buckets of ``capacity`` tokens per key, refilled at ``capacity / period_seconds`` tokens a second.

    Not thread-safe on its own: ``SignInLimiter`` holds the lock.
    """

    def __init__(self, capacity: int, period_seconds: float, clock: Callable[[], float]) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / period_seconds if period_seconds > 0 else math.inf
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, as of)

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def level(self, key: str) -> float:
        """Return how many tokens the bucket of ``key`` holds now."""
        hit = self._buckets.get(key)
        if hit is None:
            return self.capacity
        tokens, at = hit
        return min(self.capacity, tokens + (self._clock() - at) * self.rate)

    def wait(self, key: str, cost: float) -> float:
        """Return the seconds until ``cost`` tokens are there (0 when they are now)."""
        missing = cost - self.level(key)
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, key: str, cost: float) -> None:
        """Remove up to ``cost`` tokens (never below empty)."""
        tokens = max(0.0, self.level(key) - cost)
        if key not in self._buckets and len(self._buckets) >= MAX_BUCKETS:
            self._evict()
        self._buckets[key] = (tokens, self._clock())

    def _evict(self) -> None:
        # A full bucket is the same as no bucket; when even those are not enough, drop the oldest.
        for key in [k for k in self._buckets if self.level(k) >= self.capacity]:
            del self._buckets[key]
        while len(self._buckets) >= MAX_BUCKETS:
            del self._buckets[next(iter(self._buckets))]


class SignInLimiter:
    """Per-address and per-(address, access key) limits on attempts to prove a secret."""

    def __init__(
        self,
        *,
        per_address: int,
        per_address_and_key: int,
        period_seconds: float = 60.0,
        failure_cost: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._addresses = TokenBuckets(per_address, period_seconds, clock)
        self._keys = TokenBuckets(per_address_and_key, period_seconds, clock)
        self._failure_cost = max(1, failure_cost)

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], float] = time.monotonic) -> SignInLimiter:
        """Return the limiter the settings describe (a limit of 0 turns that dimension off)."""
        return cls(
            per_address=settings.sign_in_limit_per_address,
            per_address_and_key=settings.sign_in_limit_per_address_and_key,
            period_seconds=settings.sign_in_limit_period_seconds,
            failure_cost=settings.sign_in_failure_cost,
            clock=clock,
        )

    def _pairs(self, address: str, access_key_id: str | None) -> list[tuple[TokenBuckets, str]]:
        pairs = [(self._addresses, address)] if self._addresses.enabled else []
        if access_key_id and self._keys.enabled:
            pairs.append((self._keys, f"{address}\n{access_key_id[:128]}"))
        return pairs

    def attempt(self, address: str, access_key_id: str | None) -> None:
        """Count one attempt, or raise ThrottlingException (counting nothing) when over a limit."""
        with self._lock:
            pairs = self._pairs(address, access_key_id)
            wait = max((buckets.wait(key, 1.0) for buckets, key in pairs), default=0.0)
            if wait > 0:
                raise ThrottlingException(retry_after=wait)
            for buckets, key in pairs:
                buckets.take(key, 1.0)

    def failed(self, address: str, access_key_id: str | None) -> None:
        """Charge the extra cost of an attempt whose secret was wrong."""
        with self._lock:
            for buckets, key in self._pairs(address, access_key_id):
                buckets.take(key, float(self._failure_cost - 1))
