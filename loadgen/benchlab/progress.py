"""Progress over a run's whole matrix: a bar with ETA and a live line for the current step.

On a terminal it uses rich; elsewhere (compose logs, CI) it prints one plain line per
finished step and nothing that redraws.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, total: int, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_terminal
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
            disable=not self.interactive,
        )  # fmt: skip
        self._task = self._bar.add_task("steps", total=total)

    def __enter__(self) -> Progress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def message(self, text: str) -> None:
        """A line worth keeping in the log (run start, verification, where results are)."""
        if self.interactive:
            self.console.print(text, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def live(self, text: str, duration_s: float | None = None) -> None:
        """What runs now; only shown on a terminal."""
        suffix = f" ({duration_s:g} s)" if duration_s else ""
        self._bar.update(self._task, description=text + suffix)

    def step_done(self, text: str) -> None:
        self._bar.advance(self._task)
        self.message(f"  {text}")

    def advance(self, n: int) -> None:
        if n:
            self._bar.advance(self._task, n)
