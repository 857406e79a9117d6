"""Per-agent metrics: kept in the agent's host for `academy-ray top`, and exported through Ray's metrics.

Each hosted agent has an `AgentMetrics`. On every action call the host's runner records the action's name,
outcome and latency, and the number of calls in flight; its loops record restarts; its `Persistence` records
each checkpoint's save time and size, and restores. The figures go two ways:

* **Ray's metrics system** (``ray.util.metrics``), so they appear in Ray's Prometheus export (each node's
  metrics agent, ``http://<node>:<metrics_export_port>/metrics``) and in the dashboard's Grafana panels.
  Ray prefixes the names with ``ray_`` and exports a counter with the suffix ``_total``:

  ================================================  =========  ====================================
  name (as exported)                                 kind       tags
  ================================================  =========  ====================================
  ``ray_academy_agent_actions_total``                counter    agent, namespace, action, outcome
  ``ray_academy_agent_action_seconds``               histogram  agent, namespace, action
  ``ray_academy_agent_actions_in_flight``            gauge      agent, namespace
  ``ray_academy_agent_loop_restarts_total``          counter    agent, namespace, loop
  ``ray_academy_agent_checkpoint_save_seconds``      histogram  agent, namespace
  ``ray_academy_agent_checkpoint_bytes_total``       counter    agent, namespace
  ``ray_academy_agent_checkpoints_pending``          gauge      agent, namespace
  ``ray_academy_agent_restores_total``               counter    agent, namespace, source
  ================================================  =========  ====================================

  Tag values come from bounded sets: ``action`` is one of the agent class's actions or ``_unknown`` (a
  caller cannot add series by naming actions that do not exist), ``outcome`` one of `OUTCOMES`, ``loop`` one
  of the class's loops, ``source`` ``activation`` or ``rollback``. Every agent has its own series, so 10,000
  agents make 10,000 times as many: set ``ACADEMY_RAY_METRICS=0`` in the agents' environment to keep the
  figures local (``top`` still works) and export nothing.

* **The agent's `AgentInfo`** (``stats``): a snapshot of the same figures, returned by the host's cheap
  ``agent_info`` call that `Runtime.list` already makes. ``academy-ray top`` reads them there rather than
  from the Prometheus export, because a host answers at once with current values (the export lags by Ray's
  report interval, 10 s by default), needs no dashboard or Prometheus, and says "unreachable" when a host
  does not answer.

The Ray metric objects are created once per process (`ray_metrics`). A call only updates plain Python
counters; one task per host process records what changed in Ray every `EXPORT_INTERVAL_S`. Recording in Ray
on the call's path (four records: about 0.05 ms per call here, 5% of a 1 KB round trip) measurably slowed
calls; batched, the figures cost a call a few microseconds (``python -m benchmarks.action_latency``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
from collections import deque
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Protocol

from pydantic import BaseModel, Field

from academy_ray.exception import ActionArgumentError, ActionNotFoundError, PayloadError

logger = logging.getLogger(__name__)

OUTCOMES = ("ok", "error", "rejected", "cancelled")
"""Outcomes of an action call: it returned; it raised; it was refused before it ran (unknown action, bad
arguments, payload over the limit); it was cancelled (the caller's timeout or cancellation)."""

UNKNOWN_ACTION = "_unknown"
"""The ``action`` tag of calls naming an action the agent does not have."""

RECENT_LATENCIES = 512
"""How many of the latest action latencies an agent keeps for the percentiles ``top`` shows."""

EXPORT_INTERVAL_S = 1.0
"""How often a host records its agents' new figures in Ray (Ray reports them every 10 s by default)."""

MAX_UNEXPORTED_LATENCIES = 10_000
"""Most latencies an agent keeps between two exports (bounded memory under any call rate)."""

ACTION_SECONDS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
SAVE_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def export_enabled() -> bool:
    """Whether this process exports agent metrics to Ray (``$ACADEMY_RAY_METRICS`` is not ``0``)."""
    return os.environ.get("ACADEMY_RAY_METRICS", "1").strip().lower() not in {
        "0",
        "false",
        "no",
        "off",
    }


def outcome_of(error: BaseException | None) -> str:
    """The outcome tag of a call that ended with ``error`` (None: it returned)."""
    if error is None:
        return "ok"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, (ActionArgumentError, ActionNotFoundError, PayloadError)):
        return "rejected"
    return "error"


