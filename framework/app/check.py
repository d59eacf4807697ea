"""``framework check``: walk one scripted lifecycle on a venue account and say, guarantee by guarantee,
whether the venue and the driver keep it — the thing to run on a test network before going live.

With the venue's smallest order on one symbol: load markets, open long with a stop-loss, see the venue list
the position and the stop, move the stop, set a take-profit, place a reduce-only stop order with an id of the
check's and send that id again (the venue must refuse it), close reduce-only, see the account flat, ask for a
close with no position.  Nothing trades that the lifecycle does not name: the one entry and its close.
Each step is a :class:`Row`
(``pass`` / ``fail`` / ``not supported``) with its evidence.  Whatever happens — a failed step, an error,
Ctrl-C half-way — :func:`cleanup` then cancels every trigger the check placed and closes what it opened,
and says whether the account is flat on the symbol again.

It talks to the venue only through the driver's hooks, on the live path (keys, and URLs when
``<PLUGIN>_REST_URL`` / ``<PLUGIN>_WS_URL`` point elsewhere): no harness, no ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any, Literal

from framework.driver import Driver
from framework.errors import DuplicateOrderId, FrameworkError, PositionGone
from framework.models import (
    DriverConfig,
    MarketLimits,
    Order,
    OrderIntent,
    PositionUpdate,
    StopLoss,
    VenueSnapshot,
)
from framework.session import current_mark

Status = Literal["pass", "fail", "not supported", "not run"]
#: how far from the mark price the check's triggers rest: far enough never to fire during the check
STOP_DISTANCE = Decimal("0.10")
MOVED_STOP_DISTANCE = Decimal("0.08")
TAKE_PROFIT_DISTANCE = Decimal("0.10")
#: notional above the venue's minimum, so a mark move between sizing and filling cannot drop below it
NOTIONAL_MARGIN = Decimal("1.10")
POLL_S = 0.2

GUARANTEES = (
    "markets loaded",
    "private stream connected",
    "account flat on the symbol before",
    "open with a stop-loss",
    "venue lists the position",
    "venue lists the stop-loss",
    "stream reports the position",
    "move the stop-loss",
    "venue lists the moved stop-loss",
    "set a take-profit",
    "venue lists the take-profit",
    "duplicate client order id",
    "close reduce-only",
    "flat after the close",
    "no-position answer",
)


@dataclass
class Row:
    """One guarantee's outcome and what shows it."""

    guarantee: str
    status: Status = "not run"
    evidence: str = ""


