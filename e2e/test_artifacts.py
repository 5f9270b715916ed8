"""The Flux e2e's artifact logic that needs no cluster: the revision it waits for is the one
source-controller reports, not the `--revision` metadata it pushes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from artifacts import push
from rendering import MANIFEST_DIRS, REPO

DIGEST = "sha256:" + "0123456789abcdef" * 4


def stand_in_flux(directory: Path) -> Path:
    """A `flux` that records its arguments and, like the real one (cmd/flux/push_artifact.go),
    ends with the pushed manifest's `<repository>@<digest>` on stderr: where its calls go."""
    calls = directory / "flux.calls"
    script = directory / "flux"
    script.write_text(
        f"""#!/bin/sh
printf '%s\\n' "$@" > "{calls}"
echo "► pushing artifact to localhost:5001/job-wq-2-manifests:main" >&2
echo "✔ artifact successfully pushed to localhost:5001/job-wq-2-manifests@{DIGEST}" >&2
""",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return calls


def test_the_revision_waited_for_is_the_tag_and_the_pushed_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = stand_in_flux(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    artifact = "oci://localhost:5001/job-wq-2-manifests:main"
    revision = push(REPO, tmp_path / "work", artifact)
    # source-controller reports an OCIRepository's artifact as <tag>@sha256:<manifest digest>.
    assert revision == f"main@{DIGEST}"
    args = calls.read_text(encoding="utf-8").splitlines()
    assert args[:3] == ["push", "artifact", artifact], json.dumps(args)
    pushed = Path(next(a for a in args if a.startswith("--path=")).split("=", 1)[1])
    assert sorted(p.name for p in pushed.iterdir()) == sorted(MANIFEST_DIRS)
