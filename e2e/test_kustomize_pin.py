"""scripts/kustomize.sh: one kustomize release, checksummed, for make, the docs and the workflows.

Its download cannot run here (no GitHub), so the tests serve it archives from a local directory
through KUSTOMIZE_MIRROR and run a copy of the script in a temporary tree, whose .cache they check.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from rendering import REPO, kubectl

SCRIPT = REPO / "scripts" / "kustomize.sh"
PLATFORMS = ("linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64")
# Where kustomize publishes its archives and their checksums.txt (the script's default mirror).
RELEASES = "https://github.com/kubernetes-sigs/kustomize/releases/download"


def pinned_version() -> str:
    found = re.search(r"^readonly KUSTOMIZE_VERSION=(v\S+)$", SCRIPT.read_text(), re.MULTILINE)
    assert found, "scripts/kustomize.sh names no KUSTOMIZE_VERSION"
    return found.group(1)


def run(script: Path, *args: str, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), *args],
        env={"PATH": path, "HOME": str(script.parent), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def fake_tool(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / name
    tool.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    tool.chmod(0o755)
    return tool


def this_platform() -> str:
    machine = subprocess.run(["uname", "-sm"], capture_output=True, text=True, check=True)
    system, arch = machine.stdout.split()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(arch, arch)
    return f"{system.lower()}-{arch}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the script in a repository of its own, so its .cache is the test's."""
    (tmp_path / "scripts").mkdir()
    for name in ("kustomize.sh", "platform.sh"):
        shutil.copy(SCRIPT.parent / name, tmp_path / "scripts" / name)
    return tmp_path / "scripts" / "kustomize.sh"


@pytest.fixture
def no_mirror(tmp_path: Path) -> str:
    """A KUSTOMIZE_MIRROR with no archive in it: any download fails at once, without a network."""
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    return f"file://{empty}"


@pytest.fixture
def system_path(tmp_path: Path) -> str:
    """A PATH with the script's tools (curl, tar, a sha256 tool), but no kustomize or kubectl."""
    bin_dir = tmp_path / "system-bin"
    bin_dir.mkdir()
    needed = [
        "bash",
        "sh",
        "env",
        "curl",
        "tar",
        "gzip",
        "cut",
        "tr",
        "sed",
        "cat",
        "uname",
        "mktemp",
    ]
    needed += ["mkdir", "mv", "rm", "dirname", "chmod"]
    # sha256sum on Linux; shasum (a Perl script) on macOS.
    optional = ["sha256sum", "shasum", "perl"]
    for tool in needed + optional:
        found = shutil.which(tool)
        assert found or tool in optional, f"{tool} not found"
        if found:
            (bin_dir / tool).symlink_to(found)
    assert (bin_dir / "sha256sum").exists() or (bin_dir / "shasum").exists()
    return str(bin_dir)


def mirror_with(tmp_path: Path, platform: str, body: str) -> Path:
    """A release directory holding an archive of a `kustomize` script for `platform`."""
    mirror = tmp_path / "mirror"
    binary = fake_tool(tmp_path / "payload", "kustomize", body)
    mirror.mkdir()
    archive = mirror / f"kustomize_{pinned_version()}_{platform.replace('-', '_')}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(binary, arcname="kustomize")
    return mirror


