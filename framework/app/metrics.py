"""Prometheus metrics of ``framework run --metrics-port N`` (prometheus-client, one registry per run).

Event metrics come from the lifecycle hooks (the ``framework.metrics`` built-in plugin); state metrics are
read from the session and the engine at scrape time (:class:`_StateCollector`).  ``GET /metrics`` is served
by aiohttp on ``FRAMEWORK_METRICS_HOST`` (``127.0.0.1`` by default), in the event loop, so a scrape sees a
consistent state.

=================================================  =============================================================
metric                                             what
=================================================  =============================================================
``framework_open_positions{venue}``                open positions in the engine's book
``framework_unprotected_positions{venue}``         open positions without a resting stop-loss (book)
``framework_unprotected_seconds_total{venue}``     time without a stop as seen by the client (``on_stop_moved``)
``framework_positions_opened_total{venue,source}`` positions opened by us (``engine``) or adopted (``reconcile``)
``framework_closures_total{venue,reason}``         positions closed, by closure reason
``framework_closure_latency_seconds{venue}``       venue event time → our observation of a closure
``framework_fill_to_protected_seconds{venue}``     venue fill time → the open verified and protected (an upper
                                                   bound of fill → stop: the engine does not report the stop's
                                                   placement time during an open)
``framework_stop_moves_total{venue}``              stops placed or moved
``framework_rest_calls_total{venue,endpoint}``     REST calls by endpoint (emulated venues only)
``framework_rate_limited_total{venue}``            answers of the venue saying we were rate-limited
``framework_rate_limit_waits_total{venue}``        REST calls that waited for a rate-limit pause
``framework_stream_up{venue}``                     1 while the private stream is connected
``framework_stream_reconnects_total{venue}``       private-stream reconnects
``framework_malformed_frames_total{venue}``        private-stream frames that could not be decoded
``framework_task_restarts_total{venue,task}``      supervised engine tasks restarted after an error
``framework_pending_db_writes{venue}``             database writes not yet committed: queued while the database
                                                   is away, or waiting for the next group commit
``framework_journal_commits_total{venue}``         group commits of the stream's journal rows (size changes,
                                                   closures; each one statement per row, one round trip)
``framework_journal_rows_total{venue}``            journal rows written by those group commits
``framework_reconciliations_total{venue}``         reconciliation passes
``framework_reconciliation_duration_seconds``      duration of a pass (``elapsed_ms`` of its report)
``framework_reconciliation_actions_total``         ``{venue,action}``: closed, adopted, reprotected, resolved
``framework_alerts_total{level}``                  alerts raised
``framework_alert_deliveries_total{result}``       alert messages sent, failed, dropped, suppressed, abandoned
                                                   (unsent at a stop) (with ``FRAMEWORK_ALERT_URLS`` set)
``framework_signals_total{result}``                signals accepted, rejected (limits, one-way) or failed
``framework_lease_owner{venue,account}``           1 while this instance holds the account's lease, 0 standby
``framework_lease_takeovers_total{venue,account}`` accounts this instance took over from another (or itself
                                                   after a lost lease)
``framework_fenced_writes_total{venue}``           writes the database refused: stale lease epoch
=================================================  =============================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from framework.app.http import serve_app
from framework.hookspecs import hookimpl
from framework.models import Alert, PositionEvent, StopEvent

if TYPE_CHECKING:
    from framework.session import Session

__all__ = ["RECONCILE_ACTIONS", "Metrics", "serve_metrics"]

RECONCILE_ACTIONS = ("closed", "adopted", "reprotected", "resolved")
SUPERVISED_TASKS = ("stream", "reconcile", "marks")  # what Engine.restarts counts, by "<venue> <task>"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _StateCollector(Collector):
    """Reads the session and engine at scrape time (positions, streams, driver and book counters)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def collect(self) -> Iterator[Metric]:
        session, engine = self.session, self.session.engine
        open_ = GaugeMetricFamily("framework_open_positions", "Open positions in the book", labels=["venue"])
        unprotected = GaugeMetricFamily("framework_unprotected_positions", "Open positions without a resting "
                                        "stop-loss", labels=["venue"])
        stream_up = GaugeMetricFamily("framework_stream_up", "1 while the private stream is connected",
                                      labels=["venue"])
        rest = CounterMetricFamily("framework_rest_calls", "REST calls by endpoint (emulated venues)",
                                   labels=["venue", "endpoint"])
        limited = CounterMetricFamily("framework_rate_limited", "Rate-limited answers", labels=["venue"])
        waits = CounterMetricFamily("framework_rate_limit_waits", "REST calls that waited for a rate-limit pause",
                                    labels=["venue"])
        malformed = CounterMetricFamily("framework_malformed_frames", "Undecodable stream frames", labels=["venue"])
        pending = GaugeMetricFamily("framework_pending_db_writes", "Database writes queued", labels=["venue"])
        restarts = CounterMetricFamily("framework_task_restarts", "Supervised tasks restarted",
                                       labels=["venue", "task"])
        deliveries = CounterMetricFamily("framework_alert_deliveries", "Alert messages by outcome",
                                         labels=["result"])
        signals = CounterMetricFamily("framework_signals", "Signals by outcome", labels=["result"])
        owner = GaugeMetricFamily("framework_lease_owner", "1 while this instance holds the account's lease",
                                  labels=["venue", "account"])
        takeovers = CounterMetricFamily("framework_lease_takeovers", "Accounts taken over as a standby",
                                        labels=["venue", "account"])
        fenced = CounterMetricFamily("framework_fenced_writes", "Writes refused: stale lease epoch", labels=["venue"])
        commits = CounterMetricFamily("framework_journal_commits", "Group commits of journal rows", labels=["venue"])
        journal_rows = CounterMetricFamily("framework_journal_rows", "Journal rows group-committed",
                                           labels=["venue"])
        states = session.stream_states()
        if engine is not None:
            for name, lease in sorted(engine.leases.items()):
                owner.add_metric([name, lease.account], 1 if lease.holds() else 0)
                takeovers.add_metric([name, lease.account], engine.takeovers[name])

            for name, parts in sorted(engine.venues.items()):
                held = parts.book.positions()
                open_.add_metric([name], len(held))
                unprotected.add_metric([name], sum(1 for p in held.values() if p.stop_price is None))
                stream_up.add_metric([name], 1 if states.get(name) in ("connected", "reconnected") else 0)
                limited.add_metric([name], parts.driver.counters["rate_limited"])
                waits.add_metric([name], parts.driver.counters["rate_limit_waits"])
                malformed.add_metric([name], parts.book.counters["malformed_frames"])
                pending.add_metric([name], parts.book.writes.pending)
                fenced.add_metric([name], parts.book.writes.fenced)
                commits.add_metric([name], parts.book.writes.batches)
                journal_rows.add_metric([name], parts.book.writes.batched_rows)
                harness = session.harnesses.get(name)
                if harness is not None:
                    for endpoint, n in sorted(harness.rest_calls().items()):
                        rest.add_metric([name, endpoint], n)
            counts = {(venue, task): 0 for venue in engine.venues for task in SUPERVISED_TASKS}
            for key, n in engine.restarts.items():
                venue, _, task = key.partition(" ")
                counts[(venue, task)] = n
            for (venue, task), n in sorted(counts.items()):
                restarts.add_metric([venue, task], n)
        if session.alerts is not None:
            for result in ("sent", "failed", "dropped", "suppressed", "abandoned"):
                deliveries.add_metric([result], session.alerts.counters[result])
        for result in ("accepted", "rejected", "failed"):
            signals.add_metric([result], session.signals[result])
        yield from (open_, unprotected, stream_up, rest, limited, waits, malformed, pending, restarts, deliveries,
                    signals, owner, takeovers, fenced, commits, journal_rows)


