"""The cluster e2e's own logic that needs no cluster: images for a cluster that mirrors them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster import REDIS_IMAGE, WORKER_IMAGE, overlay, override
from rendering import REPO, Manifest, render_dir

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("reference", "entry"),
    [
        ("m.example:5000/t/wq:1.2", {"newName": "m.example:5000/t/wq", "newTag": "1.2"}),
        ("mirror.example:5000/job-wq-2", {"newName": "mirror.example:5000/job-wq-2"}),
        (f"r.example/redis@{DIGEST}", {"newName": "r.example/redis", "digest": DIGEST}),
        (f"r.example/redis:7.4@{DIGEST}", {"newName": "r.example/redis", "digest": DIGEST}),
    ],
)  # fmt: skip
def test_an_image_reference_becomes_a_kustomize_images_entry(
    reference: str, entry: dict[str, str]
) -> None:
    assert override("x", reference) == {"name": "x", **entry}


def images(objects: list[Manifest]) -> dict[str, str]:
    """Each pod's image, by the component it runs."""
    found = {}
    for obj in objects:
        pod = obj["spec"]["template"] if obj["kind"] == "Job" else obj
        if obj["kind"] in ("Job", "Pod"):
            [container] = pod["spec"]["containers"]
            found[pod["metadata"]["labels"]["app.kubernetes.io/component"]] = container["image"]
    return found


def test_without_image_variables_the_dev_overlay_is_used_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WORKER_IMAGE, raising=False)
    monkeypatch.delenv(REDIS_IMAGE, raising=False)
    assert overlay(REPO, tmp_path) == REPO / "overlays" / "dev"


def test_image_variables_replace_the_images_of_the_dev_overlay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WORKER_IMAGE, "mirror.example:5000/job-wq-2:0.3")
    monkeypatch.setenv(REDIS_IMAGE, f"mirror.example:5000/redis@{DIGEST}")
    directory = overlay(REPO, tmp_path)
    assert directory.name == "dev", "deploy.sh knows the dev overlay by its name"
    assert images(render_dir(directory)) == {
        "worker": "mirror.example:5000/job-wq-2:0.3",
        "seed": "mirror.example:5000/job-wq-2:0.3",
        "redis": f"mirror.example:5000/redis@{DIGEST}",
    }
