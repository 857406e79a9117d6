"""Usage by key and model (requests, prompt and generated tokens), and the app's usage keeper actor.

Each ingress replica exports every answered generation as Ray metrics (``serving_usage_*_total{key,
model}``, see :mod:`serving.metrics`) for Prometheus, and sums them in a :class:`UsageLedger` that it
sends every :data:`USAGE_REPORT_S` seconds (one actor call, whatever the traffic) to the app's
:class:`UsageKeeper`, a small named actor on the head node (one per app, made on first use) that
sums the ingress replicas' reports for the CLI (``python -m serving usage --app <name>``). With
``UsersConfig.shared_limits`` the keeper also holds the app's token buckets, so that the limits hold
across ingress replicas: one actor call per admitted request, which also carries the settlements of
the requests that ended since (``python -m benchmarks.serving_quota`` measures it).

The keeper's totals start when it does (it is restarted empty if its process dies); Prometheus keeps
the long-term record. Key ids, never secrets, are counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from serving.auth import KeyLimits
from serving.quota import RateLimiter, Refusal, Settlement

USAGE_REPORT_S = 1.0
"""How often an ingress replica sends its usage totals to the keeper (when it has some)."""

USAGE_NAMESPACE = "academy-serving"
"""Ray namespace of the usage keepers."""


def keeper_name(app_name: str) -> str:
    """The usage keeper actor's name for a Serve app."""
    return f"serving-usage-{app_name}"


class UsageRecord(BaseModel):
    """One key's use of one model.

    Attributes:
        key_id: the API key's id (``default``: the shared key, ``anonymous``: no key required).
        model: the model id.
        requests: answered generations.
        prompt_tokens: prompt tokens of those.
        completion_tokens: generated tokens of those.
    """

    key_id: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class UsageLedger:
    """Totals by (key id, model). Memory: one record per pair seen (both from bounded sets)."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], UsageRecord] = {}

    def add(self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Counts one answered generation."""
        record = self._records.get((key_id, model))
        if record is None:
            record = self._records[(key_id, model)] = UsageRecord(key_id=key_id, model=model)
        record.requests += 1
        record.prompt_tokens += prompt_tokens
        record.completion_tokens += completion_tokens

    def merge(self, record: UsageRecord) -> None:
        """Adds another ledger's totals for one (key id, model)."""
        mine = self._records.get((record.key_id, record.model))
        if mine is None:
            self._records[(record.key_id, record.model)] = record.model_copy()
            return
        mine.requests += record.requests
        mine.prompt_tokens += record.prompt_tokens
        mine.completion_tokens += record.completion_tokens

    def __bool__(self) -> bool:
        return bool(self._records)

    def records(self) -> list[UsageRecord]:
        """The totals, sorted by key id then model."""
        return [self._records[pair].model_copy() for pair in sorted(self._records)]


class UsageKeeper:
    """The app's usage totals and, for ``shared_limits``, its token buckets (a Ray actor's class)."""

    def __init__(self) -> None:
        self._ledger = UsageLedger()
        self._limiter = RateLimiter()

    def record(self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Counts one answered generation."""
        self._ledger.add(key_id, model, prompt_tokens, completion_tokens)

    def record_many(self, rows: list[dict[str, Any]], settled: Sequence[Settlement] = ()) -> None:
        """Adds an ingress replica's totals since its last report (:class:`UsageRecord` dicts), and
        charges the requests it has settled since its last call."""
        self._limiter.settle_many(settled)
        for row in rows:
            self._ledger.merge(UsageRecord.model_validate(row))

    def usage(self) -> list[dict[str, Any]]:
        """The totals (as :class:`UsageRecord` dicts)."""
        return [record.model_dump() for record in self._ledger.records()]

    def admit(
        self, key_id: str, limits: KeyLimits, reserve: int, settled: Sequence[Settlement] = ()
    ) -> Refusal | None:
        """:meth:`serving.quota.RateLimiter.admit` on the shared buckets, after charging the
        requests the calling ingress replica settled since its last call (one call, not two)."""
        self._limiter.settle_many(settled)
        return self._limiter.admit(key_id, limits, reserve)

    def ping(self) -> None:
        """Does nothing (the benchmark's baseline call)."""


def usage_keeper(app_name: str) -> Any:
    """The app's usage keeper actor (made on the head node if there is none yet)."""
    from placement.actors import head_singleton

    return head_singleton(UsageKeeper, keeper_name(app_name), USAGE_NAMESPACE, max_restarts=-1)


def read_usage(app_name: str, timeout_s: float = 30.0) -> list[UsageRecord]:
    """The app's usage totals (empty when nothing was answered yet: no keeper exists then)."""
    import ray

    from placement.actors import find_actor

    keeper = find_actor(keeper_name(app_name), USAGE_NAMESPACE)
    if keeper is None:
        return []
    rows = ray.get(keeper.usage.remote(), timeout=timeout_s)
    return [UsageRecord.model_validate(row) for row in rows]


def remove_usage_keeper(app_name: str) -> None:
    """Ends the app's usage keeper, if there is one."""
    import ray

    from placement.actors import find_actor

    keeper = find_actor(keeper_name(app_name), USAGE_NAMESPACE)
    if keeper is not None:
        ray.kill(keeper, no_restart=True)
