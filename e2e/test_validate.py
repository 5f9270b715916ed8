"""scripts/validate.sh (`make validate`): every overlay and every component, Kubernetes's own kinds
against the pinned Kubernetes schemas, custom resources (KEDA's) against their CRDs' schemas."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from crdschemas import CATALOG, SCHEMAS, schema_root
from rendering import OVERLAYS, REPO, manifests_copy


def validate(
    root: Path, *overlays: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """scripts/validate.sh of the tree `root`, with this environment's tools and, unless `env`
    names others, its CRD schemas."""
    if env is None:
        env = {SCHEMAS: schema_root()} if Path(schema_root()).is_dir() else {}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, **env}
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
    # validate.sh checks a custom resource with crdschemas.py, which reads Go's regexps.
    (root / "e2e").mkdir()
    for module in ("crdschemas.py", "rendering.py"):
        shutil.copy(REPO / "e2e" / module, root / "e2e" / module)
    scaledjob = root / "components" / "keda" / "scaledjob.yaml"
    text = scaledjob.read_text(encoding="utf-8")
    assert "    strategy: accurate\n" in text
    scaledjob.write_text(text.replace("    strategy: accurate\n", "    strategi: accurate\n"))
    done = validate(root, "keda")
    assert done.returncode == 1, done.stdout
    assert "FAIL keda: scaledjob.keda.sh is not valid against its CRD's schema" in done.stderr
    assert "strategi" in done.stderr, "the schema's own complaint must be shown"
    # Kubernetes's own kinds of the same overlay are still valid, and say so.
    assert "ok   keda: " in done.stdout


def test_named_overlays_only() -> None:
    done = validate(REPO, "dev")
    assert done.returncode == 0, done.stderr
    assert {line.split()[1].rstrip(":") for line in done.stdout.splitlines()} == {"dev"}


def test_without_a_schema_a_custom_resource_is_skipped_saying_so(tmp_path: Path) -> None:
    done = validate(REPO, "keda", env={SCHEMAS: str(tmp_path), "CI": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        f"skip keda: {kind}.keda.sh not checked, no CRD schema: "
        f"no keda.sh/{kind}_v1alpha1.json in {tmp_path}"
        for kind in ("scaledjob", "triggerauthentication")
    ]
    assert done.stderr == ""


def test_in_ci_a_custom_resource_without_a_schema_fails_and_is_not_called_invalid(
    tmp_path: Path,
) -> None:
    done = validate(REPO, "keda", env={SCHEMAS: str(tmp_path), "CI": "true"})
    assert done.returncode == 1, done.stdout
    assert "FAIL keda: scaledjob.keda.sh has no CRD schema to check it against: " in done.stderr
    assert "not valid" not in done.stderr


def test_the_crd_catalog_is_read_at_one_pinned_commit() -> None:
    # At `main`, a change upstream (a schema renamed, a field tightened) would turn a fresh clone
    # red without a commit here; docs/testing.md says how to bump the pin.
    assert re.fullmatch(
        r"https://raw\.githubusercontent\.com/datreeio/CRDs-catalog/[0-9a-f]{40}", CATALOG
    )
    for reader in ("scripts/validate.sh", "e2e/crdschemas.py"):
        source = (REPO / reader).read_text(encoding="utf-8")
        assert "crds-catalog" in source and "CRDs-catalog/" not in source, reader
