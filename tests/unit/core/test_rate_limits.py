"""The sign-in limiter's token buckets, with a clock moved by hand."""

from __future__ import annotations

import pickle

import pytest

from neurondock_platform.services import rate_limits
from neurondock_platform.services.rate_limits import SignInLimiter, ThrottlingException, TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_refused_attempt_takes_nothing_from_either_bucket():
    clock = Clock()
    limiter = SignInLimiter(per_address=3, per_address_and_key=1, period_seconds=60, clock=clock)
    limiter.attempt("1.2.3.4", "AKA")
    with pytest.raises(ThrottlingException) as caught:
        limiter.attempt("1.2.3.4", "AKA")
    assert caught.value.retry_after == 60
    # The address still has its two other attempts: the refusal above cost it nothing.
    limiter.attempt("1.2.3.4", "AKB")
    limiter.attempt("1.2.3.4", "AKC")
    with pytest.raises(ThrottlingException):
        limiter.attempt("1.2.3.4", "AKD")


def test_failures_cost_more_and_buckets_refill_from_empty_never_below():
    clock = Clock()
    limiter = SignInLimiter(per_address=100, per_address_and_key=4, period_seconds=40, failure_cost=3, clock=clock)
    # 4 tokens: a failure takes 3, so the second failure empties the bucket (and not further).
    for _ in range(2):
        limiter.attempt("a", "AK")
        limiter.failed("a", "AK")
    with pytest.raises(ThrottlingException) as caught:
        limiter.attempt("a", "AK")
    assert caught.value.retry_after == 10  # one token of 4 per 40 s
    clock.now += 10
    limiter.attempt("a", "AK")


def test_a_limit_of_zero_turns_that_dimension_off():
    limiter = SignInLimiter(per_address=0, per_address_and_key=1, period_seconds=60, clock=Clock())
    for n in range(50):
        limiter.attempt("a", f"AK{n}")
    limiter.attempt("a", None)


def test_buckets_are_bounded(monkeypatch):
    monkeypatch.setattr(rate_limits, "MAX_BUCKETS", 10)
    clock = Clock()
    buckets = TokenBuckets(5, 60, clock)
    for n in range(25):
        buckets.take(f"k{n}", 1)
    assert len(buckets._buckets) <= 10
    assert buckets.level("k24") == 4


def test_throttling_pickles_with_its_wait():
    err = pickle.loads(pickle.dumps(ThrottlingException(retry_after=2.5)))
    assert isinstance(err, ThrottlingException) and err.retry_after == 3
    assert err.body() == {"__type": "ThrottlingException", "message": "Rate exceeded"}
    assert err.http_status == 429


def test_wrong_secrets_from_one_address_never_lock_the_key_out_elsewhere():
    clock = Clock()
    limiter = SignInLimiter(per_address=100, per_address_and_key=10, period_seconds=60, failure_cost=2, clock=clock)
    # Five wrong secrets empty the attacker's bucket for the key, and one every 12 s keeps it empty...
    for _ in range(5):
        limiter.attempt("attacker", "AKOWNER")
        limiter.failed("attacker", "AKOWNER")
    with pytest.raises(ThrottlingException):
        limiter.attempt("attacker", "AKOWNER")
    for _ in range(5):
        clock.now += 12
        limiter.attempt("attacker", "AKOWNER")
        limiter.failed("attacker", "AKOWNER")
    # ...while the owner, from their own address, signs in at once, every time.
    for _ in range(5):
        limiter.attempt("owner", "AKOWNER")