@dataclass
class CheckResult:
    """Every row, then the cleanup's; ``interrupted`` when the steps were cancelled half-way."""

    venue: str
    symbol: str
    rows: list[Row]
    cleanup: Row = field(default_factory=lambda: Row("cleanup: account left flat, own orders cancelled"))
    interrupted: bool = False

    @property
    def passed(self) -> bool:
        return not self.interrupted and self.cleanup.status == "pass" and all(
            r.status in ("pass", "not supported") for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {"venue": self.venue, "symbol": self.symbol, "passed": self.passed, "interrupted": self.interrupted,
                "rows": [vars(r) for r in (*self.rows, self.cleanup)]}


class StepFailed(Exception):
    """A step that later steps depend on failed: the script stops, cleanup runs."""


class _Sink:
    """The check's private-stream sink: keeps every event, notes connects."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.connected = asyncio.Event()
        self.malformed = 0

    async def on_event(self, event: Any) -> None:
        self.events.append(event)

    async def on_connected(self, reconnect: bool) -> None:
        self.connected.set()

    async def on_disconnected(self, detail: str) -> None:
        self.connected.clear()

    def on_malformed(self, raw: str | bytes, error: Exception) -> None:
        self.malformed += 1


def _fmt(value: Decimal | None) -> str:
    return "-" if value is None else f"{value.normalize():f}"


def order_size(limits: MarketLimits, mark: Decimal) -> Decimal:
    """The smallest size the venue takes: ``min_contracts``, raised to reach ``min_notional`` (with a
    margin) at ``mark``, on the contract step."""
    size = limits.min_contracts
    if limits.min_notional is not None:
        needed = limits.min_notional * NOTIONAL_MARGIN / mark
        size = max(size, (needed / limits.contract_step).to_integral_value(ROUND_CEILING) * limits.contract_step)
    return size


def on_tick(price: Decimal, tick: Decimal) -> Decimal:
    """``price`` rounded to the venue's tick."""
    return (price / tick).to_integral_value(ROUND_HALF_UP) * tick


class Check:
    """One check run over a connected :class:`Driver`.

    :param driver: the venue's driver, not yet connected.
    :param config: the live config (keys; URLs when pointed elsewhere).
    :param symbol: unified symbol to trade (the venue's minimum size).
    :param budget_s: how long the venue may take to list what was done (REST lag); a row fails after it.
    :param progress: called with one line per step (the command prints it to stderr).
    """

    def __init__(self, driver: Driver, config: DriverConfig, symbol: str, *, budget_s: float = 10.0,
                 progress: Callable[[str], None] = lambda line: None) -> None:
        self.driver, self.config, self.symbol = driver, config, symbol
        self.budget_s = budget_s
        self.progress = progress
        self.result = CheckResult(driver.venue, symbol, [Row(g) for g in GUARANTEES])
        self.sink = _Sink()
        self.connected = False
        self.placed: list[StopLoss] = []  # triggers the check placed with an order id (cancelled at the end)
        self.foreign_stop_ids: set[str] = set()  # triggers resting before the check: never touched
        self._stream: asyncio.Task[None] | None = None

    def row(self, guarantee: str) -> Row:
        return next(r for r in self.result.rows if r.guarantee == guarantee)

    def record(self, guarantee: str, status: Status, evidence: str) -> None:
        row = self.row(guarantee)
        row.status, row.evidence = status, evidence
        self.progress(f"{status}: {guarantee} — {evidence}")

    # --- venue views --------------------------------------------------------------------------------

    async def snapshot(self) -> VenueSnapshot:
        return await self.driver.fetch_snapshot()

    def _position(self, snap: VenueSnapshot) -> Any:
        return next((p for p in snap.positions if p.symbol == self.symbol), None)

    def _own_stops(self, snap: VenueSnapshot) -> list[StopLoss]:
        return [s for s in snap.stops if s.symbol == self.symbol
                and (s.order_id is None or s.order_id not in self.foreign_stop_ids)]

    async def until(self, predicate: Callable[[VenueSnapshot], bool]) -> tuple[bool, VenueSnapshot]:
        """Take snapshots until ``predicate`` holds or the budget ends; the last snapshot too."""
        deadline = time.monotonic() + self.budget_s
        while True:
            snap = await self.snapshot()
            if predicate(snap) or time.monotonic() >= deadline:
                return predicate(snap), snap
            await asyncio.sleep(POLL_S)

    def _stops_text(self, snap: VenueSnapshot) -> str:
        stops = self._own_stops(snap)
        return ", ".join(f"{s.kind} at {_fmt(s.trigger_price)}" for s in stops) or "none"

    # --- the script ---------------------------------------------------------------------------------

    async def run(self) -> CheckResult:
        """The steps, then the cleanup (also after a failure or a cancellation, which is re-raised)."""
        try:
            await self._steps()
        except StepFailed:
            pass
        except asyncio.CancelledError:
            self.result.interrupted = True
            self.progress("interrupted: cleaning up")
            await asyncio.shield(self._cleanup_and_close())
            raise
        except Exception as exc:  # whatever broke the script, the cleanup still runs
            self.progress(f"stopped: {type(exc).__name__}: {exc}")
            self._fail_current(f"{type(exc).__name__}: {exc}")
        await self._cleanup_and_close()
        return self.result

    def _fail_current(self, evidence: str) -> None:
        row = next((r for r in self.result.rows if r.status == "not run"), None)
        if row is not None:
            row.status, row.evidence = "fail", evidence

    async def _cleanup_and_close(self) -> None:
        try:
            if self.connected:
                await self.cleanup()
        finally:
            await self._stop_stream()
            if self.connected:
                with contextlib.suppress(Exception):
                    await self.driver.disconnect()

    async def _steps(self) -> None:
        await self.driver.connect(self.config)
        self.connected = True
        limits = self.driver.market_limits(self.symbol)
        mark = await current_mark(self.driver, self.symbol, self.budget_s)
        size = order_size(limits, mark)
        self.record("markets loaded", "pass",
                    f"{self.symbol}: min {_fmt(limits.min_contracts)} contracts, step {_fmt(limits.contract_step)}, "
                    f"tick {_fmt(limits.price_tick)}, min notional {_fmt(limits.min_notional)}; mark {_fmt(mark)}; "
                    f"size {_fmt(size)}")

        self._stream = asyncio.create_task(self.driver.run_stream(self.sink), name="check-stream")
        try:
            await asyncio.wait_for(self.sink.connected.wait(), self.budget_s)
        except TimeoutError:
            self.record("private stream connected", "fail", f"not connected within {self.budget_s:g} s")
            raise StepFailed from None
        self.record("private stream connected", "pass", "connected")

        snap = await self.snapshot()
        self.foreign_stop_ids = {s.order_id for s in snap.stops if s.symbol == self.symbol and s.order_id}
        if self._position(snap) is not None:
            position = self._position(snap)
            self.record("account flat on the symbol before", "fail",
                        f"a {position.side} position of {_fmt(position.contracts)} is open: the check trades only "
                        f"on a flat symbol")
            raise StepFailed
        self.record("account flat on the symbol before", "pass",
                    f"no position; {len(self.foreign_stop_ids)} trigger(s) resting before the check (left alone)")

        await self._open(limits, mark, size)
        await self._moves(limits, mark, size)
        await self._close(size)

    async def _open(self, limits: MarketLimits, mark: Decimal, size: Decimal) -> None:
        stop_price = on_tick(mark * (1 - STOP_DISTANCE), limits.price_tick)
        intent = OrderIntent(account=self.config.account, venue=self.driver.venue, symbol=self.symbol, side="long",
                             contracts=size, stop_loss=stop_price, client_order_id=f"fw-k-{secrets.token_hex(6)}")
        raw = await self.driver.create_entry(intent)
        order = await self._filled(await self.driver.normalize_order(raw, intent))
        if order.filled != size:
            self.record("open with a stop-loss", "fail", f"order {order.id} {order.status}, filled "
                        f"{_fmt(order.filled)} of {_fmt(size)}")
            raise StepFailed
        if self.driver.supports("attached_stop_on_entry"):
            how = "attached to the entry"
            self.stop = StopLoss(venue=self.driver.venue, symbol=self.symbol, side="long", trigger_price=stop_price)
        else:
            how = "placed after the fill"
            self.stop = await self.driver.set_stop_loss(self.symbol, "long", order.filled, stop_price)
            self._placed(self.stop)
        self.record("open with a stop-loss", "pass",
                    f"order {order.id} ({intent.client_order_id}) filled {_fmt(order.filled)} at "
                    f"{_fmt(order.average)}; stop-loss at {_fmt(stop_price)} {how}")

        listed, snap = await self.until(lambda s: self._position(s) is not None)
        position = self._position(snap)
        if listed and position.side == "long" and position.contracts == size:
            self.record("venue lists the position", "pass",
                        f"long {_fmt(position.contracts)} at {_fmt(position.entry_price)}")
        else:
            self.record("venue lists the position", "fail", f"within {self.budget_s:g} s: " + (
                f"{position.side} {_fmt(position.contracts)}, expected long {_fmt(size)}" if position else
                "no position listed"))

        def has_stop(s: VenueSnapshot) -> bool:
            return any(st.kind == "stop_loss" and st.trigger_price == stop_price for st in self._own_stops(s))

        listed, snap = await self.until(has_stop)
        self.record("venue lists the stop-loss", "pass" if listed else "fail",
                    f"stop-loss at {_fmt(stop_price)} listed" if listed else
                    f"no stop-loss at {_fmt(stop_price)} listed within {self.budget_s:g} s "
                    f"(listed: {self._stops_text(snap)})")

        def opened_event() -> PositionUpdate | None:
            return next((e for e in self.sink.events if isinstance(e, PositionUpdate) and e.symbol == self.symbol
                         and e.side == "long" and e.contracts == size), None)

        seen = await self._wait(lambda: opened_event() is not None)
        event = opened_event()
        self.record("stream reports the position", "pass" if seen else "fail",
                    f"position frame long {_fmt(size)} at {_fmt(event.entry_price)}" if event else
                    f"no position frame within {self.budget_s:g} s ({len(self.sink.events)} events)")

    async def _moves(self, limits: MarketLimits, mark: Decimal, size: Decimal) -> None:
        new_price = on_tick(mark * (1 - MOVED_STOP_DISTANCE), limits.price_tick)
        old = self.stop.trigger_price
        self.stop = await self.driver.move_stop_loss(self.stop, new_price)
        self._placed(self.stop)
        self.record("move the stop-loss", "pass", f"{_fmt(old)} → {_fmt(self.stop.trigger_price)}")

        def moved(s: VenueSnapshot) -> bool:
            triggers = [st.trigger_price for st in self._own_stops(s) if st.kind == "stop_loss"]
            return triggers == [new_price]

        listed, snap = await self.until(moved)
        self.record("venue lists the moved stop-loss", "pass" if listed else "fail",
                    f"one stop-loss, at {_fmt(new_price)}" if listed else
                    f"expected one stop-loss at {_fmt(new_price)} within {self.budget_s:g} s; listed: "
                    f"{self._stops_text(snap)}")

        tp_price = on_tick(mark * (1 + TAKE_PROFIT_DISTANCE), limits.price_tick)
        take = await self.driver.set_take_profit(self.symbol, "long", size, tp_price)
        self._placed(take)
        self.record("set a take-profit", "pass", f"take-profit at {_fmt(take.trigger_price)}")
        listed, snap = await self.until(lambda s: any(
            st.kind == "take_profit" and st.trigger_price == tp_price for st in self._own_stops(s)))
        self.record("venue lists the take-profit", "pass" if listed else "fail",
                    f"take-profit at {_fmt(tp_price)} listed" if listed else
                    f"no take-profit at {_fmt(tp_price)} within {self.budget_s:g} s; listed: {self._stops_text(snap)}")

        await self._duplicate(limits, mark, size)

    def _carrying(self, snap: VenueSnapshot, client_order_id: str) -> list[Order]:
        return [o for o in snap.open_orders if o.client_order_id == client_order_id]

    async def _duplicate(self, limits: MarketLimits, mark: Decimal, size: Decimal) -> None:
        """The venue's answer to a client order id sent again while its order rests.

        The order is a reduce-only stop of the check's own position (``create_stop_loss_order``), its trigger
        at the distance of the first stop-loss, beyond the moved one, which fires first: it cannot open or
        grow a position, and nothing fills while it rests (re-sending the filled entry would open a second
        one on a venue that keeps ids unique among open orders only, Binance).  The same id again must be
        refused (:class:`DuplicateOrderId`: Binance -4116, Bybit 110072) with exactly one order of that id
        listed; the order is then cancelled and none with the id may be left.  A venue that takes the id
        again fails the row, and both orders are cancelled."""
        row = "duplicate client order id"
        client_id = f"fw-k-{secrets.token_hex(6)}"
        trigger = on_tick(mark * (1 - STOP_DISTANCE), limits.price_tick)
        try:
            first = await self.driver.create_stop_loss_order(self.symbol, "long", size, trigger, client_id)
            self._placed(first)
            placed, refused = [first], True
            try:
                again = await self.driver.create_stop_loss_order(self.symbol, "long", size, trigger, client_id)
            except DuplicateOrderId as exc:
                answer = f"the same id again refused: {exc}"
            else:
                self._placed(again)
                refused = False
                if again.order_id == first.order_id:  # not the venue's answer: the driver resolved it
                    answer = f"the same id again not refused: answered with order {again.order_id} itself"
                else:
                    placed.append(again)
                    answer = f"the same id again taken as a second order {again.order_id}"
            _, snap = await self.until(lambda s: len(self._carrying(s, client_id)) >= len(placed))
            carrying = [o.id for o in self._carrying(snap, client_id)]
            for stop in placed:
                await self.driver.cancel_stop_loss(stop)
                self.placed = [p for p in self.placed if p.order_id != stop.order_id]
            gone, snap = await self.until(lambda s: not self._carrying(s, client_id))
        except FrameworkError as exc:  # whatever rests is cancelled by the cleanup
            self.record(row, "fail", f"{type(exc).__name__}: {exc}")
            return
        left = [o.id for o in self._carrying(snap, client_id)]
        ok = refused and carrying == [first.order_id] and gone
        self.record(row, "pass" if ok else "fail",
                    f"reduce-only stop order {first.order_id} ({client_id}) at {_fmt(trigger)}; {answer}; listed "
                    f"with the id: {', '.join(carrying) or 'none'}; {len(placed)} cancelled, "
                    f"{'none left' if gone else 'still listed: ' + ', '.join(left)}")

    async def _close(self, size: Decimal) -> None:
        snap = await self.snapshot()
        position = self._position(snap)
        contracts = position.contracts if position is not None else size
        close_id = f"fw-k-{secrets.token_hex(6)}"
        order = await self._filled(await self.driver.close_position(self.symbol, "long", contracts, close_id))
        ok = order.reduce_only and order.side == "sell" and order.filled == contracts
        self.record("close reduce-only", "pass" if ok else "fail",
                    f"order {order.id} {order.side} {_fmt(order.filled)} of {_fmt(contracts)} at "
                    f"{_fmt(order.average)}, reduce-only {order.reduce_only}")
        flat, snap = await self.until(lambda s: self._position(s) is None)
        left = self._stops_text(snap)
        self.record("flat after the close", "pass" if flat else "fail",
                    f"no position; triggers still listed: {left}" if flat else
                    f"still listed after {self.budget_s:g} s: {self._position(snap)}")
        try:
            again = await self.driver.close_position(self.symbol, "long", contracts, f"fw-k-{secrets.token_hex(6)}")
        except PositionGone as exc:
            self.record("no-position answer", "pass", f"PositionGone: {exc}")
        except FrameworkError as exc:
            self.record("no-position answer", "fail", f"expected PositionGone, got {type(exc).__name__}: {exc}")
        else:
            self.record("no-position answer", "fail", f"a close with no position answered order {again.id} "
                        f"{again.status} filled {_fmt(again.filled)}")

    def _placed(self, stop: StopLoss) -> None:
        if stop.order_id and all(p.order_id != stop.order_id for p in self.placed):
            self.placed.append(stop)

    async def _filled(self, order: Order) -> Order:
        """The order once the venue says it is done (a market order may answer before its fill)."""
        deadline = time.monotonic() + self.budget_s
        while order.status == "open" and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            order = await self.driver.fetch_order(self.symbol, order_id=order.id)
        return order

    async def _wait(self, condition: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + self.budget_s
        while not condition():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True

    # --- cleanup ------------------------------------------------------------------------------------

    async def cleanup(self, rounds: int = 3) -> Row:
        """Cancel every trigger the check placed on the symbol (by id, listed or not, then whatever the venue
        lists beside those that rested before), close any position on it reduce-only, and see the venue
        list it flat with none of them left (``rounds`` passes, each within the budget)."""
        row = self.result.cleanup
        cancelled, closed = 0, Decimal(0)
        snap: VenueSnapshot | None = None
        for _ in range(rounds):
            try:
                while self.placed:
                    with contextlib.suppress(PositionGone):
                        cancelled += bool(await self.driver.cancel_stop_loss(self.placed[0]))
                    self.placed.pop(0)
                snap = await self.snapshot()
                for stop in self._own_stops(snap):
                    with contextlib.suppress(PositionGone):
                        cancelled += bool(await self.driver.cancel_stop_loss(stop))
                position = self._position(snap)
                if position is not None:
                    with contextlib.suppress(PositionGone):
                        await self.driver.close_position(self.symbol, position.side, position.contracts,
                                                         f"fw-k-{secrets.token_hex(6)}")
                        closed += position.contracts
                done, snap = await self.until(lambda s: self._position(s) is None and not self._own_stops(s))
            except Exception as exc:  # keep trying: the account must be left flat
                row.evidence = f"{type(exc).__name__}: {exc}"
                continue
            if done:
                row.status = "pass"
                row.evidence = (f"flat on {self.symbol}; {cancelled} trigger(s) cancelled, {_fmt(closed)} contracts "
                                f"closed by the cleanup")
                self.progress(f"cleanup: {row.evidence}")
                return row
        row.status = "fail"
        row.evidence = (f"after {rounds} rounds: position {self._position(snap) if snap else 'unknown'}, triggers "
                        f"{self._stops_text(snap) if snap else 'unknown'}; {row.evidence}")
        self.progress(f"cleanup FAILED: {row.evidence}")
        return row

    async def _stop_stream(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            await asyncio.gather(self._stream, return_exceptions=True)
            self._stream = None
