"""The GitHub Actions workflows' logic, as far as it can be checked without GitHub.

What only a run on GitHub proves (the jobs passing, the push, the signature, the pull request) is
listed in docs/ci.md; here: the release cannot push before CI passes, both architectures are built,
one tag convention, signing and attestations are asked for, and every action is pinned by SHA to a
major that runs on Node 24.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from rendering import REPO

WORKFLOWS = REPO / ".github" / "workflows"
ACTIONS = REPO / ".github" / "actions"
BUILDER = "./.github/actions/multiarch-builder"
ARCHES = {"linux/amd64", "linux/arm64"}
ISSUER = "https://token.actions.githubusercontent.com"

# The runtime of each action major the workflows use, as its action.yml says (`runs.using`), from
# the action's release notes: node24 since checkout v6, setup-python v6, upload-artifact v6, the
# Docker actions' "Node 24 as default runtime" releases (setup-qemu v4.0.0, setup-buildx v4.0.0,
# login v4.0.0, build-push v7.0.0) and create-pull-request v8; composite actions run no Node.
# A new action or major needs its row, checked the same way.
RUNTIMES = {
    ("actions/checkout", 6): "node24",
    ("actions/setup-python", 6): "node24",
    ("actions/upload-artifact", 6): "node24",
    ("docker/setup-qemu-action", 4): "node24",
    ("docker/setup-buildx-action", 4): "node24",
    ("docker/login-action", 4): "node24",
    ("docker/build-push-action", 7): "node24",
    ("peter-evans/create-pull-request", 8): "node24",
    ("sigstore/cosign-installer", 4): "composite",
    ("fluxcd/flux2/action", 2): "composite",
}

# The cosign each cosign-installer major installs by default (its release notes: v4 installs cosign
# 3, which signs in Sigstore's bundle format by default; cosign 2's verify does not look for that).
COSIGN_OF_INSTALLER = {4: 3}

USES = re.compile(r"^\s*(?:-\s+)?uses:\s+(?P<ref>\S+)(?P<comment>.*)$")
PINNED = re.compile(r"(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40})$")
VERSION_COMMENT = re.compile(r"^\s+# v(?P<major>\d+)\.\d+\.\d+$")
# GitHub's job status check functions other than success() (what `if:` defaults to).
STATUS_FUNCTION = re.compile(r"\b(?:always|failure|cancelled)\s*\(|!\s*success\s*\(")


def workflow(name: str) -> dict[str, Any]:
    doc: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as the boolean true.
    doc["on"] = doc.pop(True)
    return doc


def uses_lines() -> list[tuple[str, str, str]]:
    """(file, reference, the rest of the line) of every `uses:` in every workflow."""
    return [
        (path.name, found["ref"], found["comment"])
        for path in sorted([*WORKFLOWS.glob("*.y*ml"), *ACTIONS.glob("*/action.y*ml")])
        for line in path.read_text(encoding="utf-8").splitlines()
        if (found := USES.match(line))
    ]


def needs(job: dict[str, Any]) -> list[str]:
    value = job.get("needs", [])
    return [value] if isinstance(value, str) else list(value)


def upstream(jobs: dict[str, Any], name: str) -> set[str]:
    """Every job that `name` waits for, directly or through others."""
    seen: set[str] = set()
    todo = needs(jobs[name])
    while todo:
        job = todo.pop()
        if job not in seen:
            seen.add(job)
            todo.extend(needs(jobs[job]))
    return seen


def step(job: dict[str, Any], action: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        s for s in job["steps"] if str(s.get("uses", "")).startswith(action + "@")
    ]
    assert len(found) == 1, f"{len(found)} steps use {action}"
    return found[0]


def run_text(job: dict[str, Any]) -> str:
    return "\n".join(s.get("run", "") for s in job["steps"])


def test_every_action_is_pinned_by_full_sha_with_its_version_beside_it() -> None:
    lines = uses_lines()
    assert lines
    for name, ref, comment in lines:
        if ref.startswith("./"):
            continue
        assert PINNED.fullmatch(ref), f"{name}: {ref} is not pinned to a full commit SHA"
        assert VERSION_COMMENT.fullmatch(comment), f"{name}: {ref} lacks its `# vX.Y.Z` comment"


def test_every_action_runs_on_node_24_or_no_node() -> None:
    for name, ref, comment in uses_lines():
        if ref.startswith("./"):
            continue
        pinned, version = PINNED.fullmatch(ref), VERSION_COMMENT.fullmatch(comment)
        assert pinned and version, ref
        key = (pinned["action"], int(version["major"]))
        assert key in RUNTIMES, (
            f"{name}: {key} has no known runtime; check its action.yml's runs.using"
        )
        assert RUNTIMES[key] in {"node24", "composite"}, f"{name}: {key} runs on {RUNTIMES[key]}"


def test_one_action_one_sha_across_the_workflows() -> None:
    shas: dict[str, set[str]] = {}
    for _, ref, comment in uses_lines():
        if pinned := PINNED.fullmatch(ref):
            shas.setdefault(pinned["action"], set()).add(ref + comment)
    assert {a: s for a, s in shas.items() if len(s) > 1} == {}


def test_ci_can_be_called_by_the_release() -> None:
    assert "workflow_call" in workflow("ci.yaml")["on"]


def test_the_release_pushes_nothing_until_all_of_ci_has_passed() -> None:
    release = workflow("release.yaml")
    jobs = release["jobs"]
    callers = [
        name for name, job in jobs.items() if job.get("uses") == "./.github/workflows/ci.yaml"
    ]
    assert callers == ["ci"], "the release must run ci.yaml itself, on the tagged commit"
    # Whatever may write (push a package, open a pull request, get a signing token) waits for it.
    writers = [
        name
        for name, job in jobs.items()
        if any(v == "write" for v in (job.get("permissions") or {}).values()) and name != "ci"
    ]
    assert {"image", "promote"} <= set(writers)
    for name in writers:
        assert "ci" in upstream(jobs, name), f"release job {name} can run before CI passes"
        # A status function in `if:` replaces the implicit success(): the job would run after
        # a failed or cancelled CI, as would one waiting only for such a job.
        for job in {name} | upstream(jobs, name) - {"ci"}:
            condition = str(jobs[job].get("if", ""))
            assert not STATUS_FUNCTION.search(condition), f"{job} runs on: if: {condition}"
    assert release["permissions"] == {"contents": "read"}


def test_both_architectures_are_built_by_ci_and_released() -> None:
    release = step(workflow("release.yaml")["jobs"]["image"], "docker/build-push-action")["with"]
    ci_jobs = workflow("ci.yaml")["jobs"]
    ci = step(ci_jobs["image-arches"], "docker/build-push-action")["with"]
    assert set(release["platforms"].split(",")) == ARCHES == set(ci["platforms"].split(","))
    assert release["context"] == ci["context"] == "worker"
    assert (release["push"], ci["push"]) == (True, False)
    # With the same QEMU, Buildx and BuildKit.
    for job in (workflow("release.yaml")["jobs"]["image"], ci_jobs["image-arches"]):
        assert [s for s in job["steps"] if s.get("uses") == BUILDER], "no pinned builder"
    # CI builds them whenever their inputs change, the builder's pins included (and when it
    # cannot tell, e.g. for a new tag): a bump of QEMU or BuildKit is built before a release.
    assert ci_jobs["image-arches"]["if"] == "needs.changes.outputs.worker == 'true'"
    (paths,) = re.findall(r'scripts/changed\.sh "\$BASE" ([^)]*)\)', run_text(ci_jobs["changes"]))
    assert set(paths.split()) >= {"worker/", BUILDER.removeprefix("./") + "/"}, paths


@pytest.fixture
def history(tmp_path: Path) -> Path:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    for path in ("worker/a", "docs/b"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text("1")
    git("add", ".")
    git("commit", "-qm", "first")
    (tmp_path / "docs" / "b").write_text("2")
    git("commit", "-qam", "docs only")
    (tmp_path / "worker" / "a").write_text("2")
    git("commit", "-qam", "worker")
    return tmp_path


@pytest.mark.parametrize(
    ("base", "answer"),
    [
        ("HEAD~1", "true"),  # the last commit changed worker/
        ("HEAD~2", "true"),
        ("0" * 40, "true"),  # a new branch or tag: no commit before
        ("", "true"),
        ("f" * 40, "true"),  # not in the clone
    ],
)
def test_changed_tells_whether_worker_changed(history: Path, base: str, answer: str) -> None:
    result = subprocess.run(
        [REPO / "scripts" / "changed.sh", base, "worker/"],
        cwd=history,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, answer + "\n"), result.stderr


def test_changed_says_false_when_only_other_paths_changed(history: Path) -> None:
    subprocess.run(["git", "checkout", "-q", "HEAD~1"], cwd=history, check=True)
    result = subprocess.run(
        [REPO / "scripts" / "changed.sh", "HEAD~1", "worker/"],
        cwd=history,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "false\n"), result.stderr


def github_tag_filter(pattern: str) -> re.Pattern[str]:
    """GitHub's filter pattern syntax (`*`, `+`, `[...]`, the rest literal) as a regex."""
    out = ""
    for token in re.findall(r"\[[^\]]*\]|\*\*|.", pattern):
        out += {"*": "[^/]*", "**": ".*", "+": "+", "?": "?"}.get(
            token, token if token[0] == "[" else re.escape(token)
        )
    return re.compile(out)


