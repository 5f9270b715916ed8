"""The Jobs and Redis as a real cluster treats them: the run named in both Jobs' specs, what a
failed pod costs and says, and Redis's memory headroom. Renders copies of the manifests with one
thing changed, so no cluster is needed.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from podspec import quantity
from rediswq.errors import EXIT_CONFIG, EXIT_USAGE
from rediswq.runs import run_id
from rediswq.seeding import read_items
from rendering import (
    IN_CLUSTER,
    OVERLAYS,
    REPO,
    Manifest,
    find,
    job_spec,
    manifests_copy,
    redis_template,
    render,
    render_tree,
    seed_items,
)

JOBS = ("job-wq-2-seed", "job-wq-2")
SETTINGS = REPO / "base" / "settings.env"

overlays = pytest.mark.parametrize("overlay", OVERLAYS)


def template(objects: list[Manifest], job: str) -> Manifest:
    return job_spec(objects, job)["template"]["spec"]  # type: ignore[no-any-return]


def settings(objects: list[Manifest], job: str) -> dict[str, str]:
    """The settings ConfigMap's data, as the Job's container reads it."""
    [container] = template(objects, job)["containers"]
    [source] = container["envFrom"]
    return find(objects, "ConfigMap", source["configMapRef"]["name"])["data"]  # type: ignore[no-any-return]


def items_configmap(objects: list[Manifest], job: str) -> str:
    """The name of the ConfigMap mounted at the directory the Job's items file is read from."""
    pod = template(objects, job)
    [container] = pod["containers"]
    path = container["args"][-1] if job == "job-wq-2-seed" else env(container)["RUN_ITEMS"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = mounts[str(Path(path).parent)]
    [source] = [v["configMap"] for v in pod["volumes"] if v["name"] == volume]
    name = source["name"]
    data = find(objects, "ConfigMap", name)["data"]
    assert Path(path).name in data, f"{job}: {path} is not in ConfigMap {name}"
    return str(name)


def env(container: Manifest) -> dict[str, str]:
    return {var["name"]: var["value"] for var in container.get("env", []) if "value" in var}


def run_of(objects: list[Manifest]) -> str:
    """The run id the seed and the workers compute from what the rendered objects give them (the
    mounted items file, RUN_LABEL), as rediswq computes it; the same for both Jobs."""
    runs = set()
    for job in JOBS:
        items = find(objects, "ConfigMap", items_configmap(objects, job))["data"]["items.txt"]
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "items.txt"
            path.write_text(items, encoding="utf-8")
            runs.add(run_id(read_items(str(path)), settings(objects, job)["RUN_LABEL"]))
    assert len(runs) == 1, f"the seed and the workers name different runs: {runs}"
    return runs.pop()


def job_specs(objects: list[Manifest]) -> dict[str, Manifest]:
    return {job: job_spec(objects, job) for job in JOBS}


@overlays
def test_both_jobs_read_the_items_from_the_same_generated_configmap(overlay: str) -> None:
    objects = render(overlay)
    names = {job: items_configmap(objects, job) for job in JOBS}
    assert len(set(names.values())) == 1, names
    # The generated name carries the hash of the items, so new items are a new name in both specs.
    assert re.fullmatch(r"job-wq-2-items-[a-z0-9]{10}", names["job-wq-2"]), names


def test_the_run_label_is_an_explicit_setting_empty_by_default() -> None:
    lines = SETTINGS.read_text(encoding="utf-8").splitlines()
    assert "RUN_LABEL=" in lines, "base/settings.env must set RUN_LABEL explicitly"
    committed = [line.encode() for line in seed_items()]
    assert run_of(render("dev")) == run_id(committed), "not the committed items' run, unlabelled"


def changed(tmp_path: Path, path: str, old: str, new: str) -> list[Manifest]:
    """The dev overlay rendered from a copy of the manifests in which `path` has `old` replaced."""
    root = manifests_copy(tmp_path / "repo")
    target = root / path
    text = target.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    target.write_text(text.replace(old, new, 1), encoding="utf-8")
    return render_tree(root, "dev")


@pytest.mark.parametrize(
    ("what", "edit", "new_run"),
    [
        ("new items", ("seed/items.txt", "apple\n", "apple\napricot\n"), True),
        ("a bumped run label", ("base/settings.env", "RUN_LABEL=\n", "RUN_LABEL=2\n"), True),
        ("another setting", ("base/settings.env", "WORK_SECONDS=10\n", "WORK_SECONDS=3\n"), False),
        ("the image", ("overlays/dev/kustomization.yaml", "newTag: dev\n", "newTag: x\n"), False),
    ],
)
def test_every_change_replaces_both_jobs_and_only_items_or_label_make_a_new_run(
    tmp_path: Path, what: str, edit: tuple[str, str, str], new_run: bool
) -> None:
    """Both specs change, so both Jobs are replaced. Only new items or a new label are a new run;
    after any other change the new seed finds its run sealed and changes nothing, and the new
    workers finish that run or find it drained."""
    before = render("dev")
    after = changed(tmp_path, *edit)
    assert (run_of(after) != run_of(before)) == new_run, f"{what}: new run is not {new_run}"
    old_specs, new_specs = job_specs(before), job_specs(after)
    unchanged = [job for job in JOBS if old_specs[job] == new_specs[job]]
    assert not unchanged, f"{what} left the spec of {unchanged} unchanged"


@overlays
def test_a_failed_pod_stays_says_why_and_config_errors_fail_the_job(overlay: str) -> None:
    objects = render(overlay)
    for job in JOBS:
        spec = job_spec(objects, job)
        pod = spec["template"]["spec"]
        [container] = pod["containers"]
        assert pod["restartPolicy"] == "Never", f"{job}: a restarted container loses its log"
        assert spec["podReplacementPolicy"] == "Failed", job
        assert container.get("terminationMessagePolicy") == "FallbackToLogsOnError", job
        rules = spec["podFailurePolicy"]["rules"]
        # The seed may wait for its retry; a worker's slot is given up for a fresh one at once.
        spared = "FailIndex" if job == "job-wq-2" else "Ignore"
        disrupted = [r for r in rules if r["action"] == spared]
        assert [c["type"] for r in disrupted for c in r["onPodConditions"]] == ["DisruptionTarget"]
        [fail] = [r for r in rules if r["action"] == "FailJob"]
        codes = fail["onExitCodes"]
        assert codes["containerName"] == container["name"], job
        assert codes["operator"] == "In"
        assert set(codes["values"]) == {EXIT_USAGE, EXIT_CONFIG}, job


@overlays
def test_the_workers_failure_budget_outlasts_a_poison_items_attempts(overlay: str) -> None:
    """A worker killed by its item (OOM) costs a pod per attempt until the item is dead-lettered.
    A slot is retried once (10 s later) and then given up for a fresh one, so no attempt waits
    for a doubled delay, and the slots given up stay well within the budget of the run."""
    objects = render(overlay)
    attempts = int(settings(objects, "job-wq-2")["MAX_ATTEMPTS"])
    spec = job_spec(objects, "job-wq-2")
    assert spec["backoffLimitPerIndex"] == 1, "one retry of a slot: 10 s, never doubled"
    given_up = 2 * (attempts // (spec["backoffLimitPerIndex"] + 1))  # two poison items
    assert spec["maxFailedIndexes"] >= given_up + 50, "room for two poison items and evictions"
    # No Job-wide backoffLimit: it would count evictions (FailIndex counts as a failure).
    assert "backoffLimit" not in spec


_REDIS_UNITS = {"": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}


def redis_bytes(text: str) -> int:
    """A Redis memory setting ("200mb") in bytes, as redis.conf reads it."""
    found = re.fullmatch(r"(\d+)([a-z]*)", text.lower())
    assert found and found.group(2) in _REDIS_UNITS, f"unreadable Redis size {text!r}"
    return int(found.group(1)) * _REDIS_UNITS[found.group(2)]


@pytest.mark.parametrize("overlay", IN_CLUSTER)
def test_redis_has_headroom_for_the_rewrite_fork(overlay: str) -> None:
    objects = render(overlay)
    pod = redis_template(objects)["spec"]
    [container] = pod["containers"]
    args = container["args"]
    maxmemory = redis_bytes(args[args.index("--maxmemory") + 1])
    limit = quantity(container["resources"]["limits"]["memory"])
    # The fork may copy the whole data set; 64 MiB for Redis itself, buffers and the AOF buffer.
    assert limit >= 2 * maxmemory + 64 * 2**20, f"limit {limit:.0f} B for maxmemory {maxmemory} B"
    [data] = find(objects, "StatefulSet", "redis")["spec"]["volumeClaimTemplates"]
    size = quantity(data["spec"]["resources"]["requests"]["storage"])
    assert size >= 2 * maxmemory, "no room for the AOF rewrite"
