"""The Makefile under GNU make 3.81's semantics (the make macOS ships) as well as under 4.x.

GNU make 3.81 cannot be installed here (Debian ships 4.3 only), so its two differences that
matter are checked directly: it has none of the features added since (checked in the text), and
it ignores `.SHELLFLAGS`, running every recipe line as `$(SHELL) -c LINE`, which `.SHELLFLAGS=-c`
on the command line reproduces on 4.x (checked by running the targets). On macOS runners the same
tests run under the real 3.81.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAKEFILE = REPO / "Makefile"
# What 3.81 does with every recipe line, whatever .SHELLFLAGS says.
AS_3_81 = ".SHELLFLAGS=-c"

# Features of GNU make 3.82 and later (its NEWS file), each as it would appear in a Makefile.
NEWER_THAN_3_81 = {
    ".SHELLFLAGS": r"^\s*\.SHELLFLAGS\b",
    ".ONESHELL": r"^\s*\.ONESHELL\b",
    ".RECIPEPREFIX": r"^\s*\.RECIPEPREFIX\b",
    ".EXTRA_PREREQS": r"\.EXTRA_PREREQS\b",
    "undefine": r"^\s*undefine\b",
    "private": r"^\s*private\s",
    "!= (shell assignment)": r"^[^#\t=]*[^:+?!]!=",
    "::= (POSIX assignment)": r"^[^#\t]*::=",
    "$(file ...)": r"\$\(file\s",
    "$(guile ...)": r"\$\(guile\s",
    "$(let ...)": r"\$\(let\s",
    "$(intcmp ...)": r"\$\(intcmp\s",
    "&: (grouped targets)": r"^[^#\t]*&:",
}


def make_env() -> dict[str, str]:
    """The environment without the make that may be running these tests (its flags and level)."""
    return {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}


def make(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        env=make_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_makefile_uses_nothing_newer_than_gnu_make_3_81() -> None:
    lines = [line for line in MAKEFILE.read_text(encoding="utf-8").splitlines()]
    found = [
        f"line {number}: {name}: {line.strip()}"
        for number, line in enumerate(lines, 1)
        if not line.lstrip().startswith("#")
        for name, pattern in NEWER_THAN_3_81.items()
        if re.search(pattern, line)
    ]
    assert not found, "\n".join(found)


@pytest.fixture
def lock_tree(tmp_path: Path) -> Path:
    """A copy of the Makefile and scripts/lock.sh whose venv's uv fails after reading its input."""
    shutil.copy(MAKEFILE, tmp_path / "Makefile")
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "lock.sh", tmp_path / "scripts" / "lock.sh")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    uv = bin_dir / "uv"
    uv.write_text("#!/bin/sh\ncat >/dev/null\nexit 3\n", encoding="utf-8")
    uv.chmod(0o755)
    # Stamps newer than what they depend on: make must not try to build the venv.
    for stamp in (".runtime", ".dev"):
        (tmp_path / ".venv" / stamp).touch()
    return tmp_path


def test_a_failing_resolution_fails_make_lock_under_3_81_semantics(lock_tree: Path) -> None:
    result = make(AS_3_81, "lock", cwd=lock_tree)
    assert result.returncode != 0, result.stdout + result.stderr


def test_a_failing_resolution_fails_make_lock_under_this_make(lock_tree: Path) -> None:
    result = make("lock", cwd=lock_tree)
    assert result.returncode != 0, result.stdout + result.stderr


def help_targets() -> list[str]:
    result = make(AS_3_81, "help")
    assert result.returncode == 0, result.stderr
    targets = result.stdout.split("\n\n")[0]  # then the docs
    return [line.split()[0] for line in targets.splitlines() if line.strip()]


def test_every_target_in_help_parses_under_3_81_semantics() -> None:
    targets = help_targets()
    assert {"lint", "unit", "manifests", "render", "validate", "lock", "kustomize"} <= set(targets)
    # -n: what each would run, which needs the Makefile and every prerequisite to parse.
    result = make(AS_3_81, "-n", *targets)
    assert result.returncode == 0, result.stderr


def test_render_and_validate_run_under_3_81_semantics() -> None:
    result = make(AS_3_81, "render", "validate", "OVERLAY=ghcr")
    assert result.returncode == 0, result.stderr
    assert "kind: Job" in result.stdout
    assert re.search(r"^ok +ghcr: ", result.stdout, re.MULTILINE), result.stdout


@pytest.fixture
def first_run_tree(tmp_path: Path) -> Path:
    """A copy of the Makefile with no venv yet, whose python makes one of scripts: a pip that
    talks on stdout as pip does, and a kustomize.sh that prints one object."""
    shutil.copy(MAKEFILE, tmp_path / "Makefile")
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "pyproject.toml").write_text("", encoding="utf-8")
    for lock in ("requirements-dev.txt", "worker/requirements-local.txt"):
        (tmp_path / lock).write_text("", encoding="utf-8")
    scripts = {
        # `python3 -m venv [--clear] DIR`: DIR is the last argument.
        "python3": 'if [ "$1" = -m ]; then for d; do :; done; '
        'mkdir -p "$d/bin"; cp pip.sh "$d/bin/pip"; fi',
        "pip.sh": "echo 'Successfully installed something-1.0'",
        "scripts/kustomize.sh": "echo 'kind: Job'",
    }
    for name, body in scripts.items():
        script = tmp_path / name
        script.parent.mkdir(exist_ok=True)
        script.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
        script.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize("semantics", [[], [AS_3_81]], ids=["this make", "3.81"])
def test_render_prints_only_yaml_on_a_first_run(first_run_tree: Path, semantics: list[str]) -> None:
    result = make(*semantics, "render", f"PYTHON={first_run_tree / 'python3'}", cwd=first_run_tree)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kind: Job\n"  # `make render > x.yaml` is YAML
    assert "Setting up .venv" in result.stderr and "Successfully installed" in result.stderr


def test_help_shows_the_image_it_builds() -> None:
    shown = make("help", "IMAGE=example.com/wq:1").stdout
    assert "$(" not in shown
    assert "Build the worker image example.com/wq:1 " in shown


def test_help_names_every_page_of_the_docs_with_its_title() -> None:
    shown = make("help").stdout
    for page in sorted((REPO / "docs").glob("*.md")):
        title = page.read_text(encoding="utf-8").splitlines()[0].removeprefix("# ")
        assert re.search(rf"^  docs/{page.name} +{re.escape(title)}$", shown, re.MULTILINE), page
