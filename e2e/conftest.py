"""Fixtures of the e2e tests: the container system, built once per run, and its containers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from containers import Containers, containers
from dockersystem import System, build_system


@pytest.fixture(scope="session")
def system(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> System:
    """The dev overlay's pods as container specs, and the worker image they run."""
    return build_system(request, tmp_path_factory.mktemp("volumes"))


@pytest.fixture
def running(system: System) -> Iterator[Containers]:
    with containers("job-wq-2-e2e") as made:
        yield made
