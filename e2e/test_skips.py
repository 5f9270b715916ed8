"""The skip policy (testing/skippolicy.py) as both test trees get it from pyproject.toml: with
CI=true a skip fails unless its reason is on the allow-list; elsewhere a skip stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rendering import REPO
from skippolicy import ALLOWED

TESTS = """
import pytest

def test_unlisted():
    pytest.skip("no CRD schemas here")

def test_listed():
    pytest.skip("the flux CLI is not on PATH (set E2E_FLUX=1 to fail instead of skipping)")

@pytest.mark.skipif(True, reason="no redis-server here")
def test_marked():
    pass

@pytest.mark.xfail(reason="known")
def test_expected_to_fail():
    raise AssertionError
"""


def pytest_run(tmp_path: Path, *, ci: str | None) -> subprocess.CompletedProcess[str]:
    """pytest on a file of skipping tests, with the repository's configuration."""
    (tmp_path / "test_skipping.py").write_text(TESTS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_in_ci_a_skip_not_on_the_list_fails_and_says_why(tmp_path: Path) -> None:
    done = pytest_run(tmp_path, ci="true")
    assert done.returncode == 1, done.stdout
    assert "FAILED test_skipping.py::test_unlisted - skipped in CI" in done.stdout
    assert "no CRD schemas here" in done.stdout
    assert "ERROR test_skipping.py::test_marked - skipped in CI" in done.stdout
    assert "1 failed, 1 skipped, 1 xfailed, 1 error" in done.stdout, done.stdout


@pytest.mark.parametrize("ci", [None, "false"], ids=["unset", "false"])
def test_outside_ci_every_skip_stays_a_skip(tmp_path: Path, ci: str | None) -> None:
    done = pytest_run(tmp_path, ci=ci)
    assert done.returncode == 0, done.stdout
    assert "3 skipped, 1 xfailed" in done.stdout, done.stdout


def test_every_allowed_reason_is_one_a_test_gives() -> None:
    sources = "".join(
        path.read_text(encoding="utf-8")
        for tree in ("worker/tests", "e2e")
        for path in (REPO / tree).glob("*.py")
        if path.name != Path(__file__).name
    )
    assert [reason for reason in ALLOWED if reason not in sources] == []
