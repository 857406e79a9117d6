"""Usage totals (Ray-free): by key id and model; the keeper's shared buckets are the limiter's."""

from __future__ import annotations

from serving.auth import KeyLimits
from serving.quota import Settlement
from serving.usage import UsageKeeper, UsageLedger, UsageRecord


def test_ledger_sums_by_key_and_model() -> None:
    ledger = UsageLedger()
    ledger.add("alice", "tiny-0", 5, 7)
    ledger.add("bob", "tiny-0", 1, 2)
    ledger.add("alice", "tiny-0", 3, 0)
    ledger.add("alice", "tiny-1", 2, 4)
    assert ledger.records() == [
        UsageRecord(
            key_id="alice", model="tiny-0", requests=2, prompt_tokens=8, completion_tokens=7
        ),
        UsageRecord(
            key_id="alice", model="tiny-1", requests=1, prompt_tokens=2, completion_tokens=4
        ),
        UsageRecord(key_id="bob", model="tiny-0", requests=1, prompt_tokens=1, completion_tokens=2),
    ]
    ledger.records()[0].requests = 99  # copies: the ledger is not changed through them
    assert ledger.records()[0].requests == 2


def test_keeper_sums_the_reports_of_several_ingress_replicas() -> None:
    keeper = UsageKeeper()
    for replica in range(3):
        ledger = UsageLedger()
        ledger.add("alice", "tiny-0", 2, 3)
        ledger.add(f"key-{replica}", "tiny-1", 1, 1)
        keeper.record_many([record.model_dump() for record in ledger.records()])
    rows = {(row["key_id"], row["model"]): row for row in keeper.usage()}
    assert rows[("alice", "tiny-0")]["requests"] == 3
    assert rows[("alice", "tiny-0")]["completion_tokens"] == 9
    assert len(rows) == 4
    assert not UsageLedger() and ledger


def test_keeper_counts_and_limits_for_every_ingress_replica_at_once() -> None:
    keeper = UsageKeeper()
    limits = KeyLimits(requests_per_minute=2)
    # two ingress replicas asking for the same key share one bucket
    assert keeper.admit("alice", limits, 16) is None
    assert keeper.admit("alice", limits, 16) is None
    refusal = keeper.admit("alice", limits, 16)
    assert refusal is not None and refusal.reason == "requests"
    keeper.record("alice", "tiny-0", 3, 4)
    keeper.record_many([], [Settlement("alice", limits, 16, 7)])
    assert keeper.usage() == [
        {
            "key_id": "alice",
            "model": "tiny-0",
            "requests": 1,
            "prompt_tokens": 3,
            "completion_tokens": 4,
        }
    ]
