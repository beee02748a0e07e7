"""The commit of a checkout, read from its ``.git`` files without running git.

Why without git: in compose the loadgen sees the checkout only as a read-only mount
(``BENCHLAB_CHECKOUT``), its image has no git, and compose itself cannot run a command to
pass the commit in. HEAD is a ref or a hash; a ref is a loose file or a line of
``packed-refs``; a worktree's ``.git`` is a file naming its git directory, whose refs live
in the main repository's (``commondir``). Anything else is "unknown" with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

HASH = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


class NoCommit(Exception):
    """Why a checkout's commit cannot be read: the text run.json records after "unknown"."""


def _git_dir(checkout: Path) -> Path:
    dot_git = checkout / ".git"
    if dot_git.is_dir():
        return dot_git
    if not dot_git.is_file():
        raise NoCommit(f"{checkout} is not a git checkout (no .git)")
    text = dot_git.read_text().strip()
    if not text.startswith("gitdir:"):
        raise NoCommit(f"{dot_git} is neither a folder nor a 'gitdir:' link")
    target = Path(text.removeprefix("gitdir:").strip())
    git_dir = target if target.is_absolute() else checkout / target
    if not git_dir.is_dir():
        where = "a worktree's repository outside the checkout"
        raise NoCommit(f"{dot_git} links to {target}, which is not visible here ({where})")
    return git_dir


def _resolve(git_dir: Path, ref: str) -> str:
    common = git_dir
    if (git_dir / "commondir").is_file():
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha
    raise NoCommit(f"{ref} has no commit yet")


def read_commit(checkout: Path) -> str:
    """The commit HEAD names in ``checkout``; raises NoCommit with the reason."""
    try:
        git_dir = _git_dir(checkout)
        head = (git_dir / "HEAD").read_text().strip()
        sha = _resolve(git_dir, head.removeprefix("ref:").strip()) if head.startswith("ref:") else head
    except OSError as exc:
        raise NoCommit(f"cannot read {checkout}/.git: {exc.strerror or exc}") from None
    if not HASH.fullmatch(sha):
        raise NoCommit(f"HEAD in {checkout} is not a commit hash: {sha[:60]!r}")
    return sha
