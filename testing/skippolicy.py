"""What a skip may say in CI: with CI=true, a test that skips for a reason not in ALLOWED fails.

A skip tells the reader that something was not proved. On a laptop that is fine when it says why;
in CI it must be one of the few things the CI machines genuinely cannot do. Anything else (no CRD
schemas, no redis-server, no Docker) is a broken machine, and a green run would hide it.

Loaded by both test trees (worker/tests, e2e) through `-p skippolicy` in pyproject.toml's addopts,
with this directory on `pythonpath`. A plugin module rather than a hook in each conftest.py: the
two conftests are both imported under the name `conftest`, so they cannot share one function by
importing it, and a plugin also covers any test file run on its own.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

# A part of the skip's reason, and why the CI machines cannot do better. Keep it short: each entry
# is a check that CI never makes.
ALLOWED = {
    "root reads any file": (
        "The CI machine (.ci/run) runs as root, and root reads a file whatever its mode; GitHub "
        "Actions runs the same test as a normal user."
    ),
    "the kind node image is not here and cannot be pulled": (
        "The CI machine reaches no image registry. GitHub Actions' kind jobs pull it and set "
        "E2E_KIND=1, where this is a failure instead."
    ),
    "CRD_SCHEMAS_MISSING says this machine's copy lacks it": (
        "The CI machine reads the CRD schemas from a fixed copy of the catalog, which lacks what "
        ".ci/run lists in CRD_SCHEMAS_MISSING (the Prometheus Operator's PrometheusRule); GitHub "
        "Actions reads the catalog itself, and promtool checks the rules inside."
    ),
    "GitHub is not reachable from here": (
        "The CI machine reaches only PyPI, Debian and npm, so the kustomize pins are not compared "
        "with the release's checksums.txt there; GitHub Actions compares them, and fails if it "
        "cannot fetch the file."
    ),
    "the flux CLI is not on PATH": (
        "No package index the CI machine reaches ships the flux CLI. GitHub Actions' Flux job "
        "installs it and sets E2E_FLUX=1, where this is a failure instead."
    ),
}

CI = "CI"


def allowed(reason: str) -> bool:
    return any(part in reason for part in ALLOWED)


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The text given to pytest.skip(), as pytest keeps it in a skip's report."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):
        return longrepr[2].removeprefix("Skipped: ")
    return str(longrepr)


def _enforce(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skip that is not allowed into a failure, which says what to do about it."""
    if os.environ.get(CI) != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    if not allowed(reason):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped in CI ({CI}=true), and the reason is not one CI accepts "
            f"(testing/skippolicy.py): {reason}"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport() -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _enforce(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report() -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _enforce(report)
    return report
