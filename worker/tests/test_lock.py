"""The image installs worker/requirements.txt: it pins, with hashes, what pyproject.toml asks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

WORKER = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\]+)")


def pins() -> dict[str, str]:
    text = (WORKER / "requirements.txt").read_text()
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):  # a pin and its indented hash lines
        match = PIN.match(block)
        if match:
            assert "--hash=sha256:" in block, f"{match[1]} is pinned without a hash"
            found[canonicalize_name(match[1])] = match[2]
    return found


def required() -> list[Requirement]:
    project = tomllib.loads((WORKER / "pyproject.toml").read_text())
    runtime = [Requirement(spec) for spec in project["project"]["dependencies"]]
    build = [Requirement(spec) for spec in project["build-system"]["requires"]]
    return runtime + build


def test_the_lock_pins_every_requirement_within_its_range() -> None:
    locked = pins()
    for requirement in required():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.txt; run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.txt pins {name}=={locked[name]}, outside {requirement}; run `make lock`"
        )
