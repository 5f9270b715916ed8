"""The alert rules of a run: components/metrics/alerts.rules.yaml, their one source, and the
PrometheusRule text written from it for the Prometheus Operator (`make alert-rules` runs this
module to rewrite components/metrics/prometheusrule.yaml).

Written by hand, not by kustomize: a generator can put the file into a ConfigMap, but no
transformer turns a file into the structured `spec.groups` of another kind.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

import pytest
import yaml
from rendering import REPO

METRICS = REPO / "components" / "metrics"
RULES = METRICS / "alerts.rules.yaml"
PROMETHEUS_RULE = METRICS / "prometheusrule.yaml"

_HEADER = """\
# The alerts of a run for a Prometheus run by the Operator: the groups of alerts.rules.yaml, the one
# source of these rules. Written by `make alert-rules` from that file: edit it, not this one (a test
# fails while the two differ). What each alert means and what to do: docs/alerts.md.
# The Operator loads a PrometheusRule only if its Prometheus selects it (spec.ruleSelector;
# kube-prometheus-stack: the label `release: <its release>`): add that label in the overlay.
"""


def _block_strings(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Multi-line strings (the PromQL) as literal blocks, as they are written in the source."""
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, _block_strings)


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return groups


def prometheus_rule_text() -> str:
    """What prometheusrule.yaml must hold: the rules file's groups in a PrometheusRule."""
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "job-wq-2",
            "labels": {"app.kubernetes.io/name": "job-wq-2"},
        },
        "spec": {"groups": rule_groups()},
    }
    body = yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return _HEADER + body


def prometheus_tool(name: str) -> str:
    """The path of Prometheus' `name` (prometheus, promtool: Debian's `prometheus` package), or a
    skip saying how to install it (a failure in CI: testing/skippolicy.py)."""
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"no {name} on PATH (Debian/Ubuntu: apt-get install prometheus)")
    return found


if __name__ == "__main__":
    PROMETHEUS_RULE.write_text(prometheus_rule_text(), encoding="utf-8")
    print(f"wrote {PROMETHEUS_RULE.relative_to(REPO)}", file=sys.stderr)
