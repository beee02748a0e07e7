"""Progress over a run's whole matrix: a bar with ETA and a live line for the current step.

On a terminal it uses rich; elsewhere (compose logs, CI) it prints one plain line per
finished step, ``[k/N] <step>  ETA mm:ss``, and nothing that redraws: a log has no bar, so
each line carries the count and the estimate itself.

Paths in messages are the ones the user can open: in compose the loadgen writes under its
container path (``BENCHLAB_OUT``, ``/results``), which compose's ``BENCHLAB_RESULTS_HOST``
maps back to the folder on the host.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from benchlab.config.settings import settings


def host_paths(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with the container's results path replaced by the host's, when compose says
    where that is (``BENCHLAB_RESULTS_HOST``, as given: a relative one is relative to the
    directory holding compose.yaml, where ``docker compose`` runs)."""
    given = settings(env)
    inside = given.out_as_set.rstrip("/")
    outside = given.results_host.rstrip("/")
    if not inside or not outside or inside == outside:
        return text
    # whole path components only: /results/x and "/results" but not /results2 or a/results
    pattern = rf"(?<![\w./-]){re.escape(inside)}(?![\w.-])"
    return re.sub(pattern, lambda _: outside, text)


def format_eta(seconds: float) -> str:
    """mm:ss, or h:mm:ss from an hour on (tfb runs take hours)."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    def __init__(self, total: int, console: Console | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_terminal
        self.total = total
        self._clock = clock
        self._started: float | None = None  # when the first step (or its primer) began
        self._done = 0  # steps finished, those a resumed run found done included
        self._timed = 0  # steps this process finished: what the ETA's pace is measured on
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
        text = host_paths(text)
        if self.interactive:
            self.console.print(text, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def live(self, text: str, duration_s: float | None = None) -> None:
        """What runs now; only shown on a terminal."""
        if self._started is None:  # the pace counts from here: verification before is once per run
            self._started = self._clock()
        suffix = f" ({duration_s:g} s)" if duration_s else ""
        self._bar.update(self._task, description=text + suffix)

    def eta_s(self) -> float:
        """Seconds left at this run's pace so far (primers and warm-ups included)."""
        if not self._timed or self._started is None:
            return 0.0
        pace = (self._clock() - self._started) / self._timed
        return pace * max(0, self.total - self._done)

    def step_done(self, text: str) -> None:
        self._bar.advance(self._task)
        self._done += 1
        self._timed += 1
        if self.interactive:  # the bar shows the count and the ETA
            self.message(f"  {text}")
        else:
            self.message(f"  [{self._done}/{self.total}] {text}  ETA {format_eta(self.eta_s())}")

    def advance(self, n: int) -> None:
        """Steps already done (a resumed run's): counted, not timed."""
        if n:
            self._bar.advance(self._task, n)
            self._done += n