def pinned_sha256(platform: str) -> str:
    result = subprocess.run(
        [SCRIPT, "checksum", platform], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_platform_has_a_sha256_of_its_own() -> None:
    sums = [pinned_sha256(platform) for platform in PLATFORMS]
    for platform, printed in zip(PLATFORMS, sums, strict=True):
        assert re.fullmatch(r"[0-9a-f]{64}\n", printed), (platform, printed)
    assert len(set(sums)) == len(PLATFORMS), "two platforms share one checksum"


def test_every_platforms_sha256_is_the_one_the_release_publishes() -> None:
    # The script's own mirror, if one is set: its archives must match these checksums too.
    mirror = os.environ.get("KUSTOMIZE_MIRROR", f"{RELEASES}/kustomize%2F{pinned_version()}")
    url = f"{mirror}/checksums.txt"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - https or a mirror
            published = response.read().decode()
    except urllib.error.HTTPError:  # GitHub answered: a wrong version or URL, not "unreachable"
        raise
    except OSError as exc:  # URLError, a timeout: no route to GitHub from here
        if os.environ.get("GITHUB_ACTIONS") == "true":  # where GitHub is always reachable
            raise
        pytest.skip(f"GitHub is not reachable from here ({exc}); checked on GitHub Actions: {url}")
    # One "<sha256>  <archive name>" line per release asset.
    sums = {name: digest for digest, name in map(str.split, filter(None, published.splitlines()))}
    for platform in PLATFORMS:
        archive = f"kustomize_{pinned_version()}_{platform.replace('-', '_')}.tar.gz"
        assert archive in sums, f"the release publishes no {archive}"
        assert pinned_sha256(platform) == f"{sums[archive]}\n", platform


def test_a_platform_without_a_release_archive_is_an_error() -> None:
    result = subprocess.run(
        [SCRIPT, "checksum", "windows-amd64"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert (
        result.stderr
        == f"kustomize.sh: kustomize {pinned_version()} publishes no archive for windows-amd64\n"
    )


def test_an_archive_with_the_wrong_sha256_is_refused_and_not_kept(
    tree: Path, tmp_path: Path, system_path: str
) -> None:
    platform = this_platform()
    mirror = mirror_with(tmp_path, platform, "echo tampered")
    result = run(tree, "bin", path=system_path, KUSTOMIZE_MIRROR=f"file://{mirror}")
    want = pinned_sha256(platform).strip()
    assert result.returncode == 1
    assert f"expected {want}; not using it" in result.stderr
    assert result.stdout == ""
    cache = tree.parent.parent / ".cache" / "kustomize" / pinned_version()
    assert sorted(p.name for p in cache.iterdir()) == [], "the refused archive was kept"


def test_a_cached_archive_that_no_longer_matches_is_not_used(
    tree: Path, tmp_path: Path, system_path: str, no_mirror: str
) -> None:
    platform = this_platform()
    cache = tree.parent.parent / ".cache" / "kustomize" / pinned_version()
    cache.mkdir(parents=True)
    archive = mirror_with(tmp_path, platform, "echo tampered") / (
        f"kustomize_{pinned_version()}_{platform.replace('-', '_')}.tar.gz"
    )
    shutil.copy(archive, cache / archive.name)
    fake_tool(cache, "kustomize", "echo tampered")
    result = run(tree, "build", ".", path=system_path, KUSTOMIZE_MIRROR=no_mirror)
    assert result.returncode == 1
    assert "tampered" not in result.stdout
    assert "could not download kustomize" in result.stderr


def test_the_kustomize_on_path_is_used_only_at_the_pinned_version(
    tree: Path, tmp_path: Path, system_path: str, no_mirror: str
) -> None:
    for printed, used in ((pinned_version(), True), ("v5.7.0", False)):
        tools = tmp_path / f"tools-{printed}"
        found = fake_tool(
            tools,
            "kustomize",
            f'[ "$1" = version ] && echo {printed}; [ "$1" = build ] && echo ran',
        )
        result = run(tree, "bin", path=f"{tools}:{system_path}", KUSTOMIZE_MIRROR=no_mirror)
        assert (result.returncode, result.stdout) == ((0, f"{found}\n") if used else (1, "")), (
            result.stderr
        )


def test_build_uses_kubectl_only_when_it_embeds_the_pinned_release(
    tree: Path, tmp_path: Path, system_path: str, no_mirror: str
) -> None:
    for embedded, used in ((pinned_version(), True), ("v5.7.1", False)):
        tools = tmp_path / f"kubectl-{embedded}"
        fake_tool(
            tools,
            "kubectl",
            f'[ "$1" = version ] && echo "Kustomize Version: {embedded}"\n'
            '[ "$1" = kustomize ] && echo "rendered $2"',
        )
        result = run(
            tree,
            "build",
            "overlays/x",
            path=f"{tools}:{system_path}",
            KUSTOMIZE_MIRROR=no_mirror,
        )
        if used:
            assert (result.returncode, result.stdout) == (0, "rendered overlays/x\n"), result.stderr
        else:
            assert result.returncode == 1 and "could not download kustomize" in result.stderr


def test_the_venvs_kubectl_embeds_the_pinned_kustomize() -> None:
    """So `make render` and the tests' renders run the same kustomize as the standalone pin."""
    result = subprocess.run(
        [kubectl(), "version", "--client"], capture_output=True, text=True, check=True
    )
    assert f"Kustomize Version: {pinned_version()}" in result.stdout, result.stdout


def test_no_workflow_or_doc_downloads_kustomize_by_itself() -> None:
    for path in [
        *REPO.glob(".github/workflows/*.yaml"),
        REPO / "README.md",
        *REPO.glob("docs/*.md"),
    ]:
        text = path.read_text(encoding="utf-8")
        assert "releases/download/kustomize" not in text, path
        assert "KUSTOMIZE_SHA256" not in text, path