class Metrics:
    """The ``framework.metrics`` lifecycle plugin and its :class:`~prometheus_client.CollectorRegistry`.

    :param session: the session whose state is read at scrape time.
    """

    def __init__(self, session: Session) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        registry.register(_StateCollector(session))
        self.opened = Counter("framework_positions_opened", "Positions opened or adopted", ["venue", "source"],
                              registry=registry)
        self.closures = Counter("framework_closures", "Positions closed", ["venue", "reason"], registry=registry)
        self.closure_latency = Histogram("framework_closure_latency_seconds", "Venue closure → our observation",
                                         ["venue"], buckets=LATENCY_BUCKETS, registry=registry)
        self.fill_to_protected = Histogram("framework_fill_to_protected_seconds", "Venue fill → open and protected",
                                           ["venue"], buckets=LATENCY_BUCKETS, registry=registry)
        self.stop_moves = Counter("framework_stop_moves", "Stops placed or moved", ["venue"], registry=registry)
        self.unprotected_s = Counter("framework_unprotected_seconds", "Time without a stop (client's view)",
                                     ["venue"], registry=registry)
        self.reconnects = Counter("framework_stream_reconnects", "Private-stream reconnects", ["venue"],
                                  registry=registry)
        self.reconciliations = Counter("framework_reconciliations", "Reconciliation passes", ["venue"],
                                       registry=registry)
        self.reconcile_s = Histogram("framework_reconciliation_duration_seconds", "Reconciliation pass duration",
                                     ["venue"], buckets=LATENCY_BUCKETS, registry=registry)
        self.reconcile_actions = Counter("framework_reconciliation_actions", "Reconciliation actions",
                                         ["venue", "action"], registry=registry)
        self.alerts = Counter("framework_alerts", "Alerts raised", ["level"], registry=registry)
        for level in ("info", "warning", "critical"):
            self.alerts.labels(level)
        self._venues: set[str] = set()

    def _known(self, venue: str) -> None:
        """Create a venue's series at 0 when it is first seen, so a dashboard shows 0, not "no data"."""
        if venue in self._venues:
            return
        self._venues.add(venue)
        self.opened.labels(venue, "engine")
        for metric in (self.closure_latency, self.fill_to_protected, self.stop_moves, self.unprotected_s,
                       self.reconnects, self.reconciliations, self.reconcile_s):
            metric.labels(venue)
        for action in RECONCILE_ACTIONS:
            self.reconcile_actions.labels(venue, action)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    @hookimpl
    def on_position_open(self, event: PositionEvent) -> None:
        self.opened.labels(event.venue, event.source).inc()
        if event.source == "engine":  # our own open; an adopted position's fill time says nothing about us
            self.fill_to_protected.labels(event.venue).observe(max(0, event.observed_at - event.timestamp) / 1000)

    @hookimpl
    def on_position_closed(self, event: PositionEvent) -> None:
        self.closures.labels(event.venue, event.reason or "unknown").inc()
        self.closure_latency.labels(event.venue).observe(max(0, event.observed_at - event.timestamp) / 1000)

    @hookimpl
    def on_stop_moved(self, event: StopEvent) -> None:
        if event.current is None:
            return
        self.stop_moves.labels(event.venue).inc()
        self.unprotected_s.labels(event.venue).inc(event.unprotected_ms / 1000)

    @hookimpl
    def on_stream_state(self, venue: str, state: str, detail: str) -> None:
        self._known(venue)
        if state == "reconnected":
            self.reconnects.labels(venue).inc()

    @hookimpl
    def on_reconciled(self, venue: str, report: dict[str, Any]) -> None:
        self._known(venue)
        self.reconciliations.labels(venue).inc()
        if isinstance(report.get("elapsed_ms"), int | float):
            self.reconcile_s.labels(venue).observe(report["elapsed_ms"] / 1000)
        for action in RECONCILE_ACTIONS:
            if report.get(action):
                self.reconcile_actions.labels(venue, action).inc(report[action])

    @hookimpl
    def on_alert(self, alert: Alert) -> None:
        self.alerts.labels(alert.level).inc()


@contextlib.asynccontextmanager
async def serve_metrics(metrics: Metrics, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``GET /metrics`` on ``host:port`` (0: any free port); yields the base URL.

    :raises ConfigError: the address cannot be bound.
    """
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    async with serve_app(app, host, port, "metrics") as url:
        yield url
