"""Per-model demand: request rate over a sliding window, requests in flight, recent latency.

Ray-free and clock-free (every method takes ``now``), so the real router and the simulator feed it
the same way: :meth:`DemandTracker.arrived` when a request is routed, :meth:`DemandTracker.finished`
when it ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, Field


class ModelDemand(BaseModel):
    """One model's demand at one instant.

    Attributes:
        model_id: the model.
        rate: requests per second over the window.
        in_flight: requests routed and not finished (queued on a replica or generating).
        latency_s: exponentially weighted mean of recent request latencies (0 before the first).
        last_request_s: time of the latest arrival (``None``: none seen).
        active: whether a request arrived within the window or one is still in flight.
    """

    model_id: str
    rate: float = Field(ge=0)
    in_flight: int = Field(ge=0)
    latency_s: float = Field(ge=0)
    last_request_s: float | None
    active: bool

    def concurrency(self) -> float:
        """Requests this model keeps busy at once: ``rate * latency`` (Little's law) or in flight."""
        return max(float(self.in_flight), self.rate * self.latency_s)


@dataclass
class _Series:
    arrivals: deque[float] = field(default_factory=deque)
    in_flight: int = 0
    latency_s: float = 0.0
    last: float | None = None


class DemandTracker:
    """Demand of every model seen, over a sliding window.

    Args:
        window_s: the window of the rate and of "has recent traffic".
        latency_weight: weight of the newest latency in the moving mean.
        max_arrivals: arrivals kept per model (bounds memory under any burst; beyond it the rate
            is computed over the span of the arrivals kept).
    """

    def __init__(
        self, window_s: float = 60.0, latency_weight: float = 0.2, max_arrivals: int = 4096
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if not 0 < latency_weight <= 1:
            raise ValueError(f"latency_weight must be in (0, 1], got {latency_weight}")
        self.window_s = window_s
        self._weight = latency_weight
        self._max = max_arrivals
        self._series: dict[str, _Series] = {}

    def arrived(self, model_id: str, now: float) -> None:
        """Counts a request for ``model_id`` routed at ``now``."""
        series = self._series.setdefault(model_id, _Series(deque(maxlen=self._max)))
        series.arrivals.append(now)
        series.in_flight += 1
        series.last = now

    def finished(self, model_id: str, latency_s: float | None = None) -> None:
        """A request of ``model_id`` ended (``latency_s``: its latency; ``None`` for a failure)."""
        series = self._series.get(model_id)
        if series is None:
            return
        series.in_flight = max(0, series.in_flight - 1)
        if latency_s is not None:
            if series.latency_s == 0.0:
                series.latency_s = latency_s
            else:
                series.latency_s += self._weight * (latency_s - series.latency_s)

    def demand(self, model_id: str, now: float) -> ModelDemand:
        """``model_id``'s demand at ``now`` (a model never seen has none)."""
        series = self._series.get(model_id)
        if series is None:
            return ModelDemand(
                model_id=model_id,
                rate=0.0,
                in_flight=0,
                latency_s=0.0,
                last_request_s=None,
                active=False,
            )
        start = now - self.window_s
        while series.arrivals and series.arrivals[0] < start:
            series.arrivals.popleft()
        count = len(series.arrivals)
        span = self.window_s
        if count == self._max and count:  # capped: the kept arrivals span less than the window
            span = max(now - series.arrivals[0], 1e-3)
        return ModelDemand(
            model_id=model_id,
            rate=count / span,
            in_flight=series.in_flight,
            latency_s=series.latency_s,
            last_request_s=series.last,
            active=count > 0 or series.in_flight > 0,
        )

    def snapshot(self, now: float) -> dict[str, ModelDemand]:
        """Demand of every model seen, by id."""
        return {model_id: self.demand(model_id, now) for model_id in self._series}

    def live(self, now: float) -> LiveDemand:
        """A read-only mapping of every model's demand at ``now``, computed on lookup."""
        return LiveDemand(self, now)

    def total_concurrency(self, now: float) -> float:
        """Requests all models keep busy at once (the load the replica count follows)."""
        return sum(d.concurrency() for d in self.snapshot(now).values())


class LiveDemand(Mapping[str, ModelDemand]):
    """Every model's demand at ``now``, computed when looked up (no stale snapshot)."""

    def __init__(self, tracker: DemandTracker, now: float) -> None:
        self._tracker = tracker
        self._now = now

    def __getitem__(self, model_id: str) -> ModelDemand:
        return self._tracker.demand(model_id, self._now)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._tracker._series))

    def __len__(self) -> int:
        return len(self._tracker._series)
