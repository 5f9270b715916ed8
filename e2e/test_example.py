"""examples/thumbnails: its overlay renders the example's pods, and as containers its image (built
FROM the worker image) drains its items and keeps a result per picture.

The container test builds both images as users would (worker/Dockerfile, then
examples/thumbnails/Dockerfile with WORKER_IMAGE set to it) and runs the example overlay's pods as
test_docker.py runs the dev overlay's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from containers import FORCE, Containers, Unavailable, containers, docker, require_engine
from images import build_image, dockerfile_arg, find_builder, image_present, local_bases
from podspec import Spec, pod_spec
from rendering import REPO, Manifest, find, kubectl

EXAMPLE = REPO / "examples" / "thumbnails"
WORKER_TAG = "localhost/job-wq-2-e2e/worker:example"
EXAMPLE_TAG = "localhost/job-wq-2-e2e/thumbnails:test"
TIMEOUT = 300


def rendered() -> list[Manifest]:
    text = subprocess.run(
        [kubectl(), "kustomize", str(EXAMPLE)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


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
    assert container["image"] == "job-wq-2-thumbnails:dev"
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
    redis_image = find(objects, "Pod", "redis")["spec"]["containers"][0]["image"]
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

    redis = pod_spec(find(objects, "Pod", "redis")["spec"], objects, tmp_path)
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

        results = {entry["item"]: entry["result"] for entry in queue_json(made, worker, "results")}
        letters = queue_json(made, worker, "failed")
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
