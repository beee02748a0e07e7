"""The commit read from a checkout's .git files without git (benchlab/checkout.py), checked
against what real git says for each layout: a branch, packed refs, a detached HEAD, a
worktree, an empty repository, no repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchlab.checkout import NoCommit, read_commit


def git(cwd: Path, *args: str) -> str:
    argv = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-c", "init.defaultBranch=main", *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    (path / "a.txt").write_text("a\n")
    git(path, "add", "a.txt")
    git(path, "commit", "-q", "-m", "one")
    return path


def test_branch_packed_refs_and_detached_head(repo: Path):
    assert read_commit(repo) == git(repo, "rev-parse", "HEAD")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git/refs/heads/main").exists()
    assert read_commit(repo) == git(repo, "rev-parse", "HEAD")
    (repo / "a.txt").write_text("b\n")
    git(repo, "commit", "-q", "-am", "two")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    assert read_commit(repo) == git(repo, "rev-parse", "HEAD")


def test_worktree_reads_its_own_head_and_says_when_its_repository_is_out_of_sight(repo: Path, tmp_path: Path):
    tree = tmp_path / "tree"
    git(repo, "worktree", "add", "-q", "-b", "side", str(tree))
    (tree / "a.txt").write_text("side\n")
    git(tree, "commit", "-q", "-am", "side")
    assert read_commit(tree) == git(tree, "rev-parse", "HEAD") != git(repo, "rev-parse", "HEAD")
    moved = tmp_path / "moved"
    tree.rename(moved)
    git_dir = (moved / ".git").read_text().split(":", 1)[1].strip()
    (moved / ".git").write_text("gitdir: /nowhere/.git/worktrees/tree\n")
    with pytest.raises(NoCommit, match="not visible here"):
        read_commit(moved)
    assert git_dir


def test_no_repository_and_no_commit_say_why(tmp_path: Path):
    with pytest.raises(NoCommit, match="is not a git checkout"):
        read_commit(tmp_path)
    git(tmp_path, "init", "-q")
    with pytest.raises(NoCommit, match="refs/heads/main has no commit yet"):
        read_commit(tmp_path)
