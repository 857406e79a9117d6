"""Per-key rate limits (Ray-free): request and token buckets, Retry-After, reservations, debt."""

from __future__ import annotations

import pytest

from serving.auth import KeyLimits
from serving.quota import RateLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_allow_a_burst_then_the_steady_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = KeyLimits(requests_per_minute=6)  # one per 10 s
    assert all(limiter.admit("a", limits) is None for _ in range(6))
    refusal = limiter.admit("a", limits)
    assert refusal is not None and refusal.reason == "requests" and refusal.retry_after == 10
    clock.now += 9.5
    refusal = limiter.admit("a", limits)
    assert refusal is not None and refusal.retry_after == 1  # rounded up, never 0
    clock.now += 0.5
    assert limiter.admit("a", limits) is None
    assert limiter.admit("a", limits) is not None


def test_keys_have_buckets_of_their_own_and_no_limit_means_none() -> None:
    limiter = RateLimiter(Clock())
    tight = KeyLimits(requests_per_minute=1)
    assert limiter.admit("a", tight) is None
    assert limiter.admit("a", tight) is not None
    assert limiter.admit("b", tight) is None
    assert all(limiter.admit("c", KeyLimits()) is None for _ in range(1000))
    assert len(limiter) == 2  # no buckets for a key without limits


def test_tokens_are_reserved_at_admission_and_settled_at_the_end() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = KeyLimits(tokens_per_minute=600)  # 10 per second
    assert limiter.admit("a", limits, reserve=500) is None
    assert limiter.admit("a", limits, reserve=500) is None  # 100 left, not in debt: admitted
    refusal = limiter.admit("a", limits, reserve=1)
    assert refusal is not None and refusal.reason == "tokens"
    assert refusal.retry_after == 41  # 400 in debt + 1 needed, at 10/s
    limiter.settle("a", limits, reserved=500, used=20)  # the first used far less than it reserved
    limiter.settle("a", limits, reserved=500, used=20)
    assert limiter.admit("a", limits, reserve=10) is None


def test_a_request_larger_than_the_bucket_still_runs_and_its_overrun_is_debt() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = KeyLimits(tokens_per_minute=60)  # 1 per second
    assert limiter.admit("a", limits, reserve=10_000) is None  # capped at the bucket
    limiter.settle("a", limits, reserved=10_000, used=120)  # used two minutes' worth
    refusal = limiter.admit("a", limits)
    assert refusal is not None and refusal.retry_after == 61
    clock.now += 61
    assert limiter.admit("a", limits) is None


def test_the_longer_of_two_waits_is_answered() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = KeyLimits(requests_per_minute=60, tokens_per_minute=60)
    assert limiter.admit("a", limits, reserve=30) is None
    limiter.settle("a", limits, reserved=30, used=90)  # 30 in debt: 31 s; requests: fine
    refusal = limiter.admit("a", limits)
    assert refusal is not None and (refusal.reason, refusal.retry_after) == ("tokens", 31)


def test_a_changed_limit_applies_at_once_and_removed_keys_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.admit("a", KeyLimits(requests_per_minute=100)) is None  # 99 left
    assert limiter.admit("a", KeyLimits(requests_per_minute=1)) is None  # capped to 1
    assert limiter.admit("a", KeyLimits(requests_per_minute=1)) is not None
    limiter.admit("b", KeyLimits(requests_per_minute=1))
    limiter.forget({"b"})
    assert len(limiter) == 1


def test_refused_requests_take_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limits = KeyLimits(requests_per_minute=60)
    assert limiter.admit("a", limits) is None
    for _ in range(59):
        limiter.admit("a", limits)
    for _ in range(100):
        assert limiter.admit("a", limits) is not None
    clock.now += 1.0
    assert limiter.admit("a", limits) is None


@pytest.mark.parametrize("limit", [1, 7, 60, 100_000])
def test_bucket_refills_to_capacity_and_no_further(limit: int) -> None:
    bucket = TokenBucket.per_minute(limit, now=0.0)
    bucket.level = -limit
    bucket.refill(now=60.0)
    assert bucket.level == pytest.approx(0.0, abs=1e-6)
    bucket.refill(now=600.0)
    assert bucket.level == limit
    assert bucket.wait(limit, now=600.0) == 0.0
