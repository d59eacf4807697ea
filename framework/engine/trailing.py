"""Trailing stops run by the engine: the stop follows the best mark price, only ever tightening.

A position whose trailing stop the venue runs itself (``BookPosition.native_trail``, placed by the opener
when the spec fits the venue's limits: :func:`place_native_trail`) is left to the venue.

Fed with :class:`~framework.models.MarkPrice` ticks (``driver.watch_mark_prices`` with this manager as
sink).  A move uses the driver's ``move_stop_loss`` (amend in place, or new-before-cancel: no window
without a stop, docs/incidents.md I-5), is rate-limited, and never happens for a symbol the book no longer
holds.  ``WouldTriggerImmediately`` → the old stop still rests; a reduce-only close through the one close
path only when a fresh venue snapshot's mark is through the refused stop and near the price the trail
followed; ``PositionGone`` → ``book.close``.  A mark tick more than ``mark_jump_band_pct`` from the last
accepted one (for the same position) is held and alerted until ``mark_confirm_ticks`` ticks in a row
confirm the new level.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import pluggy

from framework.driver import Driver
from framework.engine.book import BookPosition, PositionBook
from framework.engine.broadcast import alert
from framework.engine.closing import cancel_quietly, close_on_venue
from framework.engine.protection import Protector
from framework.engine.settings import EngineSettings
from framework.errors import PositionGone, VenueError, WouldTriggerImmediately
from framework.models import MarkPrice, StreamEvent, now_ms
from framework.store import Store

log = logging.getLogger(__name__)


@dataclass
class _MarkGate:
    """The last accepted mark price of a symbol and the ticks held since it jumped out of the band."""

    accepted: Decimal
    owner: tuple[str | None, int] | None  # the position it guards: a later position starts a new reference
    held: list[Decimal] = field(default_factory=list)


@dataclass
class _Trail:
    position_key: tuple[str | None, int]  # a new position of the same symbol starts a new trail
    activated: bool = False
    best: Decimal | None = None
    last_move_ms: int = 0


def proposed_stop(position: BookPosition, best: Decimal) -> Decimal:
    """The stop ``callback_rate`` percent behind ``best`` (below for a long, above for a short)."""
    assert position.trailing is not None
    rate = position.trailing.callback_rate / 100
    return best * (1 - rate) if position.side == "long" else best * (1 + rate)


async def place_native_trail(
    driver: Driver, pm: pluggy.PluginManager, settings: EngineSettings, position: BookPosition,
    reference_price: Decimal,
) -> None:
    """Have the venue run ``position``'s trailing stop (``position.native_trail``) when the settings allow it,
    the driver declares ``native_trailing_stop`` and the spec fits its limits.  The fixed stop-loss stays
    beside it as the floor, so the position is protected whatever becomes of the trail.  When
    ``position.native_trail`` stays ``None`` the engine trails (a refusal is alerted as a warning: the fixed
    stop still protects the position).

    :param reference_price: the mark price now (quote currency), where a trail without activation starts.
    :raises PositionGone: the venue says the position is gone.
    """
    trailing = position.trailing
    if trailing is None or not settings.native_trailing_stop or not driver.native_trailing_fits(trailing):
        return
    try:
        position.native_trail = await driver.set_trailing_stop(
            position.symbol, position.side, position.contracts, trailing, reference_price
        )
    except PositionGone:
        raise
    except VenueError as exc:
        await alert(pm, "warning", f"the venue's trailing stop was not placed ({exc}); the engine trails instead",
                    venue=driver.venue, symbol=position.symbol)


class TrailingManager:
    """Moves the stops of positions that carry a :class:`~framework.models.TrailingSpec`.

    :ivar moves: stop moves made, per symbol.
    """

    def __init__(
        self, book: PositionBook, driver: Driver, store: Store, pm: pluggy.PluginManager,
        protector: Protector, settings: EngineSettings | None = None, clock: Callable[[], int] = now_ms,
    ) -> None:
        self.book = book
        self.driver = driver
        self.store = store
        self.pm = pm
        self.protector = protector
        self.settings = settings or EngineSettings()
        self.clock = clock
        self._trails: dict[str, _Trail] = {}
        self._marks: dict[str, _MarkGate] = {}
        self.moves: Counter[str] = Counter()
        self.held_ticks: Counter[str] = Counter()

    # StreamSink: mark prices arrive through on_event; the rest is the private stream's business.
    async def on_event(self, event: StreamEvent) -> None:
        if isinstance(event, MarkPrice):
            try:
                await self.on_mark(event)
            except Exception:  # a tick must never kill the mark-price stream
                log.exception("%s %s: trailing tick failed", self.book.venue, event.symbol)

    async def on_connected(self, reconnect: bool) -> None:
        return None

    async def on_disconnected(self, detail: str) -> None:
        return None

    def on_malformed(self, raw: str | bytes, error: Exception) -> None:
        log.warning("%s: malformed mark-price frame: %s", self.book.venue, error)

    def gate_price(self, symbol: str) -> Decimal | None:
        """The last mark price of ``symbol`` accepted (``None`` before its first tick)."""
        gate = self._marks.get(symbol)
        return gate.accepted if gate is not None else None

    async def on_mark_price(self, symbol: str, price: Decimal) -> None:
        """Feed one mark price by hand (replay, tests): same as a :class:`MarkPrice` tick."""
        await self.on_mark(MarkPrice(venue=self.book.venue, symbol=symbol, price=price, timestamp=now_ms()))

    async def on_mark(self, tick: MarkPrice) -> None:
        """Follow one mark-price tick; move the stop when it tightens enough and not too often.

        Ticks of one symbol are handled one at a time: two moves from the same resting stop would each
        place a new stop and cancel the same old one, leaving a duplicate behind.
        """
        if not await self._accept(tick):
            return
        async with self.book.stop_lock(tick.symbol):
            await self._follow(tick)

    async def _accept(self, tick: MarkPrice) -> bool:
        """Whether to act on ``tick``: within ``mark_jump_band_pct`` of the last accepted price, or the
        ``mark_confirm_ticks``-th tick in a row at a new level (one absurd tick never moves a stop)."""
        position = self.book.get(tick.symbol)
        owner = None if position is None else (position.intent_id, position.opened_at)
        gate = self._marks.get(tick.symbol)
        if gate is None or gate.owner != owner:
            # a position's first tick is its reference: the last one of a closed position says nothing about it
            self._marks[tick.symbol] = _MarkGate(tick.price, owner)
            return True
        band = self.settings.mark_jump_band_pct / 100

        def near(a: Decimal, b: Decimal) -> bool:
            return abs(a - b) <= band * b

        if near(tick.price, gate.accepted):
            gate.accepted, gate.held = tick.price, []
            return True
        if gate.held and not near(tick.price, gate.held[0]):
            gate.held = []  # not the same new level either: start over from this tick
        gate.held.append(tick.price)
        if len(gate.held) >= self.settings.mark_confirm_ticks:
            gate.accepted, gate.held = tick.price, []
            return True
        self.held_ticks[tick.symbol] += 1
        if len(gate.held) == 1:
            await alert(self.pm, "warning", f"mark price {tick.price} is more than "
                        f"{self.settings.mark_jump_band_pct} % from the last accepted {gate.accepted}: held until "
                        "confirmed", venue=self.book.venue, symbol=tick.symbol)
        return False

    async def _follow(self, tick: MarkPrice) -> None:
        position = self.book.get(tick.symbol)
        if position is None or position.trailing is None or position.stop is None or not position.engine_trails:
            self._trails.pop(tick.symbol, None)
            return
        key = (position.intent_id, position.opened_at)
        trail = self._trails.get(tick.symbol)
        if trail is None or trail.position_key != key:
            trail = self._trails[tick.symbol] = _Trail(key)
        long = position.side == "long"
        activation = position.trailing.activation_price
        if not trail.activated:
            if activation is not None and (tick.price < activation if long else tick.price > activation):
                return
            trail.activated = True
        if trail.best is None or (tick.price > trail.best if long else tick.price < trail.best):
            trail.best = tick.price
        candidate = proposed_stop(position, trail.best)
        current = position.stop.trigger_price
        if (candidate <= current) if long else (candidate >= current):
            return  # never loosen
        if abs(candidate - current) * 100 / current < self.settings.trailing_min_change_pct:
            return
        if self.clock() - trail.last_move_ms < self.settings.trailing_min_interval_ms:
            return
        trail.last_move_ms = self.clock()
        await self._move(tick.symbol, candidate, trail.best)

    async def _crossed_on_venue(self, symbol: str, side: str, trigger_price: Decimal, best: Decimal) -> bool:
        """Whether the venue's own mark price (a fresh snapshot) is through ``trigger_price`` for a ``side``
        position *and* within the band of ``best``, the price the trail followed: the trail really wants out
        now.  A venue mark far from what the mark stream said means the stream is not to be trusted;
        unknown (snapshot failed, no mark) is not crossed either."""
        try:
            snapshot = await self.driver.fetch_snapshot()
        except VenueError as exc:
            log.warning("%s %s: no fresh price to confirm a crossed stop: %s", self.book.venue, symbol, exc)
            return False
        mark = next((p.mark_price for p in snapshot.positions if p.symbol == symbol), None)
        if mark is None or abs(mark - best) > self.settings.mark_jump_band_pct / 100 * best:
            return False
        return mark <= trigger_price if side == "long" else mark >= trigger_price

    async def _move(self, symbol: str, trigger_price: Decimal, best: Decimal) -> None:
        position = self.book.get(symbol)
        if position is None or position.stop is None:  # liveness before the move
            return
        old = position.stop
        try:
            new = await self.driver.move_stop_loss(old, trigger_price)
        except PositionGone:
            await self.book.close(symbol, "position_gone", source="error")
            return
        except WouldTriggerImmediately:  # the old stop still rests: close only on a fresh price's word
            if await self._crossed_on_venue(symbol, position.side, trigger_price, best):
                await close_on_venue(self.book, self.driver, self.store, self.pm, symbol)
            else:
                await alert(self.pm, "warning", f"stop move to {trigger_price} refused as crossed, but the venue's "
                            "mark price does not confirm it: old stop kept", venue=self.book.venue, symbol=symbol)
            return
        except VenueError as exc:
            log.warning("%s %s: stop move to %s failed, old stop still resting: %s", self.book.venue, symbol,
                        trigger_price, exc)
            return
        if not self.book.holds(symbol):  # closed during the move: leave nothing behind (I-5)
            await cancel_quietly(self.driver, new)
            return
        self.moves[symbol] += 1
        position.trailed = True
        await self.protector.record(symbol, new, previous=old.trigger_price)
