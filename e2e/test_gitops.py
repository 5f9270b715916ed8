"""The Flux and Argo CD entry points in clusters/: valid against the controllers' CRD schemas, and
what they promise (Redis before the Jobs, no waiting on a run, only changed Jobs replaced).

The schemas: e2e/crdschemas.py says where they come from.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from crdschemas import crd_problem
from rendering import REPO, Manifest, kubectl, render, render_dir, wrap

CLUSTERS = REPO / "clusters"
ENVIRONMENTS = sorted(path.name for path in CLUSTERS.iterdir() if path.is_dir())
FLUX_KUSTOMIZATION = "kustomize.toolkit.fluxcd.io/v1"
REDIS, JOBS = "job-wq-2-redis", "job-wq-2-jobs"

environments = pytest.mark.parametrize("env", ENVIRONMENTS)


def flux_objects(env: str) -> list[Manifest]:
    """What Flux applies from clusters/<env>/flux, rendered as it renders it."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(CLUSTERS / env / "flux")],
        check=True,
        capture_output=True,
        text=True,
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def argo_objects(env: str) -> list[Manifest]:
    text = (CLUSTERS / env / "argocd" / "application.yaml").read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def flux_kustomizations(env: str) -> dict[str, Manifest]:
    return {
        obj["metadata"]["name"]: obj
        for obj in flux_objects(env)
        if obj["apiVersion"] == FLUX_KUSTOMIZATION and obj["kind"] == "Kustomization"
    }


def gitops_objects() -> list[tuple[str, Manifest]]:
    found = []
    for env in ENVIRONMENTS:
        found += [(f"{env}/flux", obj) for obj in flux_objects(env)]
        found += [(f"{env}/argocd", obj) for obj in argo_objects(env)]
    return found


@pytest.mark.parametrize(
    ("where", "obj"),
    gitops_objects(),
    ids=[f"{where}:{obj['kind']}/{obj['metadata']['name']}" for where, obj in gitops_objects()],
)
def test_every_object_is_valid_against_its_crd_schema(
    where: str, obj: Manifest, tmp_path: Path
) -> None:
    problem = crd_problem(obj, tmp_path)
    assert not problem, f"{where}: {problem}"


@environments
def test_flux_starts_redis_first_and_never_waits_for_a_run(env: str) -> None:
    kustomizations = flux_kustomizations(env)
    assert set(kustomizations) == {REDIS, JOBS}
    redis, jobs = kustomizations[REDIS]["spec"], kustomizations[JOBS]["spec"]
    assert redis["wait"] is True, "the Jobs must start only once Redis is healthy"
    assert "dependsOn" not in redis
    assert jobs["dependsOn"] == [{"name": REDIS}]
    assert jobs["wait"] is False, "a Job is healthy only when complete: a long run would time out"
    assert not jobs.get("healthChecks"), "a health check on a Job waits for the whole run"
    for spec in (redis, jobs):
        assert spec["prune"] is True
        assert not spec.get("force"), "force only where needed: the Jobs' own annotation"
        assert spec["timeout"] and spec["interval"]


@environments
def test_flux_sources_and_paths_resolve(env: str) -> None:
    objects = flux_objects(env)
    sources = {(o["kind"], o["metadata"]["name"]) for o in objects if "source" in o["apiVersion"]}
    for spec in (k["spec"] for k in flux_kustomizations(env).values()):
        assert (spec["sourceRef"]["kind"], spec["sourceRef"]["name"]) in sources
        overlay = REPO / spec["path"]
        assert (overlay / "kustomization.yaml").is_file(), spec["path"]
    [argo] = argo_objects(env)
    assert (REPO / argo["spec"]["source"]["path"] / "kustomization.yaml").is_file()


def with_patches(overlay: Path, patches: list[Manifest], root: Path) -> set[tuple[str, str]]:
    """The (kind, name) of what Flux applies: the overlay with the Kustomization's patches."""
    objects = render_dir(wrap(overlay, root, patches=patches))
    return {(d["kind"], d["metadata"]["name"]) for d in objects}


@environments
def test_flux_splits_the_overlay_between_redis_and_jobs_without_overlap(
    env: str, tmp_path: Path
) -> None:
    kustomizations = flux_kustomizations(env)
    overlay = REPO / kustomizations[REDIS]["spec"]["path"]
    assert kustomizations[JOBS]["spec"]["path"] == kustomizations[REDIS]["spec"]["path"]
    parts = {
        name: with_patches(overlay, k["spec"].get("patches", []), tmp_path / name)
        for name, k in kustomizations.items()
    }
    everything = {(o["kind"], o["metadata"]["name"]) for o in render(overlay.name)}
    assert parts[REDIS] | parts[JOBS] == everything, "an object of the overlay is never applied"
    assert not parts[REDIS] & parts[JOBS], "an object owned by both would flap between them"
    assert ("StatefulSet", "redis") in parts[REDIS]
    assert {kind for kind, _ in parts[JOBS]} == {"Job", "ConfigMap"}


def test_the_environments_differ_only_in_source_and_overlay() -> None:
    def shape(env: str) -> dict[str, Manifest]:
        found = {}
        for name, obj in flux_kustomizations(env).items():
            spec = {k: v for k, v in obj["spec"].items() if k not in ("path", "sourceRef")}
            found[name] = {**spec, "source": obj["spec"]["sourceRef"]["name"]}
        return found

    first, *others = ENVIRONMENTS
    for env in others:
        assert shape(env) == shape(first), f"clusters/{env} and clusters/{first} drifted apart"


@environments
def test_argo_cd_replaces_only_out_of_sync_jobs(env: str) -> None:
    [app] = argo_objects(env)
    policy = app["spec"]["syncPolicy"]
    options = policy["syncOptions"]
    assert "ApplyOutOfSyncOnly=true" in options, "else every sync recreates the Force=true Jobs"
    assert not [o for o in options if o.startswith(("Replace=", "Force="))], "Jobs only"
    assert policy["automated"]["prune"] is True
    assert app["spec"]["destination"]["namespace"] == "job-wq-2"
