"""Reading the speedscope file py-spy writes: one sampled profile per thread, each sample a list
of frame indexes from the root to the innermost frame. With ``--subprocesses`` py-spy puts a
``process NNN:"cmdline"`` pseudo-frame (no file) at the root of each sample."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchlab.errors import BenchlabError
from benchlab.profiling.components import Frame


@dataclass(frozen=True)
class Recording:
    """Every sample py-spy kept (it drops idle ones: ``--idle`` is off), by thread."""

    frames: tuple[Frame, ...]
    threads: dict[str, list[tuple[tuple[int, ...], float]]]  # thread name -> [(frame indexes, weight)]

    def samples(self) -> Iterator[tuple[tuple[Frame, ...], int]]:
        """(stack from root to innermost frame, 1) for every sample of every thread."""
        for samples in self.threads.values():
            for indexes, _ in samples:
                yield tuple(self.frames[i] for i in indexes), 1

    @property
    def total(self) -> int:
        return sum(len(s) for s in self.threads.values())


def read_speedscope(path: Path) -> Recording:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        frames = tuple(Frame(f["name"], f.get("file") or "", f.get("line")) for f in data["shared"]["frames"])
        threads: dict[str, list[tuple[tuple[int, ...], float]]] = {}
        for profile in data["profiles"]:
            if profile.get("type") != "sampled":
                continue
            weights = profile.get("weights") or [1.0] * len(profile["samples"])
            rows = threads.setdefault(str(profile.get("name", len(threads))), [])
            rows += [(tuple(s), float(w)) for s, w in zip(profile["samples"], weights, strict=True)]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise BenchlabError(f"{path} is not a speedscope profile py-spy wrote: {exc}") from exc
    return Recording(frames, threads)
