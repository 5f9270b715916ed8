"""Fixtures of the e2e tests: the container system, built once per run, and its containers; the
cluster of the kind tests, made once per run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from cluster import (
    WORKER_JOB,
    Cluster,
    create,
    current,
    no_cluster,
    target,
    unavailable_reason,
    worker_image,
)
from containers import Containers, containers
from dockersystem import System, build_system
from rendering import find, render

KIND_CLUSTER = os.environ.get("E2E_KIND_CLUSTER", "job-wq-2-e2e")


@pytest.fixture(scope="session")
def system(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> System:
    """The dev overlay's pods as container specs, and the worker image they run."""
    return build_system(request, tmp_path_factory.mktemp("volumes"))


@pytest.fixture
def running(system: System) -> Iterator[Containers]:
    with containers("job-wq-2-e2e") as made:
        yield made


@pytest.fixture(scope="session")
def namespace() -> str:
    """The dev overlay's namespace, which the cluster tests own: they delete and recreate it."""
    return str(find(render("dev"), "Job", WORKER_JOB)["metadata"]["namespace"])


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The cluster, with the dev overlay's image on its node when it is a kind cluster made here.
    (test_flux.py has its own, with Flux.)"""
    if target() == "current":
        yield current()
        return
    reason = unavailable_reason()
    if reason:
        no_cluster(reason)
    made = create(KIND_CLUSTER, worker_image(render("dev")))
    try:
        yield made
    finally:
        if made.delete is not None and not request.config.getoption("keep_cluster"):
            made.delete()
