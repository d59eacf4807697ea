"""The venue's ledger: time, accounts and API keys, instruments, mark prices, positions, balances (running sums
kept exact), fills and the event queue.  :class:`~framework.venue.orders.Orders` and
:class:`~framework.venue.triggers.Triggers` build on it; the whole is :class:`framework.venue.Venue`.

Single-threaded: every method is synchronous, called from the asyncio loop; listeners are called
synchronously, in order, once the state change is complete.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from collections.abc import Callable, ItemsView
from decimal import Decimal

from framework.models import now_ms
from framework.venue.faults import Faults
from framework.venue.model import (
    DEFAULT_LEVERAGE,
    EXACT,
    HISTORY_KEEP_MS,
    MAKER_FEE_RATE,
    TAKER_FEE_RATE,
    ZERO,
    Account,
    BalanceEvent,
    Contribution,
    FillEvent,
    Instrument,
    Listener,
    OrderEvent,
    PositionEvent,
    VenueEvent,
    VenueOrder,
    VenuePosition,
    VenueReject,
    default_instruments,
    signed_contracts,
)
from framework.venue.prices import PricePoint
from framework.venue.truth import Closure, GroundTruth


class Ledger:
    """Accounts, instruments, marks, positions and balances of the simulated venue, and its event queue
    (the parameters are :class:`framework.venue.Venue`'s)."""

    def __init__(
        self,
        name: str,
        instruments: list[Instrument] | None = None,
        seed: int = 0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.name = name
        self.instruments: dict[str, Instrument] = {i.symbol: i for i in instruments or default_instruments()}
        self.rng = random.Random(seed)
        self.clock = clock
        self.faults = Faults()
        self.truth = GroundTruth()
        self._last_ts = 0
        self._accounts: dict[str, Account] = {}
        self._marks: dict[str, Decimal] = {}
        self._mark_history: dict[str, collections.deque[PricePoint]] = {}
        self._orders: dict[str, VenueOrder] = {}
        self._client_ids: dict[str, set[str]] = {}
        #: ``"all"``: a client order id is never reused; ``"open"``: it is unique among open orders only
        #: (a façade sets this for a venue that allows reuse, e.g. Binance)
        self.client_id_scope = "all"
        self._positions: dict[tuple[str, str], VenuePosition] = {}
        self._contributions: dict[tuple[str, str], Contribution] = {}
        self._position_keys_by_symbol: dict[str, list[tuple[str, str]]] = {}
        self._orders_by_symbol: dict[str, list[VenueOrder]] = {}
        self._history: dict[tuple[str, str], list[tuple[int, VenuePosition]]] = {}
        self._listeners: list[Listener] = []
        self._outbox: list[VenueEvent] = []
        self._dispatching = False
        self._next_order_id = 1_000_000_001
        self._next_exec_id = 1
        self._seq = 0

    def __repr__(self) -> str:
        return f"Venue({self.name!r}, accounts={list(self._accounts)}, symbols={list(self.instruments)})"

    def tick(self) -> int:
        """A fresh timestamp: ``max(clock(), last + 1)``, strictly increasing per venue."""
        self._last_ts = max(self.clock(), self._last_ts + 1)
        return self._last_ts

    def now(self) -> int:
        """The current time without consuming a timestamp: ``max(clock(), last handed out)``."""
        return max(self.clock(), self._last_ts)

    def add_account(
        self, name: str, api_key: str, api_secret: str, balance: Decimal = Decimal("10000")
    ) -> None:
        """Create an account with a USDT wallet ``balance``.

        :raises ValueError: the name or the API key is taken.
        """
        if name in self._accounts:
            raise ValueError(f"account {name!r} exists")
        if self.account_for_key(api_key) is not None:
            raise ValueError(f"API key already belongs to another account (account {name!r})")
        self._accounts[name] = Account(name, api_key, api_secret, Decimal(balance))
        self._client_ids[name] = set()

    def account_for_key(self, api_key: str) -> str | None:
        """The account owning ``api_key``, or ``None``."""
        return next((a.name for a in self._accounts.values() if a.api_key == api_key), None)

    def account_secret(self, account: str) -> str:
        """The API secret, for façades checking request signatures.  :raises KeyError: unknown account."""
        return self._account(account).api_secret

    def instrument(self, symbol: str) -> Instrument:
        """:raises VenueReject: ``unknown_symbol``."""
        try:
            return self.instruments[symbol]
        except KeyError:
            raise VenueReject("unknown_symbol", f"unknown symbol {symbol!r}") from None

    def instrument_by_id(self, native_id: str) -> Instrument:
        """Look up by native id (``XRPUSDT``).  :raises VenueReject: ``unknown_symbol``."""
        for instrument in self.instruments.values():
            if instrument.id == native_id:
                return instrument
        raise VenueReject("unknown_symbol", f"unknown symbol {native_id!r}")

    def set_leverage(self, account: str, symbol: str, leverage: int) -> None:
        """:raises VenueReject: ``invalid_order`` outside 1 … the instrument's max leverage."""
        instrument = self.instrument(symbol)
        if not 1 <= leverage <= instrument.max_leverage:
            raise VenueReject("invalid_order", f"leverage {leverage} outside 1..{instrument.max_leverage}")
        self._account(account).leverage[symbol] = leverage
        if (account, symbol) in self._positions:
            self._rebook(self._positions[account, symbol])

    def leverage(self, account: str, symbol: str) -> int:
        return self._account(account).leverage.get(symbol, DEFAULT_LEVERAGE)

    def mark_price(self, symbol: str) -> Decimal:
        """:raises VenueReject: ``unknown_symbol``; :raises LookupError: no mark price set yet."""
        self.instrument(symbol)
        try:
            return self._marks[symbol]
        except KeyError:
            raise LookupError(f"no mark price for {symbol} yet: call set_mark_price first") from None

    def mark_history(self, symbol: str) -> list[PricePoint]:
        """Every mark price set for ``symbol`` (the last :data:`MARK_HISTORY_KEEP`), oldest first, stamped
        with venue time: the price path the façades serve as klines.

        :raises VenueReject: ``unknown_symbol``.
        """
        self.instrument(symbol)
        return list(self._mark_history.get(symbol, ()))

    def position(self, account: str, symbol: str) -> VenuePosition:
        """A snapshot of the position, flat (``contracts == 0``) when none is open."""
        self._account(account)
        self.instrument(symbol)
        return self._snapshot(self._position(account, symbol))

    def positions(self, account: str) -> list[VenuePosition]:
        """Open positions of ``account`` (contracts > 0)."""
        self._account(account)
        return [self._snapshot(p) for (a, _), p in self._positions.items() if a == account and p.is_open]

    def position_items(self) -> ItemsView[tuple[str, str], VenuePosition]:
        """Every position record by ``(account, symbol)``, flat ones included: the live records, not
        snapshots (for the ground-truth observer, which reads them after every change; never mutate)."""
        return self._positions.items()

    def visible_positions(self, account: str, lag_ms: int) -> list[VenuePosition]:
        """Open positions as they were at ``now() - lag_ms`` (a lagging REST endpoint, docs/incidents.md I-3/I-4).

        Lags beyond :data:`HISTORY_KEEP_MS` see the oldest state kept.
        """
        self._account(account)
        if lag_ms <= 0:
            return self.positions(account)
        cutoff = self.now() - lag_ms
        visible = []
        for (owner, _), history in self._history.items():
            if owner != account:
                continue
            seen = None
            for ts, snapshot in history:
                if ts > cutoff:
                    break
                seen = snapshot
            if seen is not None and seen.is_open:
                visible.append(dataclasses.replace(seen))
        return visible

    def balance(self, account: str) -> dict[str, Decimal]:
        """``{"total": wallet balance, "available": free margin, "unrealized_pnl"}`` in quote currency.

        Free margin is wallet + unrealized PnL − Σ contracts·entry / leverage.  O(1) in the number of
        positions: it reads running sums kept up to date on every fill, mark price and leverage change.
        """
        acc = self._account(account)
        unrealized = used = ZERO
        if acc.open_positions:
            unrealized = acc.signed_at_mark - acc.signed_at_entry
            for leverage, notional in sorted(acc.entry_notional_by_leverage.items()):
                used += notional / leverage
        return {
            "total": acc.wallet,
            "available": acc.wallet + unrealized - used,
            "unrealized_pnl": unrealized,
        }

    def wallet(self, account: str) -> Decimal:
        """The wallet balance (fees and realized PnL, no unrealized PnL) in quote currency.

        :raises KeyError: unknown account.
        """
        return self._account(account).wallet

    def settle_funding(self, symbol: str, rate: Decimal) -> dict[str, Decimal]:
        """Funding at ``rate`` (0.0001 = 0.01 %) on every open ``symbol`` position, valued at the mark: a long
        pays ``contracts × mark × rate``, a short receives it (the reverse when ``rate`` < 0).  Only wallets
        change: no order, no fill, no position event; one :class:`BalanceEvent` (``reason="funding"``) per
        account charged.

        :returns: ``{account: amount credited}`` (negative when paid), quote currency.
        """
        ts = self.tick()
        mark = self._marks[symbol]
        credited: dict[str, Decimal] = {}
        for key in self._position_keys_by_symbol.get(symbol, []):
            position = self._positions[key]
            if not position.is_open:
                continue
            amount = -signed_contracts(position) * mark * rate
            self._accounts[position.account].wallet += amount
            credited[position.account] = credited.get(position.account, ZERO) + amount
        for account, amount in credited.items():
            self._outbox.append(BalanceEvent(account, self.balance(account), ts, "funding", amount))
        self._after_change()
        return credited

    def is_protected(self, account: str, symbol: str) -> bool:
        """True when an open position has an attached stop-loss / trailing stop, or an open reduce-only /
        close-position ``stop_market`` / ``trailing_stop_market`` order on its closing side."""
        position = self._position(account, symbol)
        if not position.is_open:
            return False
        if position.stop_loss is not None or position.trailing_stop is not None:
            return True
        closing = "sell" if position.side == "long" else "buy"
        return any(
            o.account == account
            and o.symbol == symbol
            and o.is_open
            and o.side == closing
            and o.type in ("stop_market", "trailing_stop_market")
            and (o.reduce_only or o.close_position)
            for o in self._orders_by_symbol.get(symbol, ())
        )

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event; returns a function that unsubscribes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _account(self, account: str) -> Account:
        try:
            return self._accounts[account]
        except KeyError:
            raise KeyError(f"unknown account {account!r}") from None

    def _position(self, account: str, symbol: str) -> VenuePosition:
        key = (account, symbol)
        if key not in self._positions:
            self._positions[key] = VenuePosition(account, symbol)
            self._position_keys_by_symbol.setdefault(symbol, []).append(key)
        return self._positions[key]

    def _unrealized(self, position: VenuePosition) -> Decimal:
        mark = self._marks.get(position.symbol)
        if not position.is_open or mark is None:
            return ZERO
        direction = 1 if position.side == "long" else -1
        return (mark - position.entry_price) * position.contracts * direction

    def _rebook(self, position: VenuePosition) -> None:
        """Replace ``position``'s contribution to its account's running sums by its current one.

        Call after every change to its size, side or entry price, its symbol's mark or its leverage.
        """
        key = (position.account, position.symbol)
        account = self._accounts[position.account]
        old = self._contributions.pop(key, None)
        if old is not None:
            account.open_positions -= 1
            self._add_contribution(account, old, EXACT.minus)
        if not position.is_open:
            return
        signed = signed_contracts(position)
        mark = self._marks.get(position.symbol)
        new = Contribution(
            leverage=self.leverage(position.account, position.symbol),
            entry_notional=EXACT.multiply(position.contracts, position.entry_price),
            signed_at_mark=ZERO if mark is None else EXACT.multiply(signed, mark),
            signed_at_entry=ZERO if mark is None else EXACT.multiply(signed, position.entry_price),
        )
        self._contributions[key] = new
        account.open_positions += 1
        self._add_contribution(account, new, EXACT.plus)

    @staticmethod
    def _add_contribution(
        account: Account, contribution: Contribution, sign: Callable[[Decimal], Decimal]
    ) -> None:
        """Add (``sign`` = ``EXACT.plus``) or remove (``EXACT.minus``) ``contribution``, exactly."""
        by_leverage = account.entry_notional_by_leverage
        notional = EXACT.add(by_leverage.get(contribution.leverage, ZERO), sign(contribution.entry_notional))
        if notional == 0:  # no open position left at this leverage
            by_leverage.pop(contribution.leverage, None)
        else:
            by_leverage[contribution.leverage] = notional
        account.signed_at_mark = EXACT.add(account.signed_at_mark, sign(contribution.signed_at_mark))
        account.signed_at_entry = EXACT.add(account.signed_at_entry, sign(contribution.signed_at_entry))

    def _snapshot(self, position: VenuePosition) -> VenuePosition:
        return dataclasses.replace(
            position,
            mark_price=self._marks.get(position.symbol, ZERO),
            unrealized_pnl=self._unrealized(position),
        )

    def _check_margin(
        self,
        account: str,
        symbol: str,
        position: VenuePosition,
        side: str,
        amount: Decimal | None,
        mark: Decimal,
    ) -> None:
        assert amount is not None
        current = signed_contracts(position)
        new = current + (amount if side == "buy" else -amount)
        flipped = current != 0 and new != 0 and (new > 0) != (current > 0)
        added = abs(new) if flipped else max(ZERO, abs(new) - abs(current))
        required = added * mark / self.leverage(account, symbol) + amount * mark * TAKER_FEE_RATE
        available = self.balance(account)["available"]
        if added > 0 and required > available:
            raise VenueReject(
                "insufficient_margin",
                f"margin is insufficient: needs {required:.4f}, available {available:.4f}",
            )

    def _fill(
        self, order: VenueOrder, amount: Decimal, price: Decimal, ts: int, maker: bool = False, final: bool = True
    ) -> None:
        """One execution of ``order``; ``final``: the order is filled by it (else ``partially_filled``)."""
        account = self._accounts[order.account]
        position = self._position(order.account, order.symbol)
        before_side, before_contracts = position.side, position.contracts
        current = signed_contracts(position)
        signed = amount if order.side == "buy" else -amount
        new = current + signed
        fee = amount * price * (MAKER_FEE_RATE if maker else TAKER_FEE_RATE)
        realized = ZERO
        if current == 0 or (current > 0) == (signed > 0):
            position.entry_price = (abs(current) * position.entry_price + amount * price) / abs(new)
            if current == 0:
                position.opened_ms = ts
                position.realized_pnl = ZERO
        else:
            closing = min(amount, abs(current))
            realized = (price - position.entry_price) * closing * (1 if current > 0 else -1)
            position.realized_pnl += realized
        position.contracts = abs(new)
        position.side = None if new == 0 else ("long" if new > 0 else "short")
        account.wallet += realized - fee
        self._rebook(position)

        if before_contracts > 0 and position.side != before_side:  # went flat or flipped
            assert before_side is not None
            self.truth.record_closure(
                Closure(
                    order.account,
                    order.symbol,
                    before_side,
                    before_contracts,
                    price,
                    order.origin,
                    position.realized_pnl,
                    ts,
                )
            )
            position.stop_loss = position.take_profit = position.trailing_stop = None
            position.trailing_active_price = position.trailing_best = None
            if position.side is None:
                position.entry_price = ZERO
                position.opened_ms = None
            else:  # flipped: the remainder opened a new position at this price
                position.entry_price = price
                position.opened_ms = ts
                position.realized_pnl = ZERO
            self._rebook(position)

        order.average = (
            price
            if order.filled == 0 or order.average is None
            else (order.average * order.filled + price * amount) / (order.filled + amount)
        )
        order.filled += amount
        order.realized_pnl += realized
        order.fee += fee
        order.status = "filled" if final else "partially_filled"
        order.updated_ms = ts
        fill = FillEvent(
            order.account,
            order.symbol,
            order.id,
            order.client_order_id,
            order.side,
            amount,
            price,
            fee,
            realized,
            order.origin,
            str(self._next_exec_id),
            ts,
            maker,
        )
        self._next_exec_id += 1
        self.truth.record_fill(fill)
        self._outbox.append(fill)
        self._outbox.append(OrderEvent(dataclasses.replace(order), ts))
        self._position_changed(position, ts)
        self._outbox.append(BalanceEvent(order.account, self.balance(order.account), ts))

    def _position_changed(self, position: VenuePosition, ts: int) -> None:
        self._seq += 1
        position.seq = self._seq
        position.updated_ms = ts
        snapshot = self._snapshot(position)
        history = self._history.setdefault((position.account, position.symbol), [])
        history.append((ts, snapshot))
        while len(history) > 1 and history[1][0] <= ts - HISTORY_KEEP_MS:
            history.pop(0)
        self._outbox.append(PositionEvent(dataclasses.replace(snapshot), ts))

    def _after_change(self) -> None:
        """Update the ground truth, then deliver queued events (re-entrant calls queue behind)."""
        self.truth.observe(self, self._last_ts)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._outbox:
                event = self._outbox.pop(0)
                for listener in list(self._listeners):
                    listener(event)
        finally:
            self._dispatching = False
