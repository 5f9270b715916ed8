"""The manifests as the OCI artifact Flux reads (e2e/test_flux.py): pushed with `flux push
artifact`, and the revision source-controller reports for it once it has fetched it."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

from rendering import MANIFEST_DIRS

# How `flux push artifact` names what it pushed: `<repository>@sha256:<manifest digest>`.
_PUSHED = re.compile(r"@(sha256:[0-9a-f]{64})\b")


def push(root: Path, workdir: Path, artifact: str) -> str:
    """The manifests under `root` pushed to `artifact` (`oci://<host>/<repository>:<tag>`): the
    revision that an OCIRepository following the tag reports, and so the Kustomizations'
    `lastAppliedRevision`: `<tag>@sha256:<manifest digest>` (source-controller's OCIRepository
    docs: "the resolved tag and SHA256 digest is used as the Artifact revision"). `--revision`,
    the tree's own digest here, is only metadata in the artifact's annotations."""
    tree = workdir / "artifact"
    for name in MANIFEST_DIRS:
        shutil.copytree(root / name, tree / name)
    content = hashlib.sha1(usedforsecurity=False)
    for path in sorted(tree.rglob("*")):
        if path.is_file():
            content.update(path.relative_to(tree).as_posix().encode() + path.read_bytes())
    tag = artifact.rsplit(":", 1)[1]
    done = subprocess.run(
        ["flux", "push", "artifact", artifact, f"--path={tree}", "--source=job-wq-2",
         f"--revision={tag}@sha1:{content.hexdigest()}"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    said = done.stdout + done.stderr
    if done.returncode != 0:
        raise AssertionError(f"flux push artifact exited {done.returncode}:\n{said}")
    found = _PUSHED.search(said)
    if found is None:
        raise AssertionError(f"flux push artifact named no pushed digest:\n{said}")
    return f"{tag}@{found.group(1)}"
