"""Prometheus metrics: scraped over HTTP from a real worker in a real run, and the queue's gauges
from `status --prometheus` and the exporter, checked against what the run did."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import cli_env, rediswq, said_until, spawn_worker
from fullredis import filled
from prometheus_client.parser import text_string_to_metric_families
from rediswq import WorkQueue, seed
from rediswq.cli.options import listen_address
from rediswq.connection import connect
from rediswq.errors import EXIT_CONFIG
from rediswq.logs import messages
from rediswq.server import EmbeddedRedis

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scraped(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return samples(reply.read().decode())


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_a_workers_metrics_match_what_it_did_in_a_real_run(
    server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    queue = WorkQueue(connect(server.url), queue_name)
    seed(queue, [b"apple", b"banana", b"poison-pear", b"last"])
    port = free_port()
    env = cli_env(RECORD_FILE=str(tmp_path / "done"), GATE_FILE=str(tmp_path / "gate"))
    worker = spawn_worker(
        server.url, queue_name, "--handler", "recording:gated", "--max-attempts", "1",
        "--metrics-port", f"127.0.0.1:{port}", env=env,
    )  # fmt: skip
    said = said_until(worker, "Working on last")  # which waits for the gate
    assert f"Serving metrics on 127.0.0.1:{port}/metrics" in said
    during = scraped(port)
    q = {"queue": queue_name}
    assert value(during, "rediswq_items_done_total", **q) == 2  # apple, banana
    assert value(during, "rediswq_attempts_failed_total", **q) == 1
    assert value(during, "rediswq_items_dead_lettered_total", **q) == 1
    assert value(during, "rediswq_items_reclaimed_total", **q) == 0
    assert value(during, "rediswq_items_in_flight", **q) == 1  # last
    took = "rediswq_item_duration_seconds_count"
    assert value(during, took, outcome="done", **q) == 2
    assert value(during, took, outcome="failed", **q) == 1
    assert value(during, "process_resident_memory_bytes") > 0
    # The queue agrees: what the worker counted is what Redis holds.
    status = rediswq("status", "--prometheus", "--redis-url", server.url, "--queue", queue_name)
    assert status.returncode == 0, status.stderr
    queued = samples(status.stdout)
    assert value(queued, "rediswq_queue_done", **q) == 2
    assert value(queued, "rediswq_queue_failed", **q) == 1
    assert value(queued, "rediswq_queue_leased", **q) == 1
    assert value(queued, "rediswq_queue_pending", **q) == 0
    assert value(queued, "rediswq_queue_sealed", **q) == 1
    assert value(queued, "rediswq_queue_drained", **q) == 0
    assert value(queued, "rediswq_queue_up", **q) == 1
    ((run_info, labels),) = [key for key in queued if key[0] == "rediswq_queue_run_info"]
    assert dict(labels)["run"] and queued[(run_info, labels)] == 1

    (tmp_path / "gate").touch()
    worker.communicate(timeout=60)
    assert worker.returncode == 0
    after = samples(rediswq("status", "--prometheus", "--redis-url", server.url,
                            "--queue", queue_name).stdout)  # fmt: skip
    assert value(after, "rediswq_queue_done", **q) == 3
    assert value(after, "rediswq_queue_drained", **q) == 1


def test_the_exporter_serves_the_queues_gauges_at_each_scrape(
    server: EmbeddedRedis, queue_name: str
) -> None:
    queue = WorkQueue(connect(server.url), queue_name)
    seed(queue, [b"a", b"b", b"c"])
    port = free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "rediswq", "exporter", "--redis-url", server.url,
         "--queue", queue_name, "--metrics-port", f"127.0.0.1:{port}"],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                first = scraped(port)
                break
            except OSError:
                assert exporter.poll() is None, exporter.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert value(first, "rediswq_queue_pending", queue=queue_name) == 3
        queue.lease(2)
        second = scraped(port)
        assert value(second, "rediswq_queue_pending", queue=queue_name) == 1
        assert value(second, "rediswq_queue_leased", queue=queue_name) == 2
    finally:
        exporter.terminate()
        out, _ = exporter.communicate(timeout=30)
    served = f"Serving the gauges of queue {queue_name!r} on 127.0.0.1:{port}/metrics"
    assert served in messages(out), out


@pytest.mark.parametrize(
    ("text", "address"),
    [("9100", ("0.0.0.0", 9100)), ("127.0.0.1:9100", ("127.0.0.1", 9100)),  # noqa: S104
     ("[::1]:9100", ("::1", 9100)), ("0", ("0.0.0.0", 0))],  # noqa: S104
)  # fmt: skip
def test_the_metrics_address_is_a_port_or_host_and_port(
    text: str, address: tuple[str, int]
) -> None:
    assert listen_address(text) == address


@pytest.mark.parametrize("text", ["", "x", "70000", "-1", "host:"])
def test_a_bad_metrics_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected PORT or HOST:PORT"):
        listen_address(text)


@pytest.mark.parametrize("command", ["worker", "exporter"])
def test_a_metrics_port_in_use_is_a_config_error_in_one_line_and_never_said_served(
    command: str, server: EmbeddedRedis, queue_name: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = rediswq(
            command, "--redis-url", server.url, "--queue", queue_name,
            "--metrics-port", f"127.0.0.1:{port}",
        )  # fmt: skip
    assert result.returncode == EXIT_CONFIG, result
    assert result.stderr.splitlines() == [
        f"rediswq: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]
    assert "Serving" not in result.stdout, result.stdout


def test_the_exporter_serves_at_once_and_says_up_0_until_redis_answers(queue_name: str) -> None:
    with socket.socket() as silent:  # a Redis that does not listen yet
        silent.bind(("127.0.0.1", 0))
        redis_port = silent.getsockname()[1]
        port = free_port()
        exporter = subprocess.Popen(
            [sys.executable, "-m", "rediswq", "exporter", "--queue", queue_name,
             "--redis-url", f"redis://127.0.0.1:{redis_port}/0", "--metrics-port", str(port)],
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 15  # it used to wait 120 s for Redis first
            while True:
                try:
                    down = scraped(port)
                    break
                except OSError:
                    assert exporter.poll() is None, exporter.communicate()
                    assert time.monotonic() < deadline, "the exporter did not serve"
                    time.sleep(0.1)
            assert value(down, "rediswq_queue_up", queue=queue_name) == 0
        finally:
            exporter.terminate()
            exporter.communicate(timeout=30)


@pytest.mark.parametrize("library", ["loaded", "flushed"])
def test_a_full_redis_is_still_scraped(fresh_server: EmbeddedRedis, library: str) -> None:
    """Over maxmemory (noeviction) Redis refuses writes, and FUNCTION LOAD with them: the gauges
    come from a read-only step, by FCALL or, where the library is gone, by EVALSHA."""
    admin = connect(fresh_server.url)
    seed(WorkQueue(admin, "q"), [f"item-{n}-".encode() + b"x" * 1000 for n in range(200)])
    if library == "flushed":
        admin.function_flush()
        admin.script_flush()
    filled(admin)
    status = rediswq("status", "--prometheus", "--redis-url", fresh_server.url, "--queue", "q")
    assert status.returncode == 0, status.stderr
    found = samples(status.stdout)
    assert value(found, "rediswq_queue_up", queue="q") == 1
    assert value(found, "rediswq_queue_pending", queue="q") == 200
    assert value(found, "rediswq_queue_sealed", queue="q") == 1
