"""The safety invariants every fault schedule must keep, judged from the venue's ground truth, the book
and the database after convergence (docs/incidents.md "what fixed means")."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from framework.engine import EngineSettings
from framework.engine.reconcile import Reconciler
from framework.errors import FrameworkError
from framework.venue import Faults

MAX_UNPROTECTED_MS = 1_000

#: a quiet venue (no fault, no lag): one pass may close orphans at once
CONVERGE = EngineSettings(orphan_grace_ms=0, protect_retry_ms=10, reconcile_interval_s=3_600)


def quick_reconciler(rig: Any) -> Reconciler:
    """The engine's Reconciler with no orphan grace: one pass does what the periodic backstop does once
    the grace has passed (stale stops cancelled, orphans closed, unknown positions adopted)."""
    parts = rig.parts
    return Reconciler(parts.book, parts.driver, rig.store, rig.engine.pm, parts.protector, CONVERGE)


async def converge(rig: Any) -> None:
    """Clear every fault, deliver the frames the emulator still holds, then reconcile until the venue,
    the book and the DB agree (at most three passes) with the engine's own Reconciler class.  A pass that
    fails (a venue call timing out on a loaded machine) does not count; the disagreements decide."""
    rig.venue.faults = Faults()
    await rig.harness.emulator.shaper.flush()
    reconciler = quick_reconciler(rig)
    passes = 0
    for _ in range(6):
        try:
            await reconciler.reconcile()
        except FrameworkError:
            continue
        passes += 1
        if not await disagreements(rig) or passes == 3:
            return


async def disagreements(rig: Any) -> dict[str, set[str]]:
    """Symbols open on only some of venue / book / DB (empty when they agree)."""
    venue_open = {p.symbol for p in rig.venue.positions(rig.account)}
    book_open = set(rig.parts.book.positions())
    db_open = {r.symbol for r in await rig.store.open_positions(rig.account, rig.name)}
    everywhere = venue_open & book_open & db_open
    found = {"venue": venue_open - everywhere, "book": book_open - everywhere, "db": db_open - everywhere}
    return {k: v for k, v in found.items() if v}


def expected_closures(truth: Any, account: str) -> Counter[str]:
    """Venue closures per symbol of positions the engine held: a rollback's closure (its fill carries a
    ``fw-r-`` client order id) closes a position that never entered the book."""
    rollback_ticks = {f.ts for f in truth.fills if (f.client_order_id or "").startswith("fw-r-")}
    return Counter(c.symbol for c in truth.closures if c.account == account and c.ts not in rollback_ticks)


async def assert_invariants(rig: Any) -> None:
    """ZERO of: a position unprotected > 1 s, an orphan after convergence, a wrong-side order, a venue
    closure without exactly one ``on_position_closed``, a closure without its ``closed`` journal row."""
    truth, probe = rig.venue.truth, rig.probe
    long_gaps = [i for i in truth.unprotected_intervals() if i[3] - i[2] > MAX_UNPROTECTED_MS]
    assert long_gaps == [], f"unprotected > {MAX_UNPROTECTED_MS} ms: {long_gaps}"
    assert await disagreements(rig) == {}, "orphans after convergence"
    assert truth.wrong_side_orders() == []
    closed_events = Counter(e.symbol for _, e in probe.closed)
    assert closed_events == expected_closures(truth, rig.account), (
        f"on_position_closed {[(e.reason, e.source, e.timestamp) for _, e in probe.closed]} vs venue closures "
        f"{[(c.origin, c.ts) for c in truth.closures]}; opened {[(e.source, e.timestamp) for e in probe.opened]}"
    )
    opened = Counter(e.symbol for e in probe.opened)
    still_open = Counter(list(rig.parts.book.positions()))
    assert opened == closed_events + still_open, "every open ends in exactly one closure or is still open"
    journal = Counter(r["symbol"] for r in await rig.store.pool.fetch(
        "SELECT symbol FROM events WHERE venue = $1 AND kind = 'closed'", rig.name))
    rows = Counter(r["symbol"] for r in await rig.store.pool.fetch(
        "SELECT symbol FROM positions WHERE venue = $1 AND status = 'closed'", rig.name))
    assert journal == closed_events and rows == closed_events, f"journal {dict(journal)}, rows {dict(rows)}"
    for _, event in probe.closed:
        assert event.contracts == Decimal(0)
