"""Installing the command as a user would: `pip install ./worker`, `pip install .` at the root, and
pip's `git+URL#subdirectory=worker` form (what pipx takes), each into a fresh virtual environment.

Offline: the build runs without isolation, and the new environment borrows the dependencies of
the one running the tests (a .pth line), so only the package itself is installed from the tree.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "worker" / "pyproject.toml").read_text())["project"]["version"]
# The builds write into the source tree (worker/build), where two at once collide ("File exists:
# build/bdist..."): under `pytest -n` the processes take turns through this lock.
_TREE = hashlib.sha1(str(REPO).encode(), usedforsecurity=False).hexdigest()[:12]
BUILD_LOCK = Path(tempfile.gettempdir(), f"rediswq-build-{_TREE}.lock")


def _fresh(where: Path) -> Path:
    """A virtual environment without pip, that can import this one's packages; its python."""
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _install(python: Path, target: str) -> None:
    with BUILD_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        installed = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
             "--no-index", "--no-deps", "--no-build-isolation", target],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr


def _check(python: Path) -> None:
    command = python.parent / "rediswq"
    shown = subprocess.run([command, "--version"], capture_output=True, text=True, check=False)
    assert (shown.returncode, shown.stdout) == (0, f"rediswq {VERSION} (job-wq-2)\n"), shown
    where = subprocess.run(
        [python, "-c", "import rediswq.scripts, importlib.resources as r; "
         "print(r.files('rediswq') / 'scripts' / 'lease.lua')"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # Its own copy, Lua scripts included, not the source tree the tests run from.
    assert where.startswith(str(python.parent.parent)) and Path(where).is_file(), where


def test_pip_install_of_the_worker_directory(tmp_path: Path) -> None:
    python = _fresh(tmp_path / "venv")
    _install(python, str(REPO / "worker"))
    _check(python)


def test_pip_install_at_the_repository_root_installs_the_same(tmp_path: Path) -> None:
    python = _fresh(tmp_path / "venv")
    _install(python, str(REPO))
    _check(python)


def test_pip_install_from_git_with_the_subdirectory(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout")
    committed = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "worker/pyproject.toml",
         "worker/src"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if committed:
        pytest.skip("the worker has uncommitted changes; git+URL installs the last commit")
    python = _fresh(tmp_path / "venv")
    _install(python, f"git+file://{REPO}#subdirectory=worker")
    _check(python)
