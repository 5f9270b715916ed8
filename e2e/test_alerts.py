"""The alert rules (components/metrics/alerts.rules.yaml) under `promtool check rules` and
`promtool test rules`: the series of a healthy run, a stalled one, a poison item, an outage, a
slow run, expiring leases, evicted pods and a failed Job, each checked at chosen times for every
alert, so that each alert fires in its own case and in no other. The PrometheusRule is the same
rules.

The series are written here as Prometheus' exporter and kube-state-metrics name them; which
series really exist is proved against a real Prometheus by worker/tests/test_prometheus.py.
"""

from __future__ import annotations

import copy
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from alertrules import PROMETHEUS_RULE, RULES, prometheus_rule_text, prometheus_tool, rule_groups

QUEUE = {"namespace": "job-wq-2", "queue": "job2"}
JOB = {"namespace": "job-wq-2", "job_name": "job-wq-2"}

# A healthy run of 100 items at 2 a minute: done in 50 minutes, inside the Job's hour
# (activeDeadlineSeconds 3600, started at 0), which then completes.
HEALTHY_QUEUE = {
    "sealed": "1x60",
    "up": "1x60",
    "pending": "100-2x50 0x10",
    "leased": "2x50 0x10",
    "delayed": "0x60",
    "done": "0+2x50 100x10",
    "failed": "0x60",
    "reclaimed": "0x60",
}
HEALTHY_JOB = {
    "kube_job_spec_active_deadline_seconds": "3600x60",
    "kube_job_status_start_time": "0x60",
    "kube_job_status_active": "1x50 0x10",
    "kube_job_status_failed": "0x60",
}


@dataclass(frozen=True)
class Case:
    """A run's series (the healthy run's, with `queue` and `job` replacing some) and, at each
    time checked, the alerts that must be firing (with their value and annotations); every other
    alert must not be."""

    name: str
    checks: dict[str, dict[str, dict[str, Any]]]
    queue: dict[str, str] = field(default_factory=dict)
    job: dict[str, str] = field(default_factory=dict)


def _selector(name: str, labels: dict[str, str]) -> str:
    metric, _, extra = name.partition("{")
    inside = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return f"{metric}{{{inside}{', ' + extra[:-1] if extra else ''}}}"


def _series(case: Case) -> list[dict[str, str]]:
    queue = {**HEALTHY_QUEUE, **case.queue}
    job = {**HEALTHY_JOB, **case.job}
    return [
        *(
            {"series": _selector(f"rediswq_queue_{k}", QUEUE), "values": v}
            for k, v in queue.items()
        ),
        *({"series": _selector(k, JOB), "values": v} for k, v in job.items()),
    ]


def _alert_tests(case: Case, alerts: list[str]) -> list[dict[str, Any]]:
    tests = []
    for at, firing in case.checks.items():
        for alert in alerts:
            expected = firing.get(alert)
            tests.append({
                "eval_time": at,
                "alertname": alert,
                "exp_alerts": [] if expected is None else [copy.deepcopy(expected)],
            })  # fmt: skip
    return tests


def _annotated(alert: str, labels: dict[str, str], summary: str, description: str) -> Any:
    return {
        "exp_labels": labels,
        "exp_annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": "https://github.com/owner/job-wq-2/blob/main/docs/alerts.md#"
            + alert.lower(),
        },
    }


STUCK = _annotated(
    "RediswqRunStuck", {**QUEUE, "severity": "critical"}, "Run of queue job2 makes no progress",
    "82 items are left in queue job2, but none was done in the last 15 minutes.",
)  # fmt: skip
DEAD = _annotated(
    "RediswqDeadLetters", {**QUEUE, "severity": "warning"}, "Queue job2 has dead letters",
    "1 items of queue job2 failed every attempt and were moved to the dead letters.",
)  # fmt: skip
RECLAIMED = _annotated(
    "RediswqItemsReclaimed", {**QUEUE, "severity": "warning"},
    "Leases of queue job2 are expiring",
    "About 1 leases of queue job2 expired in the last 15 minutes; their items were put back and "
    "run again.",
)  # fmt: skip
DOWN = _annotated(
    "RediswqQueueDown", {**QUEUE, "severity": "critical"}, "Redis of queue job2 does not answer",
    "The exporter of queue job2 has not reached Redis for 2 minutes.",
)  # fmt: skip
LATE = _annotated(
    "RediswqRunMissesDeadline", {**QUEUE, "severity": "warning"},
    "Run of queue job2 will not finish before its Job's deadline",
    "At the current rate the items left in queue job2 need 2h 52m 0s, longer than the worker Job "
    "has left before its activeDeadlineSeconds.",
)  # fmt: skip
FAILED_JOB = _annotated(
    "RediswqJobFailed", {**JOB, "severity": "warning"}, "Job job-wq-2 failed",
    "Job job-wq-2/job-wq-2 failed: it starts no pod until it is replaced.",
)  # fmt: skip

