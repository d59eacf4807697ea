"""``Venue.balance`` reads running sums; after any sequence of fills, mark moves, closes and leverage
changes they must equal a from-scratch recomputation over the open positions, exactly."""

from __future__ import annotations

import decimal
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from framework.venue import Venue, VenueReject

from .conftest import BTC, XRP, FakeClock

ACCOUNTS = ("alice", "bob")
EXACT = decimal.Context(prec=200)

# Each step is a tuple the driver below interprets; sizes are whole steps of each instrument.
account = st.sampled_from(ACCOUNTS)
symbol = st.sampled_from((XRP, BTC))
side = st.sampled_from(("buy", "sell"))
steps = st.lists(
    st.one_of(
        st.tuples(st.just("market"), account, symbol, side, st.integers(1, 400), st.booleans()),
        st.tuples(st.just("stop"), account, symbol, st.integers(1, 400), st.integers(50, 150)),
        st.tuples(st.just("mark"), symbol, st.integers(5_000, 20_000)),
        st.tuples(st.just("close"), account, symbol, st.sampled_from(("manual", "liquidate", "adl"))),
        st.tuples(st.just("leverage"), account, symbol, st.sampled_from((1, 3, 7, 10, 20, 33, 75))),
    ),
    max_size=40,
)


def new_venue() -> Venue:
    venue = Venue("binance", seed=7, clock=FakeClock())
    for name in ACCOUNTS:
        venue.add_account(name, api_key=f"k-{name}", api_secret="s", balance=Decimal("100000"))
    venue.set_mark_price(XRP, Decimal("1.0000"))
    venue.set_mark_price(BTC, Decimal("40000"))
    return venue


def unit(venue: Venue, symbol: str) -> Decimal:
    return venue.instrument(symbol).step_size


def apply(venue: Venue, step: tuple) -> None:
    kind, *args = step
    try:
        if kind == "market":
            name, sym, order_side, size, reduce_only = args
            venue.place_order(name, sym, order_side, amount=size * unit(venue, sym), reduce_only=reduce_only)
        elif kind == "stop":  # a reduce-only stop at pct % of the mark: fires on a later mark move
            name, sym, steps_, pct = args
            position = venue.position(name, sym)
            if position.side is None:
                return
            tick = venue.instrument(sym).tick_size
            trigger = tick * int(venue.mark_price(sym) * pct / 100 / tick)
            venue.place_order(
                name,
                sym,
                "sell" if position.side == "long" else "buy",
                type="stop_market",
                amount=steps_ * unit(venue, sym),
                reduce_only=True,
                trigger_price=trigger,
            )
        elif kind == "mark":  # mark in ‱ of the start price
            sym, permyriad = args
            start = Decimal("1.0000") if sym == XRP else Decimal("40000")
            venue.set_mark_price(sym, start * permyriad / 10_000)
        elif kind == "close":
            name, sym, how = args
            {"manual": venue.manual_close, "liquidate": venue.liquidate, "adl": venue.adl}[how](name, sym)
        else:
            name, sym, leverage = args
            venue.set_leverage(name, sym, leverage)
    except VenueReject:
        pass  # refused (no margin, nothing to close, would trigger at once): the state is unchanged


def from_scratch(venue: Venue, name: str) -> dict[str, Decimal]:
    """The balance recomputed over the open positions (exact sums, one rounding at the end)."""
    positions = venue.positions(name)
    if not positions:
        return {"total": venue.wallet(name), "available": venue.wallet(name), "unrealized_pnl": Decimal(0)}
    at_mark = at_entry = Decimal(0)
    notional_by_leverage: dict[int, Decimal] = {}
    for p in positions:
        sign = 1 if p.side == "long" else -1
        at_mark = EXACT.add(at_mark, EXACT.multiply(sign * p.contracts, venue.mark_price(p.symbol)))
        at_entry = EXACT.add(at_entry, EXACT.multiply(sign * p.contracts, p.entry_price))
        leverage = venue.leverage(name, p.symbol)
        notional_by_leverage[leverage] = EXACT.add(
            notional_by_leverage.get(leverage, Decimal(0)), EXACT.multiply(p.contracts, p.entry_price)
        )
    unrealized = at_mark - at_entry
    used = Decimal(0)
    for leverage, notional in sorted(notional_by_leverage.items()):
        used += notional / leverage
    wallet = venue.wallet(name)
    return {"total": wallet, "available": wallet + unrealized - used, "unrealized_pnl": unrealized}


def per_position(venue: Venue, name: str) -> dict[str, Decimal]:
    """The textbook per-position formula (equal up to the last of 28 digits)."""
    positions = venue.positions(name)
    unrealized = sum((p.unrealized_pnl for p in positions), Decimal(0))
    used = sum((p.contracts * p.entry_price / venue.leverage(name, p.symbol) for p in positions), Decimal(0))
    wallet = venue.wallet(name)
    return {"total": wallet, "available": wallet + unrealized - used, "unrealized_pnl": unrealized}


@settings(max_examples=150, deadline=None, derandomize=True)
@given(steps)
def test_incremental_balance_equals_a_from_scratch_recomputation(schedule: list[tuple]) -> None:
    venue = new_venue()
    for step in schedule:
        apply(venue, step)
        for name in ACCOUNTS:
            balance = venue.balance(name)
            assert balance == from_scratch(venue, name), step
            textbook = per_position(venue, name)
            for field in balance:
                assert abs(balance[field] - textbook[field]) <= Decimal("1e-18"), (step, field)


def test_balance_after_a_fill_mark_move_and_leverage_change() -> None:
    """Worked numbers: long 100 XRP at 1.0000, mark 1.1000, leverage 10 then 4."""
    venue = new_venue()
    venue.place_order("alice", XRP, "buy", amount=Decimal(100))
    fee = Decimal("100") * Decimal("1.0000") * Decimal("0.0005")
    venue.set_mark_price(XRP, Decimal("1.1000"))
    assert venue.balance("alice") == {
        "total": Decimal("100000") - fee,
        "available": Decimal("100000") - fee + Decimal("10") - Decimal("10"),
        "unrealized_pnl": Decimal("10"),
    }
    venue.set_leverage("alice", XRP, 4)
    assert venue.balance("alice")["available"] == Decimal("100000") - fee + Decimal("10") - Decimal("25")
    venue.manual_close("alice", XRP)
    closed = venue.balance("alice")
    assert closed["unrealized_pnl"] == 0 and closed["available"] == closed["total"] == venue.wallet("alice")
    assert venue.balance("bob") == {
        "total": Decimal("100000"),
        "available": Decimal("100000"),
        "unrealized_pnl": Decimal(0),
    }
