"""A flame graph as a standalone SVG: no maintained Python library draws one from sampled stacks
(the known ones read cProfile or shell out to flamegraph.pl), so this is a small writer. The root
is at the bottom, a frame's width is its share of the samples, its colour its component; hovering
shows the frame, its samples and share. Frames narrower than ``MIN_WIDTH_PX`` are left out."""

from __future__ import annotations

import re
from collections import Counter
from html import escape
from pathlib import Path

from benchlab.profiling.components import COMPONENT_NAMES

WIDTH_PX = 1200
ROW_PX = 16
MIN_WIDTH_PX = 0.5
PALETTE = ("#e4572e", "#f3a712", "#29335c", "#669bbc", "#a8c686", "#7b2d26", "#b388eb", "#f7aef8",
           "#4c956c", "#2a9d8f", "#e9c46a", "#8d99ae", "#bbbbbb")  # fmt: skip
COLOURS = dict(zip(COMPONENT_NAMES, PALETTE, strict=True))
# Characters XML 1.0 forbids: py-spy can read a frame name mid-write and hand back control bytes.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(s: str) -> str:
    """``s`` as XML character data: markup escaped, forbidden characters shown as U+FFFD."""
    return escape(_NOT_XML.sub("\ufffd", s))


class _Node:
    __slots__ = ("children", "count")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[str, _Node] = {}


def _tree(stacks: Counter[tuple[str, ...]]) -> _Node:
    root = _Node()
    for stack, n in stacks.items():
        node = root
        node.count += n
        for label in stack:
            node = node.children.setdefault(label, _Node())
            node.count += n
    return root


def _depth(node: _Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def render(stacks: Counter[tuple[str, ...]], title: str, component_of: dict[str, str] | None = None) -> str:
    """The SVG text; ``component_of`` maps a frame label to its component (for the colour)."""
    root = _tree(stacks)
    total = root.count or 1
    scale = WIDTH_PX / total
    height = (_depth(root) + 2) * ROW_PX
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<text x="4" y="12">{_text(title)}</text>',
    ]

    def draw(label: str, node: _Node, x: float, depth: int) -> None:
        w = node.count * scale
        if w < MIN_WIDTH_PX:
            return
        y = height - (depth + 1) * ROW_PX
        colour = COLOURS.get((component_of or {}).get(label, ""), "#d8d8d8")
        tip = f"{label}: {node.count:,} samples, {100 * node.count / total:.1f} %"
        out.append(f'<g><title>{_text(tip)}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" '
                   f'height="{ROW_PX - 1}" fill="{colour}" rx="1"/>')  # fmt: skip
        chars = int(w / 7)
        if chars >= 3:
            text = label if len(label) <= chars else label[: chars - 1] + "…"
            out.append(f'<text x="{x + 2:.1f}" y="{y + ROW_PX - 4}">{_text(text)}</text>')
        out.append("</g>")
        cx = x
        for child_label, child in sorted(node.children.items()):
            draw(child_label, child, cx, depth + 1)
            cx += child.count * scale

    draw("all", root, 0.0, 0)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_flamegraph(stacks: Counter[tuple[str, ...]], path: Path, title: str,
                     component_of: dict[str, str] | None = None) -> None:  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(stacks, title, component_of), encoding="utf-8")
