"""scripts/validate.sh (`make validate`): every overlay and every component, Kubernetes's own kinds
against the pinned Kubernetes schemas, custom resources (KEDA's) against their CRDs' schemas."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from crdschemas import SCHEMAS, schema_root
from rendering import OVERLAYS, REPO, manifests_copy


def validate(root: Path, *overlays: str) -> subprocess.CompletedProcess[str]:
    """scripts/validate.sh of the tree `root`, with this environment's tools and CRD schemas."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if Path(schema_root()).is_dir():
        env[SCHEMAS] = schema_root()
    return subprocess.run(
        [str(root / "scripts" / "validate.sh"), *overlays],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def unused_components() -> list[str]:
    overlays = "".join(
        path.read_text(encoding="utf-8") for path in REPO.glob("overlays/*/kustomization.yaml")
    )
    return [
        path.parent.name
        for path in sorted(REPO.glob("components/*/kustomization.yaml"))
        if f"components/{path.parent.name}\n" not in overlays
    ]


def test_every_overlay_and_every_component_is_validated() -> None:
    done = validate(REPO)
    assert done.returncode == 0, done.stderr
    reported = {line.split()[1].rstrip(":") for line in done.stdout.splitlines()}
    expected = {*OVERLAYS, *(f"components/{name}" for name in unused_components())}
    assert reported == expected, done.stdout
    assert "scaledjob.keda.sh valid against" in done.stdout, "the ScaledJob went unchecked"
    assert not list(REPO.glob(".validate.*")), "validate.sh left its scratch directory"


def test_a_custom_resource_with_an_unknown_field_fails(tmp_path: Path) -> None:
    root = manifests_copy(tmp_path / "repo")
    shutil.copytree(REPO / "scripts", root / "scripts")
    scaledjob = root / "components" / "keda" / "scaledjob.yaml"
    text = scaledjob.read_text(encoding="utf-8")
    assert "    strategy: accurate\n" in text
    scaledjob.write_text(text.replace("    strategy: accurate\n", "    strategi: accurate\n"))
    done = validate(root, "keda")
    assert done.returncode == 1, done.stdout
    assert "FAIL keda: a custom resource is not valid against its CRD's schema" in done.stderr
    assert "strategi" in done.stderr, "the schema's own complaint must be shown"
    # Kubernetes's own kinds of the same overlay are still valid, and say so.
    assert "ok   keda: " in done.stdout


def test_named_overlays_only() -> None:
    done = validate(REPO, "dev")
    assert done.returncode == 0, done.stderr
    assert {line.split()[1].rstrip(":") for line in done.stdout.splitlines()} == {"dev"}
