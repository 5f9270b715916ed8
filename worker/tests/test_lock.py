"""Everything the repository installs comes from a lock with hashes (scripts/lock.sh, `make lock`).

requirements-dev.txt locks the venv, worker/requirements-local.txt `make demo`'s venv,
worker/requirements.txt the image, examples/thumbnails/requirements.txt the example's image.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import distributions
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

WORKER = Path(__file__).resolve().parents[1]
REPO = WORKER.parent
LOCKS = {
    "venv": REPO / "requirements-dev.txt",
    "demo": WORKER / "requirements-local.txt",
    "image": WORKER / "requirements.txt",
    "example": REPO / "examples" / "thumbnails" / "requirements.txt",
}
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
# `name==version  # ships tool version` in requirements-dev.in: a wheel that wraps a binary.
SHIPS = re.compile(r"^([A-Za-z0-9._-]+)==\S+\s+# ships (\S+) (\S+)$", re.MULTILINE)


def pins(lock: Path, *, on_this_machine: bool = False) -> dict[str, str]:
    """The lock's pins by normalised name; with on_this_machine, only those whose marker holds."""
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", lock.read_text(encoding="utf-8")):
        match = PIN.match(block.splitlines()[0])
        if not match:
            continue
        name, version, marker = match.groups()
        assert "--hash=sha256:" in block, f"{lock.name}: {name} is pinned without a hash"
        if on_this_machine and marker and not Marker(marker).evaluate():
            continue
        found[canonicalize_name(name)] = version
    return found


def declared(*extras: str) -> list[Requirement]:
    """What worker/pyproject.toml asks for at run time, with the named extras, and to build."""
    table = tomllib.loads((WORKER / "pyproject.toml").read_text())
    specs = list(table["project"]["dependencies"]) + list(table["build-system"]["requires"])
    for extra in extras:
        specs += table["project"]["optional-dependencies"][extra]
    return [Requirement(spec) for spec in specs]


def hand_pinned() -> list[Requirement]:
    lines = (REPO / "requirements-dev.in").read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("venv", [*declared("local"), *hand_pinned()]),
        ("demo", declared("local")),
        ("image", declared()),
    ],
)
def test_each_lock_pins_every_requirement_within_its_range(
    lock: str, requirements: list[Requirement]
) -> None:
    locked = pins(LOCKS[lock])
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{LOCKS[lock].name} does not pin {name}; run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{LOCKS[lock].name} pins {name}=={locked[name]}, outside {requirement}; "
            "run `make lock`"
        )


def test_a_package_has_one_version_in_every_lock() -> None:
    venv = pins(LOCKS["venv"])
    for lock in ("demo", "image", "example"):
        for name, version in pins(LOCKS[lock]).items():
            assert venv.get(name) == version, (
                f"{LOCKS[lock].name} pins {name}=={version}, requirements-dev.txt "
                f"{venv.get(name)}; run `make lock`"
            )


@pytest.mark.skipif(
    sys.prefix == sys.base_prefix, reason="runs outside a virtual environment: no venv to compare"
)
def test_the_venv_holds_exactly_the_locked_versions() -> None:
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in distributions()
        if canonicalize_name(dist.metadata["Name"]) not in {"job-wq-2", "pip"}
    }
    assert installed == pins(LOCKS["venv"], on_this_machine=True)


@pytest.mark.parametrize(
    ("package", "tool", "version"),
    SHIPS.findall((REPO / "requirements-dev.in").read_text(encoding="utf-8")),
)
def test_each_wrapped_tool_is_the_version_its_pin_says(
    package: str, tool: str, version: str
) -> None:
    """A wheel's version need not be its binary's: a bump must say which binary it brings."""
    command = {"ShellCheck": "shellcheck"}.get(tool, tool)
    path = shutil.which(command, path=str(Path(sys.executable).parent))
    assert path, f"{package} installed no {command} beside {sys.executable}"
    args = ["version", "--client"] if command == "kubectl" else ["--version"]
    shown = subprocess.run([path, *args], capture_output=True, text=True, check=True).stdout
    assert re.search(rf"(?<![\w.])v?{re.escape(version.lstrip('v'))}(?![\w.])", shown), (
        f"{package}'s {command} says {shown.strip()!r}, requirements-dev.in says {version}"
    )