def test_release_tags_are_v_semver_and_the_image_tag_drops_the_v() -> None:
    release = workflow("release.yaml")
    (pattern,) = release["on"]["push"]["tags"]
    accepts = github_tag_filter(pattern)
    assert all(accepts.fullmatch(t) for t in ("v0.1.0", "v1.20.3", "v1.2.0-rc.1"))
    assert not any(accepts.fullmatch(t) for t in ("0.1.0", "latest", "version-1"))
    image = release["jobs"]["image"]
    assert 'scripts/image-tag.sh "$TAG"' in run_text(image)
    build = step(image, "docker/build-push-action")["with"]
    assert build["tags"] == "${{ steps.name.outputs.repository }}:${{ steps.name.outputs.version }}"
    promote = release["jobs"]["promote"]
    assert promote["env"]["VERSION"] == "${{ needs.image.outputs.version }}"
    assert (
        step(promote, "peter-evans/create-pull-request")["with"]["branch"]
        == "release/ghcr-${{ env.VERSION }}"
    )


@pytest.mark.parametrize(
    ("tag", "image_tag"),
    [("v0.1.0", "0.1.0"), ("v10.0.12", "10.0.12"), ("v1.2.0-rc.1", "1.2.0-rc.1")],
)
def test_image_tag_of_a_release_tag(tag: str, image_tag: str) -> None:
    result = subprocess.run(
        [REPO / "scripts" / "image-tag.sh", tag], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (0, image_tag + "\n")


@pytest.mark.parametrize("tag", ["0.1.0", "v1.2", "v01.2.3", "v1.2.3.4", "v1.2.3 ", "release-1"])
def test_a_tag_that_is_not_a_release_is_refused(tag: str) -> None:
    result = subprocess.run(
        [REPO / "scripts" / "image-tag.sh", tag], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert (
        result.stderr
        == f"image-tag.sh: release tags look like v1.2.3 or v1.2.3-rc.1, not '{tag}'\n"
    )


def test_overlays_and_docs_use_the_image_tag_form() -> None:
    ghcr = yaml.safe_load(
        (REPO / "overlays" / "ghcr" / "kustomization.yaml").read_text(encoding="utf-8")
    )
    (image,) = ghcr["images"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(image["newTag"])), image
    docs = [REPO / "README.md", *sorted(REPO.glob("docs/*.md"))]
    text = "\n".join(path.read_text(encoding="utf-8") for path in docs)
    assert "job-wq-2:0.1.0@sha256:" in text
    assert not re.search(r"job-wq-2:v\d", text), "an image tag with a v"


def test_each_pushed_image_gets_provenance_an_sbom_and_a_keyless_signature() -> None:
    image = workflow("release.yaml")["jobs"]["image"]
    assert image["permissions"]["id-token"] == "write"
    build = step(image, "docker/build-push-action")["with"]
    assert (build["provenance"], build["sbom"]) == ("mode=max", True)
    step(image, "sigstore/cosign-installer")
    script = run_text(image)
    assert 'cosign sign --yes "$IMAGE"' in script
    assert (
        "--certificate-identity-regexp" in script
        and f"--certificate-oidc-issuer {ISSUER}" in script
    )


def test_the_docs_verify_the_identity_the_release_signs_with() -> None:
    page = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
    found = re.search(r"^cosign verify .*?(?=^```)", page, re.MULTILINE | re.DOTALL)
    assert found, "docs/security.md shows no cosign verify command"
    command = found.group(0)
    regexp = re.search(r"--certificate-identity-regexp '([^']+)'", command)
    assert regexp, command
    assert f"--certificate-oidc-issuer {ISSUER}" in command
    # The identity GitHub puts in the certificate of a job of release.yaml run for tag v0.1.0.
    identity = "https://github.com/acme/job-wq-2/.github/workflows/release.yaml@refs/tags/v0.1.0"
    filled = regexp.group(1).replace("<owner>", "acme").replace("<repo>", "job-wq-2")
    assert re.search(filled, identity)
    assert not re.search(filled, identity.replace("release.yaml", "ci.yaml"))
    assert not re.search(filled, identity.replace("refs/tags/v0.1.0", "refs/heads/main"))


def test_the_docs_ask_for_a_cosign_that_reads_what_the_release_signs() -> None:
    [comment] = [c for _, ref, c in uses_lines() if ref.startswith("sigstore/cosign-installer@")]
    version = VERSION_COMMENT.fullmatch(comment)
    assert version, comment
    signer = COSIGN_OF_INSTALLER[int(version["major"])]
    page = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
    asked = re.search(r"\[cosign\]\([^)]*\) (\d+)\.x or later", page)
    assert asked, "docs/security.md names no cosign version for the verify command"
    assert int(asked[1]) >= signer, f"cosign {asked[1]}.x cannot read cosign {signer}'s signature"


def test_cluster_jobs_pass_the_token_the_tests_use_for_githubs_api() -> None:
    """Anonymous calls to GitHub's API are limited per address, which runners share."""
    jobs = workflow("ci.yaml")["jobs"]
    for path in sorted((REPO / "e2e").glob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        if "GITHUB_TOKEN" not in source:
            continue
        # ci.yaml's job for each marker is named after it.
        for job in ("kind", "flux"):
            if f"pytest.mark.{job}" in source:
                env = jobs[job].get("env", {})
                assert env.get("GITHUB_TOKEN") == "${{ github.token }}", f"{job} job, {path.name}"
