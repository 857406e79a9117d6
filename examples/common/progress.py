"""Live progress for the example drivers (rich on a terminal, a line every few seconds otherwise)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class FunnelProgress:
    """One bar per funnel step, against the budget.

    Args:
        steps: Funnel step names, in order.
        total: The budget (the first step's total).
        quiet: Show nothing.
    """

    def __init__(self, steps: Sequence[str], total: int, quiet: bool = False) -> None:
        self.steps = list(steps)
        self.total = total
        self.quiet = quiet
        self.console = Console(stderr=False)
        self.live = self.console.is_terminal and not quiet
        self._last_line = 0.0
        self._progress = Progress(
            TextColumn("{task.description:>10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.live,
        )
        self._tasks = {
            step: self._progress.add_task(step, total=total, note="") for step in self.steps
        }

    def __enter__(self) -> Self:
        if self.live:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.live:
            self._progress.stop()

    def update(self, counts: dict[str, int], note: str = "") -> None:
        """Shows the new counts (and a note on the last line)."""
        if self.quiet:
            return
        if self.live:
            for step in self.steps:
                self._progress.update(
                    self._tasks[step],
                    completed=counts.get(step, 0),
                    note=note if step == self.steps[-1] else "",
                )
            return
        now = time.monotonic()
        if now - self._last_line >= 5.0:
            self._last_line = now
            line = " -> ".join(f"{step} {counts.get(step, 0)}" for step in self.steps)
            print(f"[progress] {line} {note}", file=sys.stdout, flush=True)
