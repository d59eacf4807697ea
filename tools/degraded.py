"""Degraded-mode figures (issue 14), one run per venue on the emulators, printed as JSON.

* ``outage``: a database outage of ``--outage-s`` seconds during a run (a real database made unreachable):
  the closure during it (reason), the open tried during it, how long after the database returned the
  queued writes took to replay, the rows and journal afterwards, an open after it, and the time to
  re-protect a stop removed during a second outage.
* ``wall``: ``--wall-s`` seconds of HTTP 429 on every REST call: entries tried and refused, rollbacks,
  critical and warning alerts, and whether the open position stayed protected.

* ``dead_receiver``: closure latency (asking for a close → ``on_position_closed``) without alerts and with
  every open and close alerting to a receiver that is down, in alternating blocks of one run so that
  drift of the machine hits both alike: p50 and p99 of each and their ratio (issue 18: within 10 %).

Usage: ``python tools/degraded.py [--outage-s 25] [--wall-s 40] [--closes 200] [--plugins binance,bybit]``.
The re-protect time of a stop removed with the database up is ``framework bench``'s ``reprotect_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from decimal import Decimal
from typing import Any

from framework import Session
from framework.app.bench import Rig, engine_rig
from framework.errors import FrameworkError
from framework.models import PositionEvent
from framework.settings import Settings
from framework.store import Store
from framework.store.testing import TestDatabases


async def remove_stops(rig: Rig) -> None:
    """The position's stop disappears on the venue (order-based or attached)."""
    venue, symbol = rig.venue, rig.symbol
    for stop in venue.orders(rig.account, symbol, open_only=True, conditional=True):
        venue.cancel_order(rig.account, symbol, stop.id)
    if venue.position(rig.account, symbol).stop_loss is not None:
        venue.set_trading_stop(rig.account, symbol, stop_loss=Decimal(0))


async def outage(databases: TestDatabases, name: str, outage_s: float) -> dict[str, Any]:
    url = await databases.create()
    store = await Store.open(url, max_size=5)
    out: dict[str, Any] = {}
    try:
        async with engine_rig(name, store) as rig:
            venue, symbol, probe = rig.venue, rig.symbol, rig.probe
            await rig.engine.open(rig.intent(side="long"))
            async with databases.unreachable(url):
                started = time.perf_counter()
                venue.manual_close(rig.account, symbol)
                await probe.wait(lambda: len(probe.closed) == 1, 10)
                out["closure_reason_during_outage"] = probe.closed[0][1].reason
                try:
                    await rig.engine.open(rig.intent(side="short"))
                    out["open_during_outage"] = "opened"
                except FrameworkError as exc:
                    out["open_during_outage"] = f"refused: {type(exc).__name__}"
                out["queued_writes"] = rig.parts.book.writes.pending
                await asyncio.sleep(max(0.0, outage_s - (time.perf_counter() - started)))  # the outage lasts
            back = time.perf_counter()
            drained = await rig.parts.book.writes.wait_drained(30)
            out["replayed_s_after_return"] = round(time.perf_counter() - back, 2) if drained else None
            out["closed_rows"] = [r["close_reason"] for r in await store.pool.fetch(
                "SELECT close_reason FROM positions WHERE status = 'closed'")]
            out["closed_journal_rows"] = await store.pool.fetchval("SELECT count(*) FROM events WHERE kind = 'closed'")
            await rig.engine.open(rig.intent(side="short"))
            out["open_after"] = rig.engine.holds(name, symbol)
            async with databases.unreachable(url):
                moves = len(probe.moved)
                removed = time.perf_counter()
                await remove_stops(rig)
                await probe.wait(lambda: len(probe.moved) > moves, 10)
                out["reprotect_ms_during_outage"] = round((time.perf_counter() - removed) * 1000, 1)
                out["protected"] = venue.is_protected(rig.account, symbol)
            await rig.parts.book.writes.wait_drained(30)
    finally:
        await store.close()
    return out


