"""The sides of an A/B benchmark: this checkout, or a commit checked out into a temporary git
worktree and installed into a virtual environment of its own.

The other side gets the redis-py and hiredis versions installed here, so the two differ only in
the commit's code.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Side:
    name: str  # what the tables call it: a short commit id, with "+" for uncommitted changes
    python: str  # the interpreter that has this side's rediswq installed


def _git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def compiled(side: Side) -> Side:
    """`side` with its rediswq compiled to bytecode, as pip leaves an installed package (the
    image's): an editable install where PYTHONDONTWRITEBYTECODE is set would compile its modules
    again at every start."""
    where = "import os, rediswq; print(os.path.dirname(rediswq.__file__))"
    package = subprocess.run(
        [side.python, "-c", where], check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run([side.python, "-m", "compileall", "-q", package], check=True)
    return side


def this_side() -> Side:
    """This checkout, as installed in the running interpreter."""
    # "+": the package or the benchmark differs from the commit (docs do not count).
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", "worker"))
    return compiled(
        Side(_git("rev-parse", "--short", "HEAD") + ("+" if dirty else ""), sys.executable)
    )


@contextmanager
def checked_out(rev: str) -> Iterator[Side]:
    """`rev` installed in a throw-away venv; the worktree and venv go when the block ends."""
    name = _git("rev-parse", "--short", rev)
    with tempfile.TemporaryDirectory(prefix=f"rediswq-bench-{name}-") as tmp:
        tree = Path(tmp) / "tree"
        _git("worktree", "add", "--detach", str(tree), rev)
        try:
            venv = Path(tmp) / "venv"
            print(f"Installing {name} into {venv}", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pins = [f"redis=={version('redis')}", f"hiredis=={version('hiredis')}"]
            pip = str(venv / "bin" / "pip")
            package = str(tree / "worker")
            subprocess.run([pip, "install", "--quiet", *pins, "-e", package], check=True)
            yield compiled(Side(name, str(venv / "bin" / "python")))
        finally:
            _git("worktree", "remove", "--force", str(tree))


def compared(stack: ExitStack, against: str | None) -> list[Side]:
    """This checkout, then `against` checked out for as long as `stack` is open, if named."""
    sides = [this_side()]
    if against:
        sides.append(stack.enter_context(checked_out(against)))
    return sides