class Checkpointing(Protocol):
    """What `AgentMetrics.track` needs of an agent's `academy_ray.checkpoint.Persistence`."""

    on_saved: Callable[[float, int], None] | None

    @property
    def pending_changes(self) -> int:
        """State changes not yet durable."""
        ...


class RayAgentMetrics:
    """The process's Ray metric objects (one set per process, shared by every agent it hosts)."""

    def __init__(self) -> None:
        from ray.util import metrics

        agent = ("agent", "namespace")
        self.actions = metrics.Counter(
            "academy_agent_actions",
            description="Action calls of an agent by action and outcome (ok, error, rejected, cancelled).",
            tag_keys=(*agent, "action", "outcome"),
        )
        self.action_seconds = metrics.Histogram(
            "academy_agent_action_seconds",
            description="Time from a call's arrival in the agent's host to its result (validation, action, "
            "checkpoint).",
            boundaries=list(ACTION_SECONDS),
            tag_keys=(*agent, "action"),
        )
        self.in_flight = metrics.Gauge(
            "academy_agent_actions_in_flight",
            description="Action calls an agent is running now.",
            tag_keys=agent,
        )
        self.loop_restarts = metrics.Counter(
            "academy_agent_loop_restarts",
            description="Times an agent's loop raised and was run again or given up.",
            tag_keys=(*agent, "loop"),
        )
        self.save_seconds = metrics.Histogram(
            "academy_agent_checkpoint_save_seconds",
            description="Time to make an agent's state durable (snapshot, encode, write, commit).",
            boundaries=list(SAVE_SECONDS),
            tag_keys=agent,
        )
        self.checkpoint_bytes = metrics.Counter(
            "academy_agent_checkpoint_bytes",
            description="Bytes of checkpoints an agent wrote.",
            tag_keys=agent,
        )
        self.pending = metrics.Gauge(
            "academy_agent_checkpoints_pending",
            description="State changes of an agent not yet durable.",
            tag_keys=agent,
        )
        self.restores = metrics.Counter(
            "academy_agent_restores",
            description="Times an agent's state was restored from a checkpoint (activation or rollback).",
            tag_keys=(*agent, "source"),
        )


@lru_cache(maxsize=1)
def ray_metrics() -> RayAgentMetrics | None:
    """This process's `RayAgentMetrics`, created on first use; None when export is off."""
    if not export_enabled():
        return None
    return RayAgentMetrics()


class AgentStats(BaseModel):
    """A snapshot of one agent's figures (what ``academy-ray top`` shows).

    Attributes:
        actions: Calls by outcome since the agent's host process started.
        by_action: Calls by action name (every outcome).
        in_flight: Calls running now.
        latency_p50_s: Median latency of the latest calls (None before the first).
        latency_p99_s: 99th percentile latency of the latest calls.
        loop_restarts: Times a loop raised.
        checkpoint_saves: Checkpoints written.
        checkpoint_bytes: Bytes of checkpoints written.
        last_save_s: Time the latest checkpoint took.
        checkpoints_pending: State changes not yet durable.
        restores: Times the state was restored from a checkpoint.
    """

    actions: dict[str, int] = Field(default_factory=dict)
    by_action: dict[str, int] = Field(default_factory=dict)
    in_flight: int = 0
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    loop_restarts: int = 0
    checkpoint_saves: int = 0
    checkpoint_bytes: int = 0
    last_save_s: float | None = None
    checkpoints_pending: int = 0
    restores: int = 0

    @property
    def calls(self) -> int:
        """Calls of every outcome."""
        return sum(self.actions.values())


