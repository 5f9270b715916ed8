"""The dashboard and the alert rules of components/metrics against a real Prometheus (Debian's
`prometheus`), scraping every second two real workers and the exporter during a real run with a
poison item and a slow one, whose worker is killed holding it: every panel's query returns data,
and so does every alert's expression, each in the situation it is about, but one.

That one is a run stuck for 15 minutes, which cannot happen in seconds: its expression is
evaluated and every metric it reads exists, and the rules' unit tests (e2e/test_alerts.py) show
when it fires. kube-state-metrics is stood in for by its series of the one worker Job, served from
the test (its failed pods are the workers the test killed; the Job fails after the first), so
that the two alerts that join them to the queue's gauges are evaluated on real joins.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import cli_env, rediswq, spawn_worker
from rediswq.server import EmbeddedRedis
from test_metrics import free_port

METRICS = Path(__file__).resolve().parents[2] / "components" / "metrics"
NAMESPACE = "job-wq-2"
# Grafana fills these in; here, a window of several 1 s scrapes, and every queue.
GRAFANA = {"$__rate_interval": "5s", "$queue": ".+"}


def prometheus_binary() -> str:
    """Debian's prometheus, or a skip saying how to install it (a failure in CI)."""
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("no prometheus on PATH (Debian/Ubuntu: apt-get install prometheus)")
    return found


def dashboard_queries() -> dict[str, str]:
    """Each panel target's PromQL, as Grafana sends it, by panel and legend."""
    dashboard = json.loads((METRICS / "dashboard.json").read_text(encoding="utf-8"))
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA.items():
                expr = expr.replace(variable, value)
            queries[f"{panel['title']} / {target['legendFormat']}"] = expr
    return queries


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load((METRICS / "alerts.rules.yaml").read_text(encoding="utf-8"))
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


class Prometheus:
    """Prometheus' HTTP API."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str | float) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"{self.base}{path}?{query}"
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 (http to loopback)
            answer = json.loads(reply.read())
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=expr)["result"])

    def values(self, expr: str, start: float, end: float) -> list[float]:
        """Every value of every series of `expr` between `start` and `end`, a step a second."""
        found = self.get("/api/v1/query_range", query=expr, start=start, end=end, step=1)
        return [float(v) for series in found["result"] for _, v in series["values"]]

    def alerts(self) -> dict[str, str]:
        return {a["labels"]["alertname"]: a["state"] for a in self.get("/api/v1/alerts")["alerts"]}


def until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@contextmanager
def served(text: Callable[[], str]) -> Iterator[int]:
    """An HTTP server on a free loopback port answering every GET with `text()`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def kube_state_metrics(started: float, failed: int, job_failed: bool) -> str:
    """kube-state-metrics' series of the worker Job, which lost `failed` pods and whose
    activeDeadlineSeconds (10 s) leaves no time for the run; once `job_failed`, its Failed
    condition (kube_job_failed, a series only from then on) and no pod active."""
    job = f'namespace="{NAMESPACE}",job_name="job-wq-2"'
    series = (
        f"kube_job_spec_active_deadline_seconds{{{job}}} 10\n"
        f"kube_job_status_start_time{{{job}}} {started:.0f}\n"
        f"kube_job_status_active{{{job}}} {0 if job_failed else 1}\n"
        f"kube_job_status_failed{{{job}}} {failed}\n"
    )
    if job_failed:
        series += "".join(
            f'kube_job_failed{{{job},condition="{condition}"}} {int(condition == "true")}\n'
            for condition in ("true", "false", "unknown")
        )
    return series


def prometheus_config(workers: list[int], exporter: int, ksm: int) -> dict[str, Any]:
    def job(name: str, ports: list[int], **extra: Any) -> dict[str, Any]:
        targets = [f"127.0.0.1:{port}" for port in ports]
        return {"job_name": name, "static_configs": [{"targets": targets, **extra}]}

    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(METRICS / "alerts.rules.yaml")],
        "scrape_configs": [
            job("rediswq-worker", workers),
            # The PodMonitor's scrape labels the exporter's series with its namespace.
            job("rediswq-exporter", [exporter], labels={"namespace": NAMESPACE}),
            {**job("kube-state-metrics", [ksm]), "honor_labels": True},
        ],
    }


@contextmanager
def running(argv: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=30)


