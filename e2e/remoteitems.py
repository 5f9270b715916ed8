"""An overlay as a user of components/remote-items writes it, in a copy of the manifests."""

from __future__ import annotations

from pathlib import Path

import yaml
from rendering import REPO, manifests_copy

COMPONENT = REPO / "components" / "remote-items"
OVERLAY = "large"


def overlay(root: Path, base: str = "dev", **settings: str) -> Path:
    """An overlay on overlays/`base` with the component and `settings` merged into the settings
    ConfigMap, in a copy of the manifests under `root`; the copy is made once."""
    if not (root / "base").exists():
        manifests_copy(root)
    literals = "".join(f"      - {key}={value}\n" for key, value in settings.items())
    directory = root / "overlays" / OVERLAY
    directory.mkdir(exist_ok=True)
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources: [../{base}]\n"
        "components: [../../components/remote-items]\n"
        "configMapGenerator:\n"
        "  - name: job-wq-2-settings\n"
        "    behavior: merge\n"
        "    literals:\n" + literals,
        encoding="utf-8",
    )
    return root


def added_to(root: Path, name: str, before: str | None, **settings: str) -> Path:
    """overlays/`name` itself, in a copy of the manifests under `root`, with the component listed
    just before the component `before` (or last) and `settings` merged into the settings."""
    if not (root / "base").exists():
        manifests_copy(root)
    path = root / "overlays" / name / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text(encoding="utf-8"))
    components = kustomization["components"]
    at = components.index(f"../../components/{before}") if before else len(components)
    components.insert(at, "../../components/remote-items")
    kustomization["configMapGenerator"] = [
        {
            "name": "job-wq-2-settings",
            "behavior": "merge",
            "literals": [f"{key}={value}" for key, value in settings.items()],
        }
    ]
    path.write_text(yaml.safe_dump(kustomization), encoding="utf-8")
    return root