class AgentMetrics:
    """The figures of one agent, kept in its host and exported to Ray.

    A call only updates plain counters here; what goes to Ray is recorded by the process's exporter task
    every `EXPORT_INTERVAL_S` (`export_pending`), off the calls' path. Ray's own report interval is longer, so
    the export loses no time; at most `MAX_UNEXPORTED_LATENCIES` latencies wait per agent between two
    exports (beyond that a call is still counted, but its latency is left out of the histogram).

    Args:
        namespace: The agent's namespace.
        name: The agent's name.
        actions: The agent class's action names (the ``action`` tag's values).
        loops: The agent class's loop names.
        export: Whether to record into Ray's metrics too (default: `export_enabled`).
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        actions: Iterable[str],
        loops: Iterable[str] = (),
        *,
        export: bool | None = None,
    ) -> None:
        self._ray = ray_metrics() if export is not False else None
        self._tags = {"agent": name, "namespace": namespace}
        self._actions = frozenset(actions)
        self._loops = frozenset(loops)
        self.calls: dict[tuple[str, str], int] = {}
        """Calls by (action label, outcome)."""
        self.latencies: deque[float] = deque(maxlen=RECENT_LATENCIES)
        self.in_flight = 0
        self.loop_restarts = 0
        self.checkpoint_saves = 0
        self.checkpoint_bytes = 0
        self.last_save_s: float | None = None
        self.restores = 0
        self.pending = 0
        self._checkpointing: Checkpointing | None = None
        self._exported_calls: dict[tuple[str, str], int] = {}
        self._unexported_latencies: list[tuple[str, float]] = []
        self._unexported_saves: list[float] = []
        self._exported_bytes = 0
        self._exported_gauges: tuple[int, int] | None = None
        if self._ray is not None:
            _exporting(self)

    def track(self, checkpointing: Checkpointing) -> None:
        """Records the saves of the agent's persistence and follows its pending changes."""
        self._checkpointing = checkpointing
        checkpointing.on_saved = self.checkpoint_saved

    # ---- actions (the hot path: no Ray calls) ----------------------------------------------------------------

    def call_started(self) -> None:
        """A call arrived."""
        self.in_flight += 1
        if self._ray is not None:
            _CHANGED.add(self)

    def call_finished(self, action: str, seconds: float, error: BaseException | None) -> None:
        """A call ended after ``seconds`` with ``error`` (None: it returned)."""
        self.in_flight -= 1
        label = action if action in self._actions else UNKNOWN_ACTION
        key = (label, outcome_of(error))
        self.calls[key] = self.calls.get(key, 0) + 1
        self.latencies.append(seconds)
        if self._ray is not None:
            _CHANGED.add(self)
            if len(self._unexported_latencies) < MAX_UNEXPORTED_LATENCIES:
                self._unexported_latencies.append((label, seconds))

    # ---- loops (rare: recorded at once) and checkpoints (every action may save: batched like calls) ----------

    def loop_restarted(self, loop: str) -> None:
        """A loop raised (it is run again, ignored or shuts the agent down, by its policy)."""
        self.loop_restarts += 1
        if self._ray is not None:
            label = loop if loop in self._loops else UNKNOWN_ACTION
            self._ray.loop_restarts.inc(1, {**self._tags, "loop": label})

    def checkpoint_saved(self, seconds: float, size: int) -> None:
        """A checkpoint of ``size`` bytes was made durable in ``seconds`` (on an action's path: recorded in
        Ray by the next export, like call latencies)."""
        self.checkpoint_saves += 1
        self.checkpoint_bytes += size
        self.last_save_s = seconds
        if self._ray is not None:
            if len(self._unexported_saves) < MAX_UNEXPORTED_LATENCIES:
                self._unexported_saves.append(seconds)
            _CHANGED.add(self)  # its pending changes

    def restored(self, source: str) -> None:
        """The state was restored from a checkpoint (``source``: ``activation`` or ``rollback``)."""
        self.restores += 1
        if self._ray is not None:
            self._ray.restores.inc(1, {**self._tags, "source": source})

    # ---- export and snapshot ---------------------------------------------------------------------------------

    def _pending_now(self) -> int:
        if self._checkpointing is not None:
            self.pending = self._checkpointing.pending_changes
        return self.pending

    def export_pending(self) -> None:
        """Records in Ray what changed since the last export (calls, latencies, gauges)."""
        ray_metrics = self._ray
        if ray_metrics is None:
            return
        for key, count in self.calls.items():
            delta = count - self._exported_calls.get(key, 0)
            if delta:
                label, outcome = key
                ray_metrics.actions.inc(delta, {**self._tags, "action": label, "outcome": outcome})
                self._exported_calls[key] = count
        latencies, self._unexported_latencies = self._unexported_latencies, []
        tags_of: dict[str, dict[str, str]] = {}
        for label, seconds in latencies:
            tags = tags_of.get(label)
            if tags is None:
                tags = tags_of[label] = {**self._tags, "action": label}
            ray_metrics.action_seconds.observe(seconds, tags)
        saves, self._unexported_saves = self._unexported_saves, []
        for seconds in saves:
            ray_metrics.save_seconds.observe(seconds, self._tags)
        if self.checkpoint_bytes != self._exported_bytes:
            ray_metrics.checkpoint_bytes.inc(
                self.checkpoint_bytes - self._exported_bytes, self._tags
            )
            self._exported_bytes = self.checkpoint_bytes
        gauges = (self.in_flight, self._pending_now())
        if gauges != self._exported_gauges:
            ray_metrics.in_flight.set(gauges[0], self._tags)
            ray_metrics.pending.set(gauges[1], self._tags)
            self._exported_gauges = gauges

    def snapshot(self) -> AgentStats:
        """The current figures."""
        outcomes: dict[str, int] = {}
        by_action: dict[str, int] = {}
        for (label, outcome), count in self.calls.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
            by_action[label] = by_action.get(label, 0) + count
        recent = list(self.latencies)
        p50 = p99 = None
        if recent:
            p50 = statistics.median(recent)
            ordered = sorted(recent)
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return AgentStats(
            actions=outcomes,
            by_action=by_action,
            in_flight=self.in_flight,
            latency_p50_s=p50,
            latency_p99_s=p99,
            loop_restarts=self.loop_restarts,
            checkpoint_saves=self.checkpoint_saves,
            checkpoint_bytes=self.checkpoint_bytes,
            last_save_s=self.last_save_s,
            checkpoints_pending=self._pending_now(),
            restores=self.restores,
        )


_CHANGED: set[AgentMetrics] = set()
"""The agents of this process with figures not yet recorded in Ray: the exporter visits only these, so a
pool of 10,000 mostly idle agents costs it nothing."""
_exporter: asyncio.Task[None] | None = None

EXPORT_BATCH = 100
"""Agents the exporter records before it lets the event loop run calls again."""


def _exporting(metrics: AgentMetrics) -> None:
    """Starts the process's exporter on the running event loop (the host's) if needed."""
    global _exporter
    _CHANGED.add(metrics)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return  # no event loop (a script building metrics by hand): `export_pending` by hand
    if _exporter is None or _exporter.done() or _exporter.get_loop() is not running:
        _exporter = running.create_task(_export_forever(), name="academy-ray-metrics")


async def _export_forever() -> None:
    while True:
        await asyncio.sleep(EXPORT_INTERVAL_S)
        changed = list(_CHANGED)
        _CHANGED.clear()
        for done, metrics in enumerate(changed, 1):
            try:
                metrics.export_pending()
            except Exception:  # a metrics failure must never stop the agents
                logger.exception("exporting agent metrics failed")
            if done % EXPORT_BATCH == 0:
                await asyncio.sleep(0)  # many agents: let calls run between batches
