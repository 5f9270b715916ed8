"""components/remote-items: a list too big for a ConfigMap, streamed by the seed from a URL whose
items' digest Git keeps. Renders an overlay as a user writes it (the component's own header) and
reads the Jobs as the kubelet and rediswq would: the run is the digest's, in both Jobs, and Git
alone decides when a new run starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from crdschemas import crd_problem
from podspec import Spec, pod_spec
from rediswq.errors import EXIT_CONFIG
from rediswq.runs import items_digest, run_id
from rediswq.seeding import planned, worker_run
from remoteitems import COMPONENT, OVERLAY, added_to, overlay
from rendering import Manifest, find, render_tree, seed_items
from test_manifests import validation_problems

URL = "https://storage.example.com/batches/items.txt.gz"
DIGEST = "6b7cdca9bd2cace86d983cb3da570e29cff59a9e991956bb52e3023094e6aadb"
JOBS = ("job-wq-2-seed", "job-wq-2")
SETTINGS = {"ITEMS_URL": URL, "ITEMS_SHA256": DIGEST}


def specs(objects: list[Manifest], scratch: Path) -> dict[str, Spec]:
    """Each Job's container as the kubelet runs it: environment and `$(VAR)` arguments resolved."""
    return {
        job: pod_spec(find(objects, "Job", job)["spec"]["template"]["spec"], objects, scratch)
        for job in JOBS
    }


def runs(objects: list[Manifest], scratch: Path) -> tuple[str, str | None]:
    """The run the seed queues for and the run the workers wait for, as rediswq names them."""
    seed, worker = specs(objects, scratch).values()
    assert seed.args is not None
    _, seeded = planned(
        seed.args[-1], seed.env["ITEMS_SHA256"], seed.env.get("RUN_ID", ""), seed.env["RUN_LABEL"]
    )
    env = worker.env
    worked = worker_run(
        env.get("RUN_ID", ""), env["ITEMS_SHA256"], env.get("RUN_ITEMS", ""), env["RUN_LABEL"]
    )
    return seeded, worked


def test_the_component_header_is_what_the_tests_render() -> None:
    header = (COMPONENT / "kustomization.yaml").read_text(encoding="utf-8")
    for line in (
        "#     - ../../components/remote-items",
        "#     - name: job-wq-2-settings",
        "#       behavior: merge",
        "#         - ITEMS_URL=",
        "#         - ITEMS_SHA256=",
    ):
        assert line in header, line


@pytest.mark.parametrize("base", ["dev", "managed"])
def test_the_seed_streams_the_url_and_no_job_mounts_the_items(tmp_path: Path, base: str) -> None:
    root = overlay(tmp_path / "repo", base, ITEMS_URL=URL, ITEMS_SHA256=DIGEST)
    objects = render_tree(root, OVERLAY)
    problems = list(validation_problems(objects))
    assert not problems, "\n".join(problems)
    assert not [o for o in objects if o["metadata"]["name"].startswith("job-wq-2-items")]
    seed, worker = (find(objects, "Job", job)["spec"]["template"]["spec"] for job in JOBS)
    assert seed["containers"][0]["args"] == ["seed", "$(ITEMS_URL)"]
    env = {var["name"]: var.get("value") for var in worker["containers"][0]["env"]}
    assert "RUN_ITEMS" not in env and env["ITEMS_SHA256"] == "$(ITEMS_SHA256)", env
    for job, pod in zip(JOBS, (seed, worker), strict=True):
        assert "items" not in [v["name"] for v in pod["volumes"]], job
        mounts = [m["name"] for m in pod["containers"][0]["volumeMounts"]]
        assert "items" not in mounts and "tmp" in mounts, job


def test_both_jobs_name_the_digests_run_the_same_as_the_items_from_a_configmap(
    tmp_path: Path,
) -> None:
    """Moving the committed list from seed/items.txt to a URL keeps its run: nothing is redone."""
    committed = [item.encode() for item in seed_items()]
    root = overlay(tmp_path / "repo", ITEMS_URL=URL, ITEMS_SHA256=items_digest(committed))
    seeded, worked = runs(render_tree(root, OVERLAY), tmp_path / "volumes")
    assert seeded == worked == run_id(committed)


