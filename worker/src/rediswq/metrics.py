"""Prometheus metrics with `prometheus_client`: a worker's own (what it did), served while it runs,
and a queue's (what Redis holds), read from one snapshot per scrape.

A worker's counters observe each attempt's `Outcome` through one observer (attempts.py), as a
Dramatiq middleware does; the in-flight gauge is read when scraped, so nothing is counted per
item unless metrics are on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import redis
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rediswq.attempts import Attempt
from rediswq.deadletter import Settled
from rediswq.errors import ConfigError, QueueError
from rediswq.queue import WorkQueue
from rediswq.status import snapshot

# Items of a batch Job take from milliseconds to an hour; prometheus_client's default buckets end
# at 10 s.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip


class WorkerMetrics:
    """A worker's counters, histogram and gauge, labelled with its queue."""

    def __init__(self, queue: str, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ["queue"], registry=registry)

        self._done = counter("rediswq_items_done", "Items this worker did and handed in").labels(
            queue
        )
        self._failed = counter(
            "rediswq_attempts_failed", "Failed attempts (an item failing twice counts twice)"
        ).labels(queue)
        self._dead = counter(
            "rediswq_items_dead_lettered", "Items this worker moved to the dead letters"
        ).labels(queue)
        self._reclaimed = counter(
            "rediswq_items_reclaimed",
            "Leases of this worker that expired before it handed them in (the item may run twice)",
        ).labels(queue)
        duration = Histogram(
            "rediswq_item_duration_seconds", "How long the handler took, per attempt",
            ["queue", "outcome"], buckets=DURATION_BUCKETS, registry=registry,
        )  # fmt: skip
        self._took = {True: duration.labels(queue, "done"), False: duration.labels(queue, "failed")}
        self._in_flight = Gauge(
            "rediswq_items_in_flight", "Leases this worker holds", ["queue"], registry=registry
        ).labels(queue)

    def reads_in_flight(self, held: Callable[[], int]) -> None:
        """The gauge asks `held` at each scrape."""
        self._in_flight.set_function(held)

    def attempted(self, attempt: Attempt) -> None:
        self._took[attempt.outcome.failure is None].observe(attempt.seconds)
        if attempt.settled is None:
            return
        self._failed.inc()
        if attempt.settled is Settled.DEAD_LETTERED:
            self._dead.inc()
        elif attempt.settled is Settled.NOT_HELD:
            self._reclaimed.inc()

    def handed_in(self, done: int, lost: int) -> None:
        if done:
            self._done.inc(done)
        if lost:
            self._reclaimed.inc(lost)


def serve(address: tuple[str, int], registry: CollectorRegistry) -> None:
    """Serve `registry` over HTTP in a background thread, for as long as the process runs."""
    host, port = address
    try:
        start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None


class QueueCollector(Collector):
    """A queue's gauges, from one consistent snapshot per scrape; `rediswq_queue_up` is 0 if
    Redis did not answer (the scrape still succeeds, so an alert can say why)."""

    def __init__(self, queue: WorkQueue) -> None:
        self._queue = queue

    def collect(self) -> Iterator[Metric]:
        name = self._queue.keys.name

        def gauge(metric: str, doc: str, value: float, **labels: str) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"rediswq_queue_{metric}", doc, labels=["queue", *labels])
            family.add_metric([name, *labels.values()], value)
            return family

        try:
            status = snapshot(self._queue)
        except (redis.RedisError, QueueError):
            yield gauge("up", "1 if Redis answered this scrape", 0)
            return
        yield gauge("up", "1 if Redis answered this scrape", 1)
        yield gauge("pending", "Items waiting to be leased", status.pending)
        yield gauge("leased", "Items leased to workers now", len(status.in_flight))
        yield gauge("delayed", "Failed items waiting for their retry", status.delayed)
        yield gauge("done", "Items done in the current run", status.done)
        yield gauge("failed", "Items dead-lettered in the current run", status.failed)
        yield gauge("reclaimed", "Expired leases put back in the current run", status.reclaimed)
        yield gauge("retried", "Failed attempts put back for a retry", status.retried)
        yield gauge("sealed", "1 once the seed sealed the queue", int(status.sealed))
        yield gauge("drained", "1 once sealed with nothing pending, leased or delayed",
                    int(status.drained))  # fmt: skip
        if status.run is not None:
            yield gauge("run_info", "The run the queue is sealed for", 1, run=status.run.id)


def served_worker_metrics(address: tuple[str, int], queue: str) -> WorkerMetrics:
    """The worker's metrics, with the process's own (CPU, memory), served at `address`."""
    metrics = WorkerMetrics(queue, REGISTRY)
    serve(address, REGISTRY)
    return metrics


def _queue_registry(queue: WorkQueue) -> CollectorRegistry:
    """A registry of the queue's gauges alone (no process metrics: they are not the queue's)."""
    registry = CollectorRegistry()
    registry.register(QueueCollector(queue))
    return registry


def queue_exposition(queue: WorkQueue) -> str:
    """The queue's gauges in Prometheus' text format, for `rediswq status --prometheus`."""
    return generate_latest(_queue_registry(queue)).decode()


def serve_queue(queue: WorkQueue, address: tuple[str, int]) -> None:
    """`rediswq exporter`: serve the queue's gauges, from a background thread."""
    serve(address, _queue_registry(queue))
