"""The node model cache: tiers, single flight, LRU by bytes, leases, checksums, the Ray actor."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serving.cache import CacheConfig, ModelCache, kill_node_caches, node_cache
from serving.errors import CacheBudgetError, WeightsError
from serving.spec import ModelSpec
from serving.storage import read_manifest


class RecordingSink:
    """Collects inventory reports (stands in for placement's client)."""

    def __init__(self) -> None:
        self.holding: dict[str, int] = {}

    def held(self, node_id: str, key: str, nbytes: int) -> None:
        self.holding[key] = nbytes

    def evicted(self, node_id: str, key: str) -> None:
        self.holding.pop(key, None)


def _size(spec: ModelSpec) -> int:
    return read_manifest(spec.weights_uri, spec.storage_options).total_bytes


async def test_miss_then_hit_and_one_fetch_for_concurrent_callers(
    s3_specs: list[ModelSpec], cache_root: str
) -> None:
    cache = ModelCache(CacheConfig(root=cache_root, budget_bytes=1 << 30))
    spec = s3_specs[0]
    first = await asyncio.gather(*(cache.ensure(spec, lease=False) for _ in range(8)))
    stats = cache.stats()
    assert stats.fetches == 1 and stats.misses["disk"] == 1
    assert stats.coalesced == 7
    assert len({r.path for r in first}) == 1
    again = await cache.ensure(spec, lease=False)
    assert again.tier == "disk" and again.path == first[0].path
    assert cache.stats().hits["disk"] == 8 and cache.stats().fetches == 1
    assert (Path(again.path) / "model.safetensors").exists()


async def test_lru_by_bytes_evicts_least_recently_used(
    s3_specs: list[ModelSpec], cache_root: str
) -> None:
    size = _size(s3_specs[0])
    sink = RecordingSink()
    cache = ModelCache(CacheConfig(root=cache_root, budget_bytes=2 * size + size // 2), sink=sink)
    a, b, c = s3_specs[:3]
    await cache.ensure(a, lease=False)
    await cache.ensure(b, lease=False)
    await cache.ensure(a, lease=False)  # a is now most recently used
    await cache.ensure(c, lease=False)  # evicts b
    assert cache.stats().models == [a.id, c.id]
    assert cache.stats().evictions == 1
    assert set(sink.holding) == {a.id, c.id} and sink.holding[a.id] == size
    assert (await cache.ensure(b, lease=False)).tier == "object_storage"


async def test_leased_models_are_not_evicted(s3_specs: list[ModelSpec], cache_root: str) -> None:
    size = _size(s3_specs[0])
    cache = ModelCache(CacheConfig(root=cache_root, budget_bytes=size + size // 2))
    a, b = s3_specs[:2]
    await cache.ensure(a)  # leased until released
    with pytest.raises(CacheBudgetError, match="does not fit"):
        await cache.ensure(b)
    cache.release(a)
    assert (await cache.ensure(b)).tier == "object_storage"
    assert cache.stats().models == [b.id]


async def test_model_larger_than_budget(s3_specs: list[ModelSpec], cache_root: str) -> None:
    cache = ModelCache(CacheConfig(root=cache_root, budget_bytes=1000))
    with pytest.raises(CacheBudgetError, match="more than the node cache budget"):
        await cache.ensure(s3_specs[0])


async def test_corrupt_weights_fail_every_waiter_and_are_not_cached(
    bad_specs: list[ModelSpec], cache_root: str
) -> None:
    cache = ModelCache(CacheConfig(root=cache_root))
    results = await asyncio.gather(
        *(cache.ensure(bad_specs[0]) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, WeightsError) for r in results)
    assert cache.stats().models == [] and cache.stats().failures == 1
    assert list(Path(cache_root).iterdir()) == []


async def test_restarted_cache_adopts_complete_copies(
    s3_specs: list[ModelSpec], cache_root: str
) -> None:
    config = CacheConfig(root=cache_root)
    await ModelCache(config).ensure(s3_specs[0], lease=False)
    reborn = ModelCache(config)
    assert reborn.stats().models == [s3_specs[0].id]
    assert (await reborn.ensure(s3_specs[0], lease=False)).tier == "disk"


def test_node_cache_actor_is_one_per_node_and_counts(
    local_ray: None, s3_specs: list[ModelSpec], cache_root: str, namespace: str
) -> None:
    import ray

    config = CacheConfig(root=cache_root, namespace=namespace)
    try:
        cache = node_cache(config)
        same = node_cache(config)
        assert ray.get(cache.node_id.remote()) == ray.get_runtime_context().get_node_id()
        refs = [c.ensure.remote(s3_specs[1], False) for c in (cache, same) for _ in range(3)]
        tiers = [r.tier for r in ray.get(refs)]
        stats = ray.get(same.stats.remote())
        assert stats.fetches == 1 and tiers.count("object_storage") == 1
        assert stats.hits["disk"] == 5 and stats.misses["disk"] == 1
    finally:
        assert kill_node_caches(config) == 1


def test_inventory_reaches_placement_controller(
    local_ray: None, s3_specs: list[ModelSpec], cache_root: str, namespace: str
) -> None:
    import time

    import ray

    from placement.client import PlacementClient

    placement = PlacementClient(namespace)
    config = CacheConfig(
        root=cache_root,
        namespace=namespace,
        placement_namespace=namespace,
        budget_bytes=_size(s3_specs[0]) * 3 // 2,
    )
    node = ray.get_runtime_context().get_node_id()
    try:
        cache = node_cache(config)
        ray.get(cache.ensure.remote(s3_specs[0], False))
        ray.get(cache.ensure.remote(s3_specs[1], False))  # evicts s3_specs[0]

        def held() -> dict[str, int]:
            items = ray.get(placement.actor.inventory.remote(node))
            return {i["key"]: i["nbytes"] for i in items if i["kind"] == "model"}

        deadline = time.monotonic() + 10  # reports are fire-and-forget
        while held() != {s3_specs[1].id: _size(s3_specs[1])}:
            assert time.monotonic() < deadline, held()
            time.sleep(0.1)
    finally:
        kill_node_caches(config)
        ray.kill(placement.actor)
