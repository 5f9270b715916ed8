"""Render an overlay with the real kustomize (kubectl's built-in) and hand back its objects."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
# Every directory under overlays/ is one; optional parts are Components in components/.
OVERLAYS = tuple(sorted(path.parent.name for path in REPO.glob("overlays/*/kustomization.yaml")))
# What the overlays are rendered from.
MANIFEST_DIRS = ("base", "seed", "overlays", "components")

Manifest = dict[str, Any]


def kubectl() -> str:
    """The pinned kubectl of this virtual environment (its kustomize renders), else PATH's."""
    beside = Path(sys.executable).with_name("kubectl")
    if beside.is_file():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found on PATH; run the tests through make")
    return found


@functools.cache
def render_text(overlay: str) -> str:
    return render_directory(REPO / "overlays" / overlay)


@functools.cache
def render_directory(path: Path) -> str:
    """What kustomize renders from `path`: an overlay, or an example's own kustomization."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


def render(overlay: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(render_text(overlay)) if doc]


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise LookupError(f"no {kind}/{name} in the rendered objects")


def runs_redis(overlay: str) -> bool:
    """Whether `overlay` runs Redis in the cluster (components/redis) rather than using a managed
    one (components/managed-redis)."""
    return any(
        obj["kind"] == "StatefulSet" and obj["metadata"]["name"] == "redis"
        for obj in render(overlay)
    )


def redis_template(objects: list[Manifest]) -> Manifest:
    """The Pod template (metadata and spec) of the in-cluster Redis, components/redis."""
    return find(objects, "StatefulSet", "redis")["spec"]["template"]  # type: ignore[no-any-return]


# The overlays with the in-cluster Redis.
IN_CLUSTER = tuple(overlay for overlay in OVERLAYS if runs_redis(overlay))
# The overlays with the replicated Redis and its Sentinels (components/redis-ha).
HA = tuple(
    overlay
    for overlay in OVERLAYS
    if any(
        o["kind"] == "StatefulSet" and o["metadata"]["name"] == "redis-sentinel"
        for o in render(overlay)
    )
)
# The overlays where KEDA starts the workers (components/keda) instead of the worker Job.
SCALED = tuple(
    overlay for overlay in OVERLAYS if any(o["kind"] == "ScaledJob" for o in render(overlay))
)


def job_spec(objects: list[Manifest], name: str) -> Manifest:
    """The spec of the Job `name`, or, where KEDA starts the workers, of each Job that the
    ScaledJob `name` creates."""
    for obj in objects:
        if obj["metadata"]["name"] == name and obj["kind"] in ("Job", "ScaledJob"):
            spec = obj["spec"] if obj["kind"] == "Job" else obj["spec"]["jobTargetRef"]
            return spec  # type: ignore[no-any-return]
    raise LookupError(f"no Job or ScaledJob {name} in the rendered objects")


def seed_items() -> list[str]:
    lines = (REPO / "seed" / "items.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


def render_tree(root: Path, overlay: str) -> list[Manifest]:
    """Render `overlay` of a copy of the manifests under `root` (see `manifests_copy`)."""
    return render_dir(root / "overlays" / overlay)


def wrap(directory: Path, wrapped: Path, **fields: Any) -> Path:
    """A kustomization in the new directory `wrapped` of the kustomization `directory` (and the
    components `components`, paths), with the other `fields` as they are: that directory."""
    wrapped.mkdir(parents=True)
    # kustomize takes only relative paths to other directories.
    if "components" in fields:
        fields["components"] = [os.path.relpath(path, wrapped) for path in fields["components"]]
    kustomization = {"resources": [os.path.relpath(directory, wrapped)], **fields}
    text = yaml.safe_dump(kustomization, sort_keys=False)
    (wrapped / "kustomization.yaml").write_text(text, encoding="utf-8")
    return wrapped


def with_dev_secret(overlay: str, scratch: Path) -> list[Manifest]:
    """The objects of `overlay` with the dev overlay's throw-away Secret redis-auth beside them,
    as a cluster where it was created would run them."""
    (generator,) = yaml.safe_load((REPO / "overlays" / "dev" / "kustomization.yaml").read_text())[
        "secretGenerator"
    ]
    wrapped = wrap(REPO / "overlays" / overlay, scratch / overlay, secretGenerator=[generator])
    return render_dir(wrapped)


def render_dir(directory: Path) -> list[Manifest]:
    """The objects of any kustomization directory."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], check=True, capture_output=True, text=True
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def manifests_copy(target: Path) -> Path:
    """A copy of every directory the overlays render from, to change and render again."""
    for name in MANIFEST_DIRS:
        shutil.copytree(REPO / name, target / name)
    return target
