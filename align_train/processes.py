"""Subprocesses align-train starts (sbatch, scontrol, git) get an environment no recipe can influence.

The environment is the one the user started align-train with, captured when this module is
first imported (the entry points import it before Hydra composes anything), so nothing a run
sets later (tracker variables, a launcher's settings) reaches those tools. git gets less still:
no inherited variable at all, no system or global configuration, and no configured helper
commands, so that reading a commit can never run one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

STARTUP_ENV = dict(os.environ)
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def startup_env() -> dict[str, str]:
    """A copy of the environment align-train was started with."""
    return dict(STARTUP_ENV)


def run_tool(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a cluster tool (sbatch, scontrol) with the startup environment; text output captured."""
    return subprocess.run(argv, env=startup_env(), capture_output=True, text=True, **kwargs)


def git_env() -> dict[str, str]:
    """Nothing inherited: git reads GIT_* variables (GIT_CONFIG_COUNT can configure a command to run)."""
    return {
        "PATH": SYSTEM_PATH,
        "HOME": "/nonexistent",
        "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",
    }


# Settings that make git run a command (or write) while it answers "is the tree dirty?", turned off.
GIT_SAFE = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/nonexistent", "-c", "diff.external=",
            "-c", "core.untrackedCache=false", "-c", "status.showUntrackedFiles=no")


def git(root: Path, *args: str) -> str | None:
    """git's answer in ``root`` (None when git is missing or fails)."""
    executable = shutil.which("git", path=SYSTEM_PATH)
    if executable is None:
        return None
    try:
        out = subprocess.run([executable, *GIT_SAFE, *args], cwd=root, env=git_env(), capture_output=True,
                             text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# --------------------------------------------------------------------------- provenance without running git


def _git_dir(root: Path) -> Path | None:
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dot_git.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            path = Path(text.split(":", 1)[1].strip())
            return path if path.is_absolute() else (root / path).resolve()
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir
    if (git_dir / "commondir").is_file():
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text().strip() or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == ref:
                return parts[0]
    return None


def read_commit(root: Path) -> str | None:
    """The checked-out commit, read from the repository's files (no git process runs)."""
    git_dir = _git_dir(root)
    if git_dir is None or not (git_dir / "HEAD").is_file():
        return None
    head = (git_dir / "HEAD").read_text(errors="replace").strip()
    commit = _resolve_ref(git_dir, head[4:].strip()) if head.startswith("ref:") else head
    return commit if commit and all(c in "0123456789abcdef" for c in commit) and len(commit) >= 40 else None


def runs_commands_on_status(root: Path) -> bool:
    """Whether the repository's own config names filters or includes (git status could run them)."""
    git_dir = _git_dir(root)
    config = (git_dir / "config") if git_dir else None
    if config is None or not config.is_file():
        return False
    text = config.read_text(errors="replace").lower()
    return any(section in text for section in ("[filter", "[include", "[includeif", "fsmonitor", "[diff "))


def git_provenance(root: Path) -> dict:
    """The commit (read from files) and whether tracked files differ from it (None: not checked)."""
    commit = read_commit(root)
    if commit is None:
        return {"commit": None, "dirty": None}
    if runs_commands_on_status(root):
        return {"commit": commit, "dirty": None}
    status = git(root, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}
