"""Results: opt-in, per item, typed on the way back, size-limited, expiring."""

from __future__ import annotations

import json
from pathlib import Path

from collected import Log
from conftest import QueueFactory, cli_env, rediswq
from rediswq import seed
from rediswq.results import ResultStore
from rediswq.server import EmbeddedRedis
from rediswq.worker import Worker

RESULTS = {
    b"text": "a str",
    b"raw": b"\xff\x00 not UTF-8",
    b"utf8-bytes": "caf\u00e9".encode(),
    b"doc": {"size": 3, "tags": ["x"]},
    b"none": None,
}


def test_results_round_trip_through_the_export(
    server: EmbeddedRedis, make_queue: QueueFactory
) -> None:
    queue = make_queue()
    seed(queue, list(RESULTS))
    store = ResultStore(queue, max_bytes=1000, ttl_seconds=600)
    Worker(queue, RESULTS.__getitem__, results=store, log=Log()).run()
    url = ("--redis-url", server.url, "--queue", queue.keys.name)
    exported = json.loads(rediswq("results", *url, "--json").stdout)
    assert exported == [
        {"item": "doc", "result": {"size": 3, "tags": ["x"]}},
        {"item": "raw", "result_base64": "/wAgbm90IFVURi04"},
        {"item": "text", "result": "a str"},
        {"item": "utf8-bytes", "result": "caf\u00e9"},
    ]  # `none` returned nothing: nothing kept
    assert 0 < queue.client.ttl(queue.keys.results) <= 600
    text = rediswq("results", *url).stdout.splitlines()
    assert text[0] == 'doc\t{"size": 3, "tags": ["x"]}' and "text\ta str" in text


def test_results_are_off_by_default(make_queue: QueueFactory) -> None:
    queue = make_queue()
    seed(queue, [b"text"])
    Worker(queue, RESULTS.__getitem__, log=Log()).run()
    assert not queue.client.exists(queue.keys.results)


def test_a_result_over_the_limit_is_not_kept_and_said_so(make_queue: QueueFactory) -> None:
    queue = make_queue()
    seed(queue, [b"fits", b"toolong"])
    store = ResultStore(queue, max_bytes=10, ttl_seconds=60)
    log = Log()
    summary = Worker(queue, lambda item: item * 2, results=store, log=log).run()
    assert summary.done == 2
    assert queue.client.hgetall(queue.keys.results) == {b"fits": b"bfitsfits"}
    assert "Result of toolong not kept: 14 bytes, more than 10" in log


def test_a_result_that_cannot_be_stored_fails_the_attempt(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=1)
    seed(queue, [b"x"])
    store = ResultStore(queue)
    log = Log()
    Worker(queue, lambda item: object(), results=store, log=log).run()
    assert any("TypeError: the handler returned a object" in line for line in log)


def test_the_worker_keeps_results_with_a_time_limit_too(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path
) -> None:
    queue = make_queue()
    seed(queue, [b"good", b"bad"])
    url = ("--redis-url", server.url, "--queue", queue.keys.name)
    worker = rediswq(
        "worker", *url, "--handler", "recording:reject_bad", "--results", "--item-timeout", "30",
        env=cli_env(),
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert json.loads(rediswq("results", *url, "--json").stdout) == [
        {"item": "good", "result": "GOOD"}
    ]
    # Raised in the handler's process, Reject still means no retry.
    [letter] = json.loads(rediswq("failed", *url, "--json").stdout)
    assert (letter["item"], letter["attempts"]) == ("bad", 1)
    assert letter["error"] == "Reject: bad can never work"


def test_a_new_run_moves_the_results_and_dead_letters_aside(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=1)
    first = seed(queue, [b"text", b"doc", b"boom"]).run

    def handler(item: bytes) -> object:
        if item == b"boom":
            raise OSError("down")
        return RESULTS[item]

    Worker(queue, handler, results=ResultStore(queue), log=Log()).run()
    seed(queue, [b"next"])
    old = f"{queue.keys.name}:run:{first}"
    assert set(queue.client.hkeys(f"{old}:results")) == {b"text", b"doc"}
    assert queue.client.hkeys(f"{old}:failed:info") == [b"boom"]
    assert not queue.client.exists(queue.keys.results, queue.keys.failures)
