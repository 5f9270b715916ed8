"""Lists too big for a ConfigMap: the seed streams them from a URL (or a file), gzip or not,
checks the items' digest committed in Git before it seals, and names the run by that digest, as
the workers do without the list. Run as users run it: `rediswq` against a real server and a real
HTTP server on loopback."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import redis
from conftest import cli_env, rediswq
from faults import FaultProxy
from itemserver import ItemServer, encoded, text
from rediswq.errors import QueueError
from rediswq.queue import WorkQueue
from rediswq.runs import items_digest, run_id
from rediswq.seeding import read_items
from rediswq.server import EmbeddedRedis
from rediswq.sources import MAX_ITEM_BYTES, streamed_items

ITEMS = [f"item-{n:06d}" for n in range(2500)]


def staged(client: redis.Redis, queue: str) -> list[bytes]:
    return list(client.scan_iter(f"{queue}:staging:*"))


@pytest.mark.parametrize(
    "content",
    [b"a\nb\n", b"a\r\nb\r\n\r\n", b"  \na\rb\n\nc", b"\xc3\xa9t\xc3\xa9\n \t\nx"],
)
def test_a_streamed_file_has_the_items_and_digest_of_the_file_read_whole(
    tmp_path: Path, content: bytes
) -> None:
    plain, packed = tmp_path / "items.txt", tmp_path / "items.txt.gz"
    plain.write_bytes(content)
    packed.write_bytes(gzip.compress(content))
    whole = read_items(str(plain))
    for path in (plain, packed):
        assert list(streamed_items(str(path))) == whole, path
    assert items_digest(whole)[:12] == run_id(whole)


def test_a_gzipped_list_from_a_url_is_queued_as_the_run_of_its_items_and_fetched_once(
    server: EmbeddedRedis, client: redis.Redis, queue_name: str, item_server: ItemServer
) -> None:
    item_server.files["/items.txt.gz"] = gzip.compress(b"\r\n" + text(ITEMS))
    url = item_server.url("/items.txt.gz")
    digest = rediswq("digest", url)
    assert digest.returncode == 0, digest.stderr
    assert digest.stdout.strip() == items_digest(encoded(ITEMS))
    where = ("--redis-url", server.url, "--queue", queue_name)
    env = cli_env(ITEMS_SHA256=digest.stdout.strip())
    first = rediswq("seed", url, *where, env=env)
    assert first.returncode == 0, first.stderr
    run = run_id(encoded(ITEMS))  # the same run as the items from a ConfigMap
    said = f"Queued {len(ITEMS)} items in {queue_name!r} for run {run} and sealed it"
    assert said in first.stdout
    assert client.lrange(queue_name, 0, -1) == encoded(ITEMS)
    fetched = len(item_server.requests)
    again = rediswq("seed", url, *where, env=env)
    assert again.returncode == 0, again.stderr
    assert f"already sealed for run {run}; nothing changed" in again.stdout
    assert len(item_server.requests) == fetched, "the same run was downloaded again"


def test_a_list_that_does_not_match_its_digest_is_never_sealed_nor_left_staged(
    server: EmbeddedRedis, client: redis.Redis, queue_name: str, item_server: ItemServer
) -> None:
    where = ("--redis-url", server.url, "--queue", queue_name)
    assert rediswq("seed", *where, stdin=b"old\n").returncode == 0
    item_server.files["/items.txt"] = text(ITEMS)
    env = cli_env(ITEMS_SHA256=items_digest(encoded(ITEMS[:-1])))  # one item short
    done = rediswq("seed", item_server.url("/items.txt"), *where, env=env)
    assert done.returncode == 3, done.stderr
    assert "the items' digest is" in done.stderr and "nothing was queued" in done.stderr
    assert client.lrange(queue_name, 0, -1) == [b"old"]
    assert client.get(f"{queue_name}:sealed") == run_id([b"old"]).encode()
    assert staged(client, queue_name) == []


@pytest.mark.parametrize("path", ["/items.txt", "/items.txt.gz"])
def test_a_download_cut_mid_way_fails_for_a_retry_and_leaves_nothing_staged(
    server: EmbeddedRedis,
    client: redis.Redis,
    queue_name: str,
    item_server: ItemServer,
    path: str,
) -> None:
    many = [f"item-{n:07d}" for n in range(400_000)]  # the first half is staged before the cut
    body = text(many)
    item_server.files[path] = gzip.compress(body) if path.endswith(".gz") else body
    item_server.cut.add(path)
    env = cli_env(ITEMS_SHA256=items_digest(encoded(many)))
    where = ("--redis-url", server.url, "--queue", queue_name)
    done = rediswq("seed", item_server.url(path), *where, env=env)
    assert done.returncode == 1, done.stderr
    assert "failed mid-way (the connection closed" in done.stderr, done.stderr
    assert client.exists(queue_name, f"{queue_name}:sealed") == 0
    assert staged(client, queue_name) == []


def test_a_chunked_download_cut_in_its_first_bytes_fails_in_one_line(
    server: EmbeddedRedis, client: redis.Redis, queue_name: str, item_server: ItemServer
) -> None:
    item_server.files["/items.txt"] = text(ITEMS)
    item_server.chunked_cut["/items.txt"] = 1000  # within the first 64 KiB, read to peek
    where = ("--redis-url", server.url, "--queue", queue_name)
    env = cli_env(ITEMS_SHA256=items_digest(encoded(ITEMS)))
    done = rediswq("seed", item_server.url("/items.txt"), *where, env=env)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"rediswq: error: reading items at {item_server.url('/items.txt')} "
                           "failed mid-way (IncompleteRead"), line  # fmt: skip
    assert line.endswith("nothing was queued"), line
    assert staged(client, queue_name) == []


def test_a_download_that_trickles_fails_once_it_falls_below_its_pace(
    item_server: ItemServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rediswq.sources._TIMEOUT", 1.0)  # 60 s, as users get it, is too long
    item_server.files["/items.txt"] = text(ITEMS)
    item_server.trickle["/items.txt"] = 0.05  # 20 bytes a second: no read ever stalls
    url = item_server.url("/items.txt")
    with pytest.raises(QueueError) as failed:
        list(streamed_items(url))
    assert str(failed.value) == (
        f"reading items at {url} failed mid-way (less than 1024 bytes in 1s); nothing was queued"
    )


@pytest.mark.parametrize(
    ("status", "code"), [(404, 3), (403, 3), (503, 1)], ids=["missing", "refused", "unavailable"]
)
def test_an_http_error_fails_the_seed_final_or_worth_a_retry(
    server: EmbeddedRedis, queue_name: str, item_server: ItemServer, status: int, code: int
) -> None:
    item_server.status["/items.txt"] = status
    env = cli_env(ITEMS_SHA256="0" * 64)
    where = ("--redis-url", server.url, "--queue", queue_name)
    done = rediswq("seed", item_server.url("/items.txt"), *where, env=env)
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith(f"rediswq: error: items at {item_server.url('/items.txt')}")
    assert f"HTTP {status}" in done.stderr


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({}, "a URL needs its items' digest in ITEMS_SHA256"),
        ({"ITEMS_SHA256": "abc"}, "ITEMS_SHA256=abc: expected a SHA-256 digest"),
    ],
)
def test_a_url_without_a_valid_digest_is_refused_before_anything_is_fetched(
    server: EmbeddedRedis, item_server: ItemServer, setup: dict[str, str], message: str
) -> None:
    item_server.files["/items.txt"] = text(ITEMS)
    done = rediswq("seed", item_server.url("/items.txt"), "--redis-url", server.url,
                   env=cli_env(**setup))  # fmt: skip
    assert done.returncode == 3
    assert message in done.stderr
    assert item_server.requests == []


def test_a_line_too_long_to_be_an_item_is_refused(server: EmbeddedRedis, tmp_path: Path) -> None:
    items = tmp_path / "items.txt"
    items.write_bytes(b"ok\n" + b"x" * (MAX_ITEM_BYTES + 1) + b"\n")
    done = rediswq("seed", str(items), "--redis-url", server.url, "--run-id", "r1")
    assert done.returncode == 3
    assert f"line 2: longer than {MAX_ITEM_BYTES} bytes" in done.stderr


def test_a_worker_named_by_the_digest_works_that_run_and_no_other(
    server: EmbeddedRedis, queue_name: str, item_server: ItemServer, tmp_path: Path
) -> None:
    item_server.files["/items.txt.gz"] = gzip.compress(text(ITEMS[:5]))
    digest = items_digest(encoded(ITEMS[:5]))
    where = ("--redis-url", server.url, "--queue", queue_name)
    seeded = rediswq("seed", item_server.url("/items.txt.gz"), *where,
                     env=cli_env(ITEMS_SHA256=digest, RUN_LABEL="big"))  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr
    worker = rediswq("worker", *where, "--work-seconds", "0",
                     env=cli_env(ITEMS_SHA256=digest, RUN_LABEL="big"))  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert f"Worker of run big-{digest[:12]}" in worker.stdout
    assert "Done 5 items" in worker.stdout
    other = rediswq("worker", *where, "--seal-timeout", "1",
                    env=cli_env(ITEMS_SHA256="1" * 64))  # fmt: skip
    assert other.returncode == 1, other.stdout
    assert f"was not sealed for run {'1' * 12}" in other.stderr
    items = tmp_path / "items.txt"
    items.write_text("a\n", encoding="utf-8")
    both = rediswq("worker", *where, env=cli_env(ITEMS_SHA256=digest, RUN_ITEMS=str(items)))
    assert both.returncode == 3
    assert "both name the run" in both.stderr


def test_a_lost_reply_mid_stream_queues_each_item_once(
    fault_proxy: FaultProxy, queue_name: str, item_server: ItemServer
) -> None:
    """redis-py re-sends a staging pipeline whose reply was lost: the items it held are staged
    once, and the stream goes on from where it was, never read twice."""
    many = [f"item-{n:06d}" for n in range(60_000)]  # three pipelines of 20 batches
    item_server.files["/items.txt.gz"] = gzip.compress(text(many))
    upstream = WorkQueue(redis.Redis(port=fault_proxy.upstream_port), queue_name)
    for script in upstream.scripts._asdict().values():  # else the fault would hit a NOSCRIPT answer
        upstream.client.script_load(script.script)
    prefix = f"{queue_name}:staging:".encode()
    lost = fault_proxy.lose_reply(lambda args: any(a.startswith(prefix) for a in args[1:]), nth=25)
    done = rediswq("seed", item_server.url("/items.txt.gz"), "--redis-url", fault_proxy.url,
                   "--queue", queue_name,
                   env=cli_env(ITEMS_SHA256=items_digest(encoded(many))))  # fmt: skip
    assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
    assert done.returncode == 0, done.stderr
    assert upstream.client.lrange(queue_name, 0, -1) == encoded(many)
    assert len(item_server.requests) == 1


def test_a_list_that_fills_redis_mid_stream_fails_and_leaves_nothing_staged(
    fresh_server: EmbeddedRedis, queue_name: str, item_server: ItemServer
) -> None:
    """Redis at its maxmemory refuses a staging call after others were staged: the seed fails
    in one line, seals nothing and gives back what it had staged."""
    many = [f"item-{n:07d}" for n in range(200_000)]  # ten pipelines of 20 batches
    item_server.files["/items.txt.gz"] = gzip.compress(text(many))
    admin = redis.Redis(port=fresh_server.port)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", admin.info("memory")["used_memory"] + 2_000_000)
    done = rediswq("seed", item_server.url("/items.txt.gz"), "--redis-url", fresh_server.url,
                   "--queue", queue_name,
                   env=cli_env(ITEMS_SHA256=items_digest(encoded(many))))  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("rediswq: error: Redis refused to store more"), done.stderr
    stats = admin.info("commandstats")["cmdstat_evalsha"]
    assert stats["calls"] > 0 and stats["rejected_calls"] > 0, stats  # refused mid-way
    assert admin.exists(queue_name, f"{queue_name}:sealed") == 0
    assert staged(admin, queue_name) == []