@contextmanager
def prometheus(config: dict[str, Any], scratch: Path) -> Iterator[Prometheus]:
    """A Prometheus on a free loopback port with `config`, its data in `scratch`."""
    binary, web = prometheus_binary(), free_port()
    (scratch / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    argv = [
        binary, f"--config.file={scratch / 'prometheus.yml'}",
        f"--storage.tsdb.path={scratch / 'tsdb'}", f"--web.listen-address=127.0.0.1:{web}",
    ]  # fmt: skip
    with running(argv) as server:
        api = Prometheus(web)

        def ready() -> bool:
            assert server.poll() is None, server.communicate()
            try:
                return api.get("/api/v1/status/buildinfo") is not None
            except OSError:
                return False

        until(ready, "Prometheus to answer")
        yield api


def test_every_dashboard_query_and_alert_returns_data_from_a_real_run(
    queue_name: str, tmp_path: Path
) -> None:
    items = ["apple", "banana", "cherry", "date", "elder", "fig", "poison-pear", "last"]
    (tmp_path / "items.txt").write_text("\n".join(items) + "\n", encoding="utf-8")
    gate = tmp_path / "gate"
    env = cli_env(RECORD_FILE=str(tmp_path / "done"), GATE_FILE=str(gate))
    started = time.time()
    killed: list[int] = []  # the worker pods that failed, as kube-state-metrics would count them
    job_failed: list[bool] = []  # the Job failed: its Failed condition, as kube-state-metrics says
    worker_ports, exporter_port = [free_port(), free_port()], free_port()
    expressions = alert_expressions()

    with (
        EmbeddedRedis() as redis_server,
        served(lambda: kube_state_metrics(started, len(killed), bool(job_failed))) as ksm_port,
        running(
            [sys.executable, "-m", "rediswq", "exporter", "--redis-url", redis_server.url,
             "--queue", queue_name, "--metrics-port", f"127.0.0.1:{exporter_port}"],
            env=env,
        ),
        prometheus(prometheus_config(worker_ports, exporter_port, ksm_port), tmp_path) as api,
    ):  # fmt: skip
        until(lambda: scraping(api, "rediswq-exporter"), "Prometheus to scrape the exporter")
        workers = {
            port: gated_worker(redis_server.url, queue_name, port, env) for port in worker_ports
        }
        try:
            # Both, before any item is done: a worker first scraped after its items shows their
            # counts from its first sample on, and no increase for the duration panels' rates.
            until(lambda: all_scraped(api, workers), "Prometheus to scrape both workers")
            seeded = rediswq(
                "seed", str(tmp_path / "items.txt"), "--redis-url", redis_server.url,
                "--queue", queue_name, env=env,
            )  # fmt: skip
            assert seeded.returncode == 0, seeded.stdout + seeded.stderr
            until(lambda: bool(api.query("rediswq_queue_failed == 1")), "the dead letter")
            # The slow item is held while the rest is done; then its worker dies holding it.
            until(lambda: bool(api.query("rediswq_queue_done == 6")), "all but the slow one")
            assert not api.query(expressions["RediswqJobFailed"]), "no pod failed yet"
            holding = "rediswq_items_in_flight == 1"
            until(lambda: bool(api.query(holding)), "a scrape of the worker holding it")
            (holder,) = api.query(holding)
            port = int(holder["metric"]["instance"].rpartition(":")[2])
            workers.pop(port).kill()
            killed.append(port)
            # Its lease runs out (2 s), and the other worker takes the item over.
            until(lambda: bool(api.query(expressions["RediswqItemsReclaimed"])), "the reclaim")
            late = api.query(expressions["RediswqRunMissesDeadline"])
            fail_the_job(api, expressions["RediswqJobFailed"], job_failed)
            gate.touch()
            (survivor,) = workers.values()
            out, _ = survivor.communicate(timeout=60)
            assert survivor.returncode == 0, out
        finally:
            for worker in workers.values():
                if worker.poll() is None:
                    worker.kill()
                worker.communicate()
        ended = time.time()
        until(lambda: bool(api.query("rediswq_queue_drained == 1")), "the drained run")

        empty = {
            name: expr
            for name, expr in dashboard_queries().items()
            if not [v for v in api.values(expr, started, ended) if not math.isnan(v)]
        }
        assert not empty, f"panels with no data during the run: {empty}"

        assert_every_metric_read_has_series(api, expressions)
        # And the alerts that can happen in seconds returned data, each in its situation.
        assert late, "the run that cannot meet the Job's deadline"
        assert api.query(expressions["RediswqDeadLetters"])
        assert api.alerts().get("RediswqDeadLetters") in {"pending", "firing"}
        assert "RediswqRunStuck" not in api.alerts()

        redis_server.stop()
        until(lambda: bool(api.query(expressions["RediswqQueueDown"])), "the outage")
        # The rules are evaluated a second after the scrape that saw it.
        until(lambda: api.alerts().get("RediswqQueueDown") == "pending", "the outage alert")


def fail_the_job(api: Prometheus, alert: str, job_failed: list[bool]) -> None:
    """No alert for the killed worker's failed pod; then the Job fails, as one with no failed
    slot to spare (maxFailedIndexes 0) would, and the alert's expression returns it."""
    until(lambda: bool(api.query("kube_job_status_failed == 1")), "the failed pod")
    assert not api.query(alert), "a failed pod, not a failed Job"
    job_failed.append(True)
    until(lambda: bool(api.query(alert)), "the failed Job")


def scraping(api: Prometheus, job: str, targets: int = 1) -> bool:
    return len(api.query(f'up{{job="{job}"}} == 1')) >= targets


def all_scraped(api: Prometheus, workers: dict[int, subprocess.Popen[str]]) -> bool:
    """Every worker running, and scraped: a worker that died says why at once, not in a minute."""
    for worker in workers.values():
        # read(), not communicate(): the cleanup still communicates, and kills the other one.
        assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
    return scraping(api, "rediswq-worker", len(workers))


def gated_worker(url: str, queue: str, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    """A worker whose poison items fail 3 times at once, and whose item "last" waits for the
    gate; with short leases; serving its metrics on `port`."""
    return spawn_worker(
        url, queue, "--handler", "recording:gated", "--max-attempts", "3",
        "--retry-backoff", "off", "--lease-seconds", "2", "--metrics-port", f"127.0.0.1:{port}",
        env=env,
    )  # fmt: skip


def assert_every_metric_read_has_series(api: Prometheus, expressions: dict[str, str]) -> None:
    """Each expression is valid PromQL, and each metric it reads was scraped."""
    for alert, expr in expressions.items():
        api.query(expr)
        for name in metric_names(expr):
            assert api.get("/api/v1/series", **{"match[]": name}), f"{alert}: no {name}"


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (ours and kube-state-metrics')."""
    words = expr.replace("(", " ").replace(")", " ").replace("{", " ").replace("[", " ").split()
    return {word for word in words if word.startswith(("rediswq_", "kube_"))}
