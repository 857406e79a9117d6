"""Models and request traces for the serving simulator.

:func:`model_mix` is the 64-model mix of the benchmark; :func:`bursty_trace` draws arrivals with
Zipf popularity and bursts, from a seed.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, Field

GB = 1e9

MIX: tuple[tuple[float, int, float], ...] = (
    # (billions of parameters, models, bytes per parameter)
    (1, 8, 2.0),
    (3, 8, 2.0),
    (8, 20, 2.0),
    (13, 12, 2.0),
    (34, 10, 2.0),
    (70, 6, 1.0),  # FP8: one 70 B copy (70 GB + KV cache) fits one 141 GB GPU
)
"""The benchmark's 64 models: sizes 1-70 B parameters, bf16 except the FP8 70 B ones."""


class SimModel(BaseModel):
    """A model as the simulator sees it.

    Attributes:
        model_id: its id.
        params_b: billions of parameters.
        weight_bytes: bytes of its weights (what switches move).
        footprint: GPU memory one loaded copy takes, weights plus KV cache (GB).
        popularity: share of the requests (the shares of a model list sum to 1).
    """

    model_id: str
    params_b: float
    weight_bytes: float
    footprint: float
    popularity: float = Field(ge=0)


def footprint_gb(weight_bytes: float, kv_share: float = 0.25, kv_floor_gb: float = 4.0) -> float:
    """GPU memory of one engine: the weights plus a KV cache of ``kv_share`` of them (at least
    ``kv_floor_gb``)."""
    return weight_bytes / GB * (1 + kv_share) + kv_floor_gb


def zipf_shares(n: int, exponent: float) -> np.ndarray:
    """Zipf shares of ``n`` ranks (rank 1 first), summing to 1."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return np.asarray(weights / weights.sum())


def model_mix(
    mix: tuple[tuple[float, int, float], ...] = MIX, zipf: float = 1.0, seed: int = 0
) -> list[SimModel]:
    """The models of ``mix``, with Zipf popularity over a seeded random order (so popularity and
    size are independent)."""
    rng = np.random.default_rng(seed)
    sizes = [(params, per) for params, count, per in mix for _ in range(count)]
    shares = zipf_shares(len(sizes), zipf)[rng.permutation(len(sizes))]
    models = []
    for i, ((params, per), share) in enumerate(zip(sizes, shares, strict=True)):
        nbytes = params * 1e9 * per
        models.append(
            SimModel(
                model_id=f"m{i:02d}-{params:g}b",
                params_b=params,
                weight_bytes=nbytes,
                footprint=footprint_gb(nbytes),
                popularity=float(share),
            )
        )
    return models


class Trace(BaseModel):
    """Request arrivals: times (s, sorted), model indices and output tokens, one entry each."""

    times: list[float]
    models: list[int]
    tokens: list[int]
    horizon: float

    def __len__(self) -> int:
        return len(self.times)


def bursty_trace(
    models: list[SimModel],
    rate_per_min: float,
    duration_s: float,
    seed: int = 1,
    burst_every_s: float = 60.0,
    burst_length_s: tuple[float, float] = (30.0, 120.0),
    burst_share: float = 0.25,
    mean_tokens: int = 200,
    max_tokens: int = 1024,
) -> Trace:
    """Poisson arrivals by popularity, plus bursts.

    A burst starts every ``burst_every_s`` on average (Poisson), on a model drawn uniformly, lasts
    a uniform time within ``burst_length_s`` and adds ``burst_share`` of the base rate on that
    model alone. The bursts (start, length, model) depend on the seed only, not on the rate, so
    that a sweep over rates meets the same bursts. Output tokens are geometric with mean ``mean_tokens`` (capped).

    Args:
        models: the models (their ``popularity`` shares the base rate).
        rate_per_min: base request rate, all models together.
        duration_s: length of the trace.
        seed: random seed.
        burst_every_s: mean time between burst starts.
        burst_length_s: bounds of a burst's length.
        burst_share: extra rate of a burst, as a share of the base rate.
        mean_tokens: mean output tokens of a request.
        max_tokens: cap on output tokens.
    """
    rng = np.random.default_rng([seed, 0])
    bursts_rng = np.random.default_rng([seed, 1])  # the same bursts at every rate
    rate = rate_per_min / 60.0
    count = rng.poisson(rate * duration_s)
    times = [rng.uniform(0, duration_s, count)]
    popularity = np.array([m.popularity for m in models])
    picks = [rng.choice(len(models), size=count, p=popularity / popularity.sum())]
    start = bursts_rng.exponential(burst_every_s)
    while start < duration_s:
        end = min(duration_s, start + bursts_rng.uniform(*burst_length_s))
        model = bursts_rng.integers(len(models))
        extra = rng.poisson(rate * burst_share * (end - start))
        times.append(rng.uniform(start, end, extra))
        picks.append(np.full(extra, model))
        start += bursts_rng.exponential(burst_every_s)
    all_times = np.concatenate(times)
    all_models = np.concatenate(picks)
    order = np.argsort(all_times, kind="stable")
    tokens = np.minimum(rng.geometric(1.0 / mean_tokens, len(order)), max_tokens)
    return Trace(
        times=all_times[order].tolist(),
        models=all_models[order].astype(int).tolist(),
        tokens=tokens.astype(int).tolist(),
        horizon=duration_s,
    )


def expected_rates(models: list[SimModel], rate_per_min: float) -> list[float]:
    """Base requests per second of each model (what a static partitioning plans for)."""
    return [rate_per_min / 60.0 * m.popularity for m in models]


def copies_for(rates: list[float], total: int) -> list[int]:
    """``total`` copies shared by rate (largest remainder), at least one each."""
    n = len(rates)
    if total < n:
        raise ValueError(f"{total} copies cannot cover {n} models")
    spare = total - n
    whole = sum(rates) or 1.0
    quotas = [spare * r / whole for r in rates]
    extra = [math.floor(q) for q in quotas]
    left = spare - sum(extra)
    for i in sorted(range(n), key=lambda i: quotas[i] - extra[i], reverse=True)[:left]:
        extra[i] += 1
    return [1 + e for e in extra]
