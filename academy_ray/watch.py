"""Watching running agents: the figures ``academy-ray top`` shows and the log lines ``academy-ray logs`` prints.

**Figures.** `Sampler` asks every agent host of a namespace for its `AgentInfo` (the host's ``agent_info``
call: status plus the `academy_ray.metrics.AgentStats` its agents keep), at most ``concurrency`` hosts at a
time and each within `academy_ray.runtime.LIST_TIMEOUT_S` seconds, so a namespace of hundreds of agents is
read in a bounded time and a host that does not answer shows as ``unreachable`` instead of holding up the
frame. A pool host answers for all of its agents in one call. The call rate is the difference between two
samples.

**Logs.** An agent's log is its host process's log, read with Ray's log API (`ray.util.state.get_log` by the
host actor's id): Python ``logging`` goes to the ``err`` stream, ``print`` to ``out``. It is read from the
node's log files, so it is there when the agent is hung or its process has died (exactly when one wants it),
which a buffer inside the agent's process could not offer. It needs the Ray dashboard (``ray start --head``
runs it); a co-hosted agent's log is its pool's, shared with the other agents of the pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import ray
from rich.table import Table

from academy_ray.exception import AgentError
from academy_ray.info import AgentInfo

if TYPE_CHECKING:
    from academy_ray.runtime import Runtime


@dataclass(frozen=True)
class AgentRow:
    """One agent in a frame: its info and its call rate since the previous sample (None on the first)."""

    info: AgentInfo
    calls_per_s: float | None


class Sampler:
    """Samples the agents of ``runtime``'s namespace, with bounded concurrency.

    Args:
        runtime: The runtime whose namespace is watched.
        concurrency: Most hosts asked at once.
    """

    def __init__(self, runtime: Runtime, *, concurrency: int = 32) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._runtime = runtime
        self._concurrency = concurrency
        self._previous: dict[str, tuple[float, int]] = {}

    def _host_names(self) -> list[str]:
        namespace = self._runtime.namespace
        return sorted(
            entry["name"]
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry["namespace"] == namespace
        )

    async def sample(self) -> list[AgentRow]:
        """Every agent of the namespace (pooled ones included), sorted by name."""
        gate = asyncio.Semaphore(self._concurrency)

        async def describe(name: str) -> list[AgentInfo]:
            async with gate:
                return await self._runtime._describe(name)

        names = await asyncio.to_thread(self._host_names)
        found = await asyncio.gather(*(describe(name) for name in names))
        now = time.monotonic()
        rows = []
        seen: dict[str, tuple[float, int]] = {}
        for info in sorted((i for infos in found for i in infos), key=lambda i: i.name):
            rate = None
            if info.stats is not None:
                calls = info.stats.calls
                seen[info.name] = (now, calls)
                before = self._previous.get(info.name)
                if before is not None and now > before[0] and calls >= before[1]:
                    rate = (calls - before[1]) / (now - before[0])
            rows.append(AgentRow(info, rate))
        self._previous = seen
        return rows


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    ms = seconds * 1e3
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


LOG_AGENT_WAIT_S = 10.0
"""How long `AgentLog` asks again while the dashboard does not know the agent's node yet."""

_STATUS_STYLE = {
    "running": "green",
    "starting": "yellow",
    "stopping": "yellow",
    "unreachable": "red",
}


def top_table(namespace: str, rows: list[AgentRow]) -> Table:
    """The ``academy-ray top`` frame for ``rows``."""
    unreachable = sum(1 for row in rows if row.info.status == "unreachable")
    table = Table(
        title=f"agents in namespace {namespace!r}",
        caption=f"{len(rows)} agents, {unreachable} unreachable, "
        f"{datetime.now().strftime('%H:%M:%S')}",
    )
    table.add_column("name", no_wrap=True)
    table.add_column("status")
    for column in (
        "calls",
        "failed",
        "calls/s",
        "in flight",
        "p50 ms",
        "p99 ms",
        "loop restarts",
        "saves",
        "last save ms",
        "saved",
        "pending",
        "restores",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        info, stats = row.info, row.info.stats
        status = f"[{_STATUS_STYLE.get(info.status, 'white')}]{info.status}[/]"
        if stats is None:
            table.add_row(info.name, status, *[""] * 12)
            continue
        failed = stats.calls - stats.actions.get("ok", 0)
        table.add_row(
            info.name,
            status,
            str(stats.calls),
            str(failed) if failed else "",
            "" if row.calls_per_s is None else f"{row.calls_per_s:.1f}",
            str(stats.in_flight),
            _ms(stats.latency_p50_s),
            _ms(stats.latency_p99_s),
            str(stats.loop_restarts) if stats.loop_restarts else "",
            str(stats.checkpoint_saves) if stats.checkpoint_saves else "",
            _ms(stats.last_save_s),
            _bytes(stats.checkpoint_bytes) if stats.checkpoint_bytes else "",
            str(stats.checkpoints_pending) if stats.checkpoints_pending else "",
            str(stats.restores) if stats.restores else "",
        )
    return table


class AgentLog:
    """The log of an agent's host process, read through Ray's log API.

    Args:
        actor: The Ray actor handle of the agent's host (`academy_ray.handle.lookup_actor`).
        stream: ``err`` (Python logging) or ``out`` (``print``).
    """

    def __init__(self, actor: Any, *, stream: str = "err") -> None:
        if stream not in ("err", "out"):
            raise ValueError(f"stream must be 'err' or 'out', got {stream!r}")
        self.actor_id: str = actor._actor_id.hex()
        self.stream = stream

    def lines(self, *, tail: int = 1000, follow: bool = False) -> Iterator[str]:
        """The log's lines (the last ``tail``; -1 for all), then new ones as they come if ``follow``.

        A node whose log agent the dashboard does not know yet (it registers a few seconds after the node
        starts) is asked again for up to `LOG_AGENT_WAIT_S` seconds.

        Raises:
            AgentError: Ray's dashboard (its state API, which serves the logs) does not answer, or does not
                know the agent's node.
        """
        from ray.util.state import get_log
        from ray.util.state.exception import RayStateApiException

        deadline = time.monotonic() + LOG_AGENT_WAIT_S
        pending = ""
        started = False
        while True:
            chunks = get_log(actor_id=self.actor_id, tail=tail, follow=follow, suffix=self.stream)
            try:
                for chunk in chunks:
                    started = True
                    pending += chunk
                    *complete, pending = pending.split("\n")
                    yield from complete
                break
            except OSError as error:  # requests' errors are OSErrors
                raise AgentError(
                    "reading an agent's log needs Ray's dashboard (its state API), which does not "
                    "answer: start Ray with the dashboard (`ray start --head` does)"
                ) from error
            except RayStateApiException as error:
                if started or "doesn't exist" not in str(error) or time.monotonic() > deadline:
                    raise AgentError(f"Ray could not read the agent's log: {error}") from error
                time.sleep(0.5)
        if pending:
            yield pending
