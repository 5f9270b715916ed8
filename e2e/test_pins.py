"""The image pins the update bots edit: every one found, each in form, and all of them consistent.

Renovate (.github/renovate.json) bumps the images pinned as NAME:TAG@sha256:DIGEST; these tests
make its pull requests fail when a bump leaves the repository inconsistent: a pin it does not
see, a tag without its digest, one image at two digests, or a kind node image that the pinned
kind release was not built with.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from rendering import REPO

# A full pin, as the README and the manifests write it.
PIN = re.compile(
    r"(?P<name>[a-z0-9][a-z0-9._/-]*):(?P<tag>[A-Za-z0-9][A-Za-z0-9._-]*)@(?P<digest>sha256:[a-f0-9]{64})"
)
# Any sha256 digest of an image, with or without a name and tag before it.
DIGEST = re.compile(r"@sha256:[0-9a-f]+")
# The kind release's own list of node images, kept by hand from its release notes.
KIND_LIST = "scripts/kind.sh"


def renovate() -> dict[str, Any]:
    config: dict[str, Any] = json.loads((REPO / ".github" / "renovate.json").read_text())
    return config


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    )
    return [name for name in listed.stdout.splitlines() if (REPO / name).is_file()]


def text(name: str) -> str:
    try:
        return (REPO / name).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def js_regex(pattern: str) -> re.Pattern[str]:
    """A Renovate (JavaScript) regex in Python's syntax: named groups are (?P<name>...)."""
    return re.compile(pattern.replace("(?<", "(?P<"))


def managed_files() -> list[str]:
    (manager,) = renovate()["customManagers"]
    patterns = [js_regex(p.strip("/")) for p in manager["managerFilePatterns"]]
    return [name for name in tracked_files() if any(p.search(name) for p in patterns)]


def pins(names: list[str]) -> list[tuple[str, re.Match[str]]]:
    return [(name, found) for name in names for found in PIN.finditer(text(name))]


def test_renovate_edits_image_pins_and_nothing_dependabot_already_does() -> None:
    config = renovate()
    assert config["enabledManagers"] == ["custom.regex", "pip-compile"]
    (manager,) = config["customManagers"]
    assert (manager["datasourceTemplate"], manager["versioningTemplate"]) == ("docker", "docker")


def test_renovate_finds_every_pinned_image_in_the_files_it_watches() -> None:
    (manager,) = renovate()["customManagers"]
    (match,) = [js_regex(p) for p in manager["matchStrings"]]
    managed = managed_files()
    for required in ("worker/Dockerfile", "examples/thumbnails/Dockerfile", "e2e/kind-config.yaml"):
        assert required in managed, f"Renovate does not watch {required}"
    for name, pin in pins(managed):
        found = match.search(pin.group(0))
        assert found and found.group(0) == pin.group(0), (name, pin.group(0))
        assert (found["depName"], found["currentValue"], found["currentDigest"]) == pin.group(
            "name", "tag", "digest"
        )


def test_every_pinned_digest_has_its_tag_in_form_and_sits_in_a_watched_file() -> None:
    """A digest without a tag (or a short one) is a pin no bot can bump or a reader check."""
    managed = set(managed_files())
    for name in tracked_files():
        body = text(name)
        digests = len(DIGEST.findall(body))
        full = len(PIN.findall(body))
        if name.endswith(".md"):
            continue  # prose may quote a digest in short
        assert digests == full, (
            f"{name}: an image digest without NAME:TAG@ before it, or a short one"
        )
        if full and name != KIND_LIST:
            assert name in managed, f"{name} pins an image that Renovate does not watch"


def test_an_image_tag_is_pinned_to_one_digest_everywhere() -> None:
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for name, pin in pins(tracked_files()):
        seen.setdefault((pin["name"], pin["tag"]), {})[pin["digest"]] = name
    assert {key: by for key, by in seen.items() if len(by) > 1} == {}


def test_no_pinned_tag_is_a_moving_one() -> None:
    for name, pin in pins(tracked_files()):
        assert pin["tag"] not in {"latest", "stable", "main"}, (name, pin.group(0))
        assert re.search(r"\d+\.\d+", pin["tag"]), f"{name}: {pin.group(0)} names no version"


def test_both_dockerfiles_build_on_the_same_python_base() -> None:
    bases = {
        name: re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text(name), re.MULTILINE)
        for name in ("worker/Dockerfile", "examples/thumbnails/Dockerfile")
    }
    assert all(len(found) == 1 for found in bases.values()), bases
    assert len({found[0] for found in bases.values()}) == 1, bases


def kind_images() -> list[str]:
    listed = subprocess.run(
        [REPO / "scripts" / "kind.sh", "images"], capture_output=True, text=True, check=True
    )
    return listed.stdout.split()


def test_every_kind_node_image_is_one_the_pinned_kind_lists() -> None:
    listed = kind_images()
    assert listed and all(PIN.fullmatch(image) for image in listed), listed
    used = [
        (name, pin.group(0))
        for name, pin in pins(tracked_files())
        if pin["name"] == "kindest/node" and name != KIND_LIST
    ]
    assert {name for name, _ in used} >= {"e2e/kind-config.yaml", ".github/workflows/ci.yaml"}
    for name, image in used:
        assert image in listed, f"{name}: {image} is not in `scripts/kind.sh images`"


def test_kind_config_runs_the_kind_releases_own_default_image() -> None:
    (image,) = re.findall(r"image: (\S+)", text("e2e/kind-config.yaml"))
    assert image == kind_images()[0]
