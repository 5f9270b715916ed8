"""examples/thumbnails: its overlay renders the example's pods, and as containers its image (built
FROM the worker image) drains its items and keeps a result per picture.

The container test builds both images as users would (worker/Dockerfile, then
examples/thumbnails/Dockerfile with WORKER_IMAGE set to it) and runs the example overlay's pods as
test_docker.py runs the dev overlay's. The cluster test (`make e2e`, on test_kind.py's cluster)
applies the overlay with the example's image: built on the worker image and `kind load`ed on a kind
cluster made here, or E2E_EXAMPLE_IMAGE's on E2E_CLUSTER=current (it skips without one).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest
from cluster import (
    EXAMPLE_IMAGE,
    REDIS_IMAGE,
    WORKER_JOB,
    Cluster,
    apply,
    build,
    cluster_json,
    diagnosed,
    finished_run,
    job_pods,
    pod_name,
    reset,
    with_images,
    worker_image,
)
from containers import FORCE, Containers, Unavailable, containers, docker, require_engine
from images import build_image, dockerfile_arg, find_builder, image_present, local_bases
from podspec import Spec, pod_spec, stateful_pod_spec
from rendering import REPO, Manifest, find, redis_template, render, render_dir

EXAMPLE = REPO / "examples" / "thumbnails"
# The image name the overlay gives the example's pods, tagged dev.
EXAMPLE_NAME = "job-wq-2-thumbnails"
WORKER_TAG = "localhost/job-wq-2-e2e/worker:example"
EXAMPLE_TAG = "localhost/job-wq-2-e2e/thumbnails:test"
TIMEOUT = 300


def rendered() -> list[Manifest]:
    return render_dir(EXAMPLE)


def samples() -> dict[str, tuple[int, int]]:
    """Each sample picture that is one, by name, with its size from its PPM header."""
    sizes = {}
    for path in sorted((EXAMPLE / "samples").iterdir()):
        header = re.match(r"P3\n(?:#.*\n)*(\d+) (\d+)\n", path.read_text(encoding="utf-8"))
        if header:
            sizes[path.name] = (int(header.group(1)), int(header.group(2)))
    return sizes


def template(objects: list[Manifest], job: str) -> Manifest:
    return find(objects, "Job", job)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_the_overlay_runs_the_handler_on_the_samples_in_the_dev_pods() -> None:
    objects = rendered()
    pod = template(objects, "job-wq-2")
    [container] = pod["containers"]
    assert container["image"] == f"{EXAMPLE_NAME}:dev"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/data/in"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    pictures = find(objects, "ConfigMap", volume["configMap"]["name"])["data"]
    items = (EXAMPLE / "items.txt").read_text(encoding="utf-8")
    assert sorted(pictures) == sorted(items.split())
    [settings] = [ref["configMapRef"]["name"] for ref in container["envFrom"]]
    values = find(objects, "ConfigMap", settings)["data"]
    assert values["HANDLER"] == "thumbnails.handler:make_thumbnail"
    assert values["RESULTS"] == "true"
    seed = template(objects, "job-wq-2-seed")["volumes"]
    [queued] = [
        v["configMap"]["name"]
        for v in seed
        if v.get("configMap", {}).get("name", "").startswith("job-wq-2-items")
    ]
    assert find(objects, "ConfigMap", queued)["data"]["items.txt"] == items


def unavailable(reason: str) -> NoReturn:
    if os.environ.get(FORCE) == "1":
        pytest.fail(f"container e2e cannot run: {reason}")
    pytest.skip(f"{reason} (set {FORCE}=1 to fail instead of skipping)")


def built(scratch: Path) -> tuple[str, list[Manifest], dict[str, str]]:
    """Both images built; the rendered objects; the local stand-ins for unpullable bases."""
    objects = rendered()
    redis_image = redis_template(objects)["spec"]["containers"][0]["image"]
    python = dockerfile_arg("PYTHON_IMAGE")
    try:
        require_engine()
        builder = find_builder()
        wanted = {"python": (builder.engine, python), "redis": ("docker", redis_image)}
        missing = [name for name, (engine, ref) in wanted.items() if not image_present(engine, ref)]
        local = local_bases(missing, podman=builder.via_podman)
    except Unavailable as exc:
        unavailable(str(exc))
    base = {"PYTHON_IMAGE": local["python"]} if "python" in local else {}
    build_image(builder, WORKER_TAG, base)
    build_image(builder, EXAMPLE_TAG, {**base, "WORKER_IMAGE": WORKER_TAG}, context=EXAMPLE)
    return EXAMPLE_TAG, objects, local


def queue_json(made: Containers, worker: Spec, *args: str) -> Any:
    name = made.start(worker.with_args(*args, "--json"), args[0])
    assert made.wait(name, TIMEOUT) == 0, made.logs(name)
    return json.loads(made.stdout(name))


@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_the_example_image_drains_its_items_and_keeps_a_result_per_picture(
    tmp_path: Path,
) -> None:
    image, objects, local = built(tmp_path)
    user = docker("image", "inspect", "--format", "{{.Config.User}}", image)
    assert user == docker("image", "inspect", "--format", "{{.Config.User}}", WORKER_TAG)
    # What the final image must not have: an installer or a compiler.
    show = "import shutil; print([c for c in ('pip', 'pip3', 'gcc', 'cc') if shutil.which(c)])"
    assert docker("run", "--rm", "--entrypoint", "python3", image, "-c", show) == "[]"

    redis = stateful_pod_spec(find(objects, "StatefulSet", "redis"), objects, tmp_path)
    redis = redis.with_image(local.get("redis", redis.image))
    seed = pod_spec(template(objects, "job-wq-2-seed"), objects, tmp_path).with_image(image)
    worker = pod_spec(template(objects, "job-wq-2"), objects, tmp_path).with_image(image)
    parallelism = int(find(objects, "Job", "job-wq-2")["spec"]["parallelism"])
    with containers("thumbnails-e2e") as made:
        workers = [made.start(worker, f"worker-{n}") for n in range(parallelism)]
        made.wait_ready(made.start(redis, "redis", aliases=["redis"]), redis, 60)
        seeding = made.start(seed, "seed")
        assert made.wait(seeding, TIMEOUT) == 0, made.logs(seeding)
        started = time.monotonic()
        codes = {name: made.wait(name, TIMEOUT) for name in workers}
        assert set(codes.values()) == {0}, codes
        assert time.monotonic() - started < TIMEOUT

        results = queue_json(made, worker, "results")
        letters = queue_json(made, worker, "failed")
    assert_thumbnails(results, letters)


def assert_thumbnails(exported: list[dict[str, Any]], letters: list[dict[str, Any]]) -> None:
    """`rediswq results --json` holds one thumbnail per sample picture, and `rediswq failed
    --json` the one sample that is not a picture."""
    results = {entry["item"]: entry["result"] for entry in exported}
    pictures = samples()
    assert sorted(results) == sorted(pictures)
    for item, (width, height) in pictures.items():
        result = results[item]
        assert (result["format"], result["size"]) == ("PPM", [width, height])
        thumb_width, thumb_height = result["thumbnail"]
        assert max(thumb_width, thumb_height) == min(64, max(width, height))
        assert abs(thumb_width / thumb_height - width / height) < 0.1
        assert re.fullmatch(r"[0-9a-f]{64}", result["sha256"])
    [letter] = letters
    assert letter["item"] == "notes.ppm" and letter["attempts"] == 1
    assert letter["error"].startswith("Reject: notes.ppm is not a picture")
    assert "(pid " in letter["worker"]


def example_overlay(workdir: Path) -> Path:
    """The example overlay to apply, with the images of E2E_EXAMPLE_IMAGE and E2E_REDIS_IMAGE
    when set."""
    return with_images(EXAMPLE, workdir, {EXAMPLE_NAME: EXAMPLE_IMAGE})


def test_image_variables_replace_the_images_of_the_example_overlay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example, redis = "mirror.example:5000/thumbnails:0.3", "mirror.example:5000/redis:7"
    monkeypatch.setenv(EXAMPLE_IMAGE, example)
    monkeypatch.setenv(REDIS_IMAGE, redis)
    objects = render_dir(example_overlay(tmp_path))
    assert worker_image(objects) == example
    assert template(objects, "job-wq-2-seed")["containers"][0]["image"] == example
    assert redis_template(objects)["spec"]["containers"][0]["image"] == redis


def loaded(cluster: Cluster, workdir: Path) -> Path:
    """The example overlay to apply on `cluster`, its image built on the worker image and loaded
    when `cluster` is a kind cluster made here; else it needs E2E_EXAMPLE_IMAGE (skips without)."""
    if cluster.load is not None:
        image = worker_image(rendered())
        build(image, EXAMPLE, {"WORKER_IMAGE": worker_image(render("dev"))})
        cluster.load(image)
    elif not os.environ.get(EXAMPLE_IMAGE):
        pytest.skip(
            f"{EXAMPLE_IMAGE} is not set: on a cluster not made here, the example needs its "
            "image from a registry the cluster pulls from (built from examples/thumbnails)"
        )
    return example_overlay(workdir)


@pytest.mark.kind
@pytest.mark.timeout(2400)
def test_on_a_cluster_the_example_drains_its_items_and_keeps_a_result_per_picture(
    cluster: Cluster, tmp_path: Path
) -> None:
    directory = loaded(cluster, tmp_path)
    worker = find(render_dir(directory), "Job", WORKER_JOB)
    namespace = worker["metadata"]["namespace"]
    reset(cluster, namespace)
    with diagnosed(cluster, namespace):
        apply(cluster, directory)
        finished_run(cluster, namespace)  # both Jobs complete, every worker pod exited 0
        results = cluster_json(cluster, worker, tmp_path, "results")
        letters = cluster_json(cluster, worker, tmp_path, "failed")
        assert_thumbnails(results, letters)
        # In a pod, the worker a dead letter names is the pod (POD_NAME).
        pods = {pod_name(pod) for pod in job_pods(cluster, WORKER_JOB, namespace)}
        assert letters[0]["worker"].split(" (pid ")[0] in pods, letters[0]["worker"]
