"""Per-key rate limits: token buckets for requests and tokens per minute.

A limit of ``N`` per minute is a bucket of ``N`` that refills at ``N / 60`` per second: a key may
burst up to a minute's allowance, then proceeds at the steady rate.

Tokens are known only once a generation ends, so a request *reserves* its ``max_tokens`` when it is
admitted (the bucket must not be in debt), and is *settled* when it ends: charged its prompt and
generated tokens, the reservation given back. A key's concurrent requests can overdraw its bucket
by at most their prompts; it then waits until the debt is repaid. The answer to a refused request
is the wait, rounded up to whole seconds: the ``Retry-After`` header.

Ray-free: the ingress holds one :class:`RateLimiter` (exact with one ingress replica); with several
ingress replicas a shared one lives in a named actor (``serving.usage.UsageKeeper``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from serving.auth import KeyLimits


@dataclass
class TokenBucket:
    """A bucket of ``capacity`` refilled at ``rate`` per second; ``level`` may go below zero (debt).

    Attributes:
        capacity: the most it holds (a minute's allowance).
        rate: refill per second.
        level: what it holds now (negative: in debt).
        updated: the clock reading ``level`` was computed at.
    """

    capacity: float
    rate: float
    level: float
    updated: float

    @classmethod
    def per_minute(cls, limit: int, now: float) -> TokenBucket:
        """A full bucket for ``limit`` per minute."""
        return cls(capacity=float(limit), rate=limit / 60.0, level=float(limit), updated=now)

    def refill(self, now: float) -> None:
        """Adds what has dripped in since the last update (up to capacity)."""
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until the bucket holds ``amount`` (0 when it does now)."""
        self.refill(now)
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.rate

    def resize(self, limit: int, now: float) -> None:
        """Applies a changed per-minute limit, keeping the level (capped at the new capacity)."""
        self.refill(now)
        self.capacity, self.rate = float(limit), limit / 60.0
        self.level = min(self.level, self.capacity)


@dataclass
class _KeyBuckets:
    requests: TokenBucket | None = None
    tokens: TokenBucket | None = None


def _bucket(bucket: TokenBucket | None, limit: int | None, now: float) -> TokenBucket | None:
    if limit is None:
        return None
    if bucket is None:
        return TokenBucket.per_minute(limit, now)
    if bucket.capacity != limit:
        bucket.resize(limit, now)
    return bucket


@dataclass(frozen=True)
class Settlement:
    """An admitted request's tokens, to be charged in place of its reservation (see ``settle``)."""

    key_id: str
    limits: KeyLimits
    reserved: int
    used: int


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused and how long to wait.

    Attributes:
        reason: ``"requests"`` or ``"tokens"`` (the limit that is used up).
        retry_after: whole seconds (at least 1) until the request would be admitted.
    """

    reason: str
    retry_after: int


class RateLimiter:
    """Token buckets per key id; limits are passed with each call (a reloaded key file applies at once).

    Memory: two small buckets per key id seen; key ids come from the key file, so they are bounded.

    Args:
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._keys: dict[str, _KeyBuckets] = {}

    def _buckets(self, key_id: str, limits: KeyLimits, now: float) -> _KeyBuckets:
        buckets = self._keys.setdefault(key_id, _KeyBuckets())
        buckets.requests = _bucket(buckets.requests, limits.requests_per_minute, now)
        buckets.tokens = _bucket(buckets.tokens, limits.tokens_per_minute, now)
        return buckets

    def admit(self, key_id: str, limits: KeyLimits, reserve: int = 0) -> Refusal | None:
        """Admits one request of ``key_id`` and reserves ``reserve`` tokens, or says why not.

        Admitted: one request is taken from the request bucket and ``reserve`` tokens from the token
        bucket (which must not be in debt; a reservation larger than the whole bucket is capped at
        it, so that any request can eventually run). Refused: nothing is taken.

        Returns:
            ``None`` when admitted, else the :class:`Refusal`.
        """
        if limits.requests_per_minute is None and limits.tokens_per_minute is None:
            return None
        now = self._clock()
        buckets = self._buckets(key_id, limits, now)
        waits: list[tuple[float, str]] = []
        if buckets.requests is not None:
            waits.append((buckets.requests.wait(1.0, now), "requests"))
        if buckets.tokens is not None:
            waits.append((buckets.tokens.wait(min(1.0, buckets.tokens.capacity), now), "tokens"))
        wait, reason = max(waits)
        if wait > 0:
            return Refusal(reason=reason, retry_after=max(1, math.ceil(wait)))
        if buckets.requests is not None:
            buckets.requests.level -= 1.0
        if buckets.tokens is not None:
            buckets.tokens.level -= min(float(reserve), buckets.tokens.capacity)
        return None

    def settle(self, key_id: str, limits: KeyLimits, reserved: int, used: int) -> None:
        """Charges an admitted request's ``used`` tokens in place of its ``reserved`` ones."""
        if limits.tokens_per_minute is None:
            return
        now = self._clock()
        bucket = self._buckets(key_id, limits, now).tokens
        assert bucket is not None
        bucket.refill(now)
        bucket.level += min(float(reserved), bucket.capacity) - float(used)
        bucket.level = min(bucket.level, bucket.capacity)

    def settle_many(self, settlements: Sequence[Settlement]) -> None:
        """:meth:`settle` for each of ``settlements``."""
        for item in settlements:
            self.settle(item.key_id, item.limits, item.reserved, item.used)

    def forget(self, key_ids: set[str]) -> None:
        """Drops the buckets of keys no longer in force (e.g. removed from the key file)."""
        for key_id in list(self._keys):
            if key_id not in key_ids:
                del self._keys[key_id]

    def __len__(self) -> int:
        return len(self._keys)