async def wall(databases: TestDatabases, name: str, wall_s: float) -> dict[str, Any]:
    store = await databases.store()
    try:
        async with engine_rig(name, store) as rig:
            venue, probe = rig.venue, rig.probe
            await rig.engine.open(rig.intent(side="long"))
            alerts_before = len(probe.alerts)
            venue.faults.http_error_status, venue.faults.http_error_next = 429, 10**9
            started, tried, refused = time.monotonic(), 0, 0
            while time.monotonic() - started < wall_s:
                tried += 1
                try:
                    await rig.engine.open(rig.intent(side="short", symbol="BTC/USDT:USDT"))
                except FrameworkError:
                    refused += 1
                try:
                    await rig.engine.reconcile_all()
                except FrameworkError:
                    pass
                await asyncio.sleep(1)  # one entry attempt a second, as a strategy would retry
            venue.faults.http_error_next = 0
            alerts = probe.alerts[alerts_before:]
            return {
                "wall_s": wall_s, "entries_tried": tried, "entries_refused": refused,
                "rollback_orders": sum((o.client_order_id or "").startswith("fw-r-") for o in venue.truth.orders),
                "critical_alerts": [a.message for a in alerts if a.level == "critical"],
                "warning_alerts": sum(a.level == "warning" for a in alerts),
                "rate_limited": rig.driver.counters["rate_limited"],
                "rate_limit_waits": rig.driver.counters["rate_limit_waits"],
                "protected_after": venue.is_protected(rig.account, rig.symbol),
            }
    finally:
        await store.close()


async def closure_latencies(name: str, database_url: str, alert_url: str | None, n: int,
                            backoff_s: float | None = None) -> tuple[list[float], dict[str, int]]:
    """Open and close ``n`` positions (long and short in turn) on venue ``name`` through a
    :class:`Session`, every open and close alerting to ``alert_url`` when given (``backoff_s``: the
    delivery's first pause between attempts, default the production one).

    :returns: the seconds from asking for each close to its ``on_position_closed``, and the alert
        delivery counters (empty without ``alert_url``).
    """
    values: dict[str, str] = {"DATABASE_URL": database_url}
    if alert_url:
        values |= {"FRAMEWORK_ALERT_URLS": alert_url, "FRAMEWORK_ALERT_POSITIONS": "true"}
    latencies = []
    session = Session([name], settings=Settings(**values), speed=1).prepare()
    if session.alerts is not None and backoff_s is not None:
        session.alerts.backoff_s = backoff_s  # before the session starts the delivery worker
    async with session:
        symbol = session.harnesses[name].symbol
        for i in range(n):
            await session.open(name, symbol, "long" if i % 2 == 0 else "short", "10", stop_loss_pct="2")
            events = session.events()
            started = time.perf_counter()
            if not await session.close(name, symbol):
                raise RuntimeError(f"close of {symbol} on {name} did nothing")
            await session.wait_for(lambda e: isinstance(e, PositionEvent) and e.event == "closed", 30,
                                   events=events)
            latencies.append(time.perf_counter() - started)
            events.close()
        counters: dict[str, int] = {}
        if session.alerts is not None:
            if backoff_s is not None:  # with the production backoff a dead receiver takes ~3 s a message
                await session.alerts.drained()
            counters = dict(session.alerts.counters)
    return latencies, counters


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def dead_alert_url() -> str:
    """A json:// URL on a loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"json://127.0.0.1:{port}/hook/x"


async def dead_receiver(databases: TestDatabases, name: str, closes: int, blocks: int = 4) -> dict[str, Any]:
    """Closure latency without alerts and with a dead alert receiver, in alternating blocks."""
    without: list[float] = []
    dead: list[float] = []
    failed = 0
    for _ in range(blocks):
        without += (await closure_latencies(name, await databases.create(), None, closes // blocks))[0]
        latencies, counters = await closure_latencies(name, await databases.create(), dead_alert_url(),
                                                      closes // blocks)
        dead += latencies
        failed += counters["failed"] + counters["dropped"]

    def figures(values: list[float]) -> dict[str, float]:
        return {"p50_ms": round(percentile(values, 0.5) * 1000, 2), "p99_ms": round(percentile(values, 0.99) * 1000, 2)}

    plain, broken = figures(without), figures(dead)
    return {"closes_each": len(without), "without_alerts": plain, "dead_receiver": broken,
            "alerts_failed_or_dropped": failed, "p99_ratio": round(broken["p99_ms"] / plain["p99_ms"], 3)}


async def main(plugins: list[str], outage_s: float, wall_s: float, closes: int) -> dict[str, Any]:
    databases = await asyncio.to_thread(TestDatabases)
    try:
        return {name: {"outage": await outage(databases, name, outage_s), "wall": await wall(databases, name, wall_s),
                       "dead_receiver": await dead_receiver(databases, name, closes)}
                for name in plugins}
    finally:
        await databases.release()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage-s", type=float, default=25.0)
    parser.add_argument("--wall-s", type=float, default=40.0)
    parser.add_argument("--closes", type=int, default=200, help="closes measured each way (dead_receiver)")
    parser.add_argument("--plugins", default="binance,bybit")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.plugins.split(","), args.outage_s, args.wall_s, args.closes)), indent=1))
