"""The build backend of the repository's root: builds the package in worker/, so that
`pip install .` (or `pip install git+https://...` without `#subdirectory=worker`) installs the
same thing as `pip install ./worker`.

setuptools builds only the directory it is started in, and worker/pyproject.toml stays the one
place the package is declared; so each hook runs setuptools' own from worker/.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from setuptools import build_meta

T = TypeVar("T")
_WORKER = Path(__file__).resolve().parent


@contextmanager
def _in_worker() -> Iterator[None]:
    before = Path.cwd()
    os.chdir(_WORKER)
    try:
        yield
    finally:
        os.chdir(before)


def _delegated(hook: Callable[..., T]) -> Callable[..., T]:
    def run(directory: str, *args: Any, **kwargs: Any) -> T:
        absolute = os.path.abspath(directory)  # given relative to the root
        with _in_worker():
            return hook(absolute, *args, **kwargs)

    return run


def _requires(hook: Callable[..., list[str]]) -> Callable[..., list[str]]:
    def run(*args: Any, **kwargs: Any) -> list[str]:
        with _in_worker():
            return hook(*args, **kwargs)

    return run


build_wheel = _delegated(build_meta.build_wheel)
build_sdist = _delegated(build_meta.build_sdist)
build_editable = _delegated(build_meta.build_editable)
prepare_metadata_for_build_wheel = _delegated(build_meta.prepare_metadata_for_build_wheel)
prepare_metadata_for_build_editable = _delegated(build_meta.prepare_metadata_for_build_editable)
get_requires_for_build_wheel = _requires(build_meta.get_requires_for_build_wheel)
get_requires_for_build_sdist = _requires(build_meta.get_requires_for_build_sdist)
get_requires_for_build_editable = _requires(build_meta.get_requires_for_build_editable)