@pytest.mark.parametrize(
    ("what", "settings", "new_run"),
    [
        ("a new digest", {"ITEMS_URL": URL, "ITEMS_SHA256": "0" * 64}, True),
        ("a bumped run label", {"ITEMS_URL": URL, "ITEMS_SHA256": DIGEST, "RUN_LABEL": "2"}, True),
        ("another URL, same items", {"ITEMS_URL": URL + "?v=2", "ITEMS_SHA256": DIGEST}, False),
    ],
)
def test_a_change_replaces_both_jobs_and_only_the_digest_or_label_make_a_new_run(
    tmp_path: Path, what: str, settings: dict[str, str], new_run: bool
) -> None:
    root = tmp_path / "repo"
    before = render_tree(overlay(root, ITEMS_URL=URL, ITEMS_SHA256=DIGEST), OVERLAY)
    again = render_tree(overlay(root, ITEMS_URL=URL, ITEMS_SHA256=DIGEST), OVERLAY)
    after = render_tree(overlay(root, **settings), OVERLAY)
    old, new = runs(before, tmp_path / "old"), runs(after, tmp_path / "new")
    assert old[0] == old[1] and new[0] == new[1], f"{what}: seed and workers disagree"
    assert (old[0] != new[0]) == new_run, f"{what}: new run is not {new_run}"
    for job in JOBS:
        spec = find(before, "Job", job)["spec"]
        assert find(again, "Job", job)["spec"] == spec, f"the same tree changed {job}"
        assert find(after, "Job", job)["spec"] != spec, f"{what} left {job} unchanged"


def test_without_the_digest_neither_job_runs(tmp_path: Path) -> None:
    """A forgotten ITEMS_SHA256 stops both Jobs with one line (exit 3: the Job fails at once),
    never a worker that takes any seal for its own. Both refuse before reaching Redis."""
    objects = render_tree(overlay(tmp_path / "repo", ITEMS_URL=URL), OVERLAY)
    seed, worker = specs(objects, tmp_path / "volumes").values()
    for spec, said in (
        (seed, "a URL needs its items' digest in ITEMS_SHA256"),
        (worker, "ITEMS_SHA256='$(ITEMS_SHA256)': expected a SHA-256 digest"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "rediswq", *(spec.args or ())],
            env={**spec.env, "REDIS_WAIT_TIMEOUT": "0"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == EXIT_CONFIG, f"{spec.name}: {done.stderr}"
        assert said in done.stderr, done.stderr


def test_with_keda_listed_first_the_scaledjobs_workers_are_named_by_the_digest(
    tmp_path: Path,
) -> None:
    """components/keda copies the worker Job's template into its ScaledJob: listed after this
    component, it copies the changed one."""
    objects = render_tree(added_to(tmp_path / "repo", "keda", "keda", **SETTINGS), "keda")
    assert not [o for o in objects if o["metadata"]["name"].startswith("job-wq-2-items")]
    scaled = find(objects, "ScaledJob", "job-wq-2")
    pod = scaled["spec"]["jobTargetRef"]["template"]["spec"]
    [container] = pod["containers"]
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert "RUN_ITEMS" not in env and env["ITEMS_SHA256"] == "$(ITEMS_SHA256)", env
    assert "items" not in [volume["name"] for volume in pod["volumes"]]
    problem = crd_problem(scaled, tmp_path)
    assert not problem, problem


def test_listed_after_keda_the_overlay_does_not_render(tmp_path: Path) -> None:
    """The worker Job is gone by then: kustomize refuses, rather than workers that mount a
    ConfigMap that is not there."""
    root = added_to(tmp_path / "repo", "keda", None, **SETTINGS)
    with pytest.raises(subprocess.CalledProcessError) as refused:
        render_tree(root, "keda")
    assert "job-wq-2" in refused.value.stderr, refused.value.stderr