CASES = (
    # Midway, and after the run, nothing: not even the deadline, which the rate meets.
    Case("a healthy run", {"30m": {}, "60m": {}}),
    # The workers hang from minute 10 holding 2 leases: pending at 20 (for: not yet), firing at 30.
    Case(
        "a stalled run",
        {"20m": {}, "30m": {"RediswqRunStuck": STUCK}},
        queue={"pending": "100-2x10 80x50", "leased": "2x60", "done": "0+2x10 20x50"},
    ),
    Case(
        "a poison item",
        {"15m": {}, "25m": {"RediswqDeadLetters": DEAD}},
        queue={"failed": "0x20 1x40"},
    ),
    # Redis stops answering at minute 11: the exporter then serves only rediswq_queue_up 0.
    Case(
        "an outage",
        {"12m": {}, "14m": {"RediswqQueueDown": DOWN}},
        queue={
            "up": "1x10 0x10",
            "sealed": "1x10 _x10",
            "pending": "100-2x10 _x10",
            "leased": "2x10 _x10",
            "done": "0+2x10 _x10",
            **dict.fromkeys(("delayed", "failed", "reclaimed"), "0x10 _x10"),
        },
    ),
    # 200 items at 1 a minute: 172 left at minute 30 need 2h 52m; the Job has 30 minutes left.
    Case(
        "a slow run",
        {"5m": {}, "30m": {"RediswqRunMissesDeadline": LATE}},
        queue={"pending": "200-1x60", "leased": "2x60", "done": "0+1x60"},
    ),
    # A lease expired at minute 20: an alert for the 15 minutes after, then none.
    Case(
        "an expired lease",
        {"15m": {}, "25m": {"RediswqItemsReclaimed": RECLAIMED}, "40m": {}},
        queue={"reclaimed": "0x20 1x40"},
    ),
    # A drain evicts a worker at minute 11 and two at minute 16 (each fails its pod and gives up
    # its slot): kube_job_status_failed counts them while the Job runs on and completes. Not an
    # alert; neither is a crashed worker's pod, which kube-state-metrics counts the same way.
    Case(
        "evicted worker pods",
        {"15m": {}, "30m": {}, "60m": {}},
        job={"kube_job_status_failed": "0x10 1x5 3x45"},
    ),
    # The Job failed at minute 40 (maxFailedIndexes, the deadline): kube-state-metrics gives its
    # Failed condition from then on, and the alert stays for as long as the failed Job is there.
    Case(
        "a failed job",
        {
            "35m": {},
            "45m": {"RediswqJobFailed": FAILED_JOB},
            "60m": {"RediswqJobFailed": FAILED_JOB},
        },
        job={
            "kube_job_status_active": "1x40 0x20",
            "kube_job_status_failed": "0x10 1x5 3x45",
            'kube_job_failed{condition="true"}': "_x40 1x20",
            'kube_job_failed{condition="false"}': "_x40 0x20",
            'kube_job_failed{condition="unknown"}': "_x40 0x20",
        },
    ),
)


def _alerts() -> list[str]:
    return [rule["alert"] for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def _promtool_test(cases: tuple[Case, ...], scratch: Path) -> subprocess.CompletedProcess[str]:
    alerts = _alerts()
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {"name": case.name, "interval": "1m", "input_series": _series(case),
             "alert_rule_test": _alert_tests(case, alerts)}
            for case in cases
        ],
    }  # fmt: skip
    path = scratch / "alerts.test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    return subprocess.run(
        [prometheus_tool("promtool"), "test", "rules", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_promtool_accepts_the_rules_file() -> None:
    done = subprocess.run(
        [prometheus_tool("promtool"), "check", "rules", str(RULES)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in done.stdout


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_must_not() -> None:
    alerts = set(_alerts())
    fired = {alert for case in CASES for firing in case.checks.values() for alert in firing}
    assert fired == alerts
    # Each case is checked for every alert (_alert_tests), so each one also must not fire in
    # the other cases; the healthy run is the case where none may.
    assert all(not firing for firing in CASES[0].checks.values())


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_alert_fires_in_its_own_case_and_in_no_other(case: Case, tmp_path: Path) -> None:
    done = _promtool_test((case,), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_fails_a_case_whose_expected_alerts_are_wrong(tmp_path: Path) -> None:
    """So the cases above could fail: the healthy run's series, expected to stall."""
    wrong = Case("a healthy run said to stall", {"30m": {"RediswqRunStuck": STUCK}})
    done = _promtool_test((wrong,), tmp_path)
    assert done.returncode != 0
    assert "RediswqRunStuck" in done.stdout + done.stderr


def test_the_prometheusrule_is_the_rules_file() -> None:
    written = PROMETHEUS_RULE.read_text(encoding="utf-8")
    assert written == prometheus_rule_text(), "run `make alert-rules` and commit the result"
    assert yaml.safe_load(written)["spec"]["groups"] == rule_groups()


def test_each_alerts_runbook_url_is_a_section_of_the_docs() -> None:
    docs = (RULES.parents[2] / "docs" / "alerts.md").read_text(encoding="utf-8")
    # GitHub's anchor of a heading: lower case; these headings are single words.
    anchors = {line[4:].strip().lower() for line in docs.splitlines() if line.startswith("### ")}
    for group in rule_groups():
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            assert url.endswith(f"/docs/alerts.md#{rule['alert'].lower()}"), url
            assert rule["alert"].lower() in anchors, f"no section {rule['alert']} in docs/alerts.md"
