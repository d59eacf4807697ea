"""Contracts 3 and 7: a minimal order response is completed from the venue, never guessed, and a close or
rollback after it goes in the right direction and leaves the venue flat (docs/incidents.md I-3, I-4)."""

from __future__ import annotations

import pytest

from contract_tests.support import fresh_client_order_id
from framework.engine.closing import close_on_venue
from framework.errors import OrderIncomplete, OrderNotFound, PositionGone, VenueError
from framework.models import Order, close_side

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _minimal_responses(contract) -> None:
    """Ask the venue to answer order creation with ids only (Bybit always does)."""
    contract.faults.minimal_order_response = True


def _check_complete(contract, order, venue_order, what: str) -> None:
    if not isinstance(order, Order):
        contract.fail(f"{what}: normalize_order returned {type(order).__name__} {order!r}, not an Order")
    if order.side not in ("buy", "sell"):
        contract.fail(f"{what}: normalize_order returned side {order.side!r}; only buy/sell may come out")
    problems = []
    if order.side != venue_order.side:
        problems.append(f"side {order.side!r} but the venue's order is {venue_order.side!r}")
    if order.amount != venue_order.amount:
        problems.append(f"amount {order.amount} but the venue's order is {venue_order.amount}")
    if order.filled != venue_order.filled:
        problems.append(f"filled {order.filled} but the venue filled {venue_order.filled}")
    expected_status = {"filled": "closed", "new": "open", "partially_filled": "open", "canceled": "canceled",
                       "rejected": "rejected", "expired": "expired"}.get(venue_order.status)
    if expected_status and order.status != expected_status:
        problems.append(f"status {order.status!r} but the venue's order is {venue_order.status!r}")
    if problems:
        contract.fail(f"{what}: normalize_order guessed instead of asking the venue: {'; '.join(problems)}")


async def _minimal_entry(contract, side):
    _minimal_responses(contract)
    intent = contract.intent(side, "20")
    raw = await contract.driver.create_entry(intent)
    venue_order = contract.require_venue().get_order(contract.account, contract.symbol,
                                                     client_order_id=intent.client_order_id)
    return intent, raw, venue_order


@pytest.mark.hooks("create_entry", "normalize_order")
@pytest.mark.parametrize("side", ["long", "short"])
async def test_minimal_response_normalises_to_the_venue_order(contract, side):
    intent, raw, venue_order = await _minimal_entry(contract, side)
    what = f"minimal response to a {side} entry ({venue_order.side} {venue_order.amount})"
    try:
        order = await contract.driver.normalize_order(raw, intent)
    except OrderIncomplete:
        return  # failing loudly is allowed; guessing is not
    _check_complete(contract, order, venue_order, what)


@pytest.mark.hooks("create_entry", "normalize_order")
async def test_minimal_response_without_intent_is_not_guessed(contract):
    intent, raw, venue_order = await _minimal_entry(contract, "short")
    what = f"minimal response to a short entry ({venue_order.side} {venue_order.amount}), normalised without intent"
    try:
        order = await contract.driver.normalize_order(raw, None)
    except OrderIncomplete:
        return
    _check_complete(contract, order, venue_order, what)


@pytest.mark.hooks("create_entry", "normalize_order")
async def test_intent_is_never_used_to_fill_a_minimal_response(contract):
    # The venue sold; the intent handed over says long.  Only the venue's answer may decide the side.
    intent, raw, venue_order = await _minimal_entry(contract, "short")
    misleading = intent.model_copy(update={"side": "long", "stop_loss": contract.stop_price("long")})
    what = "minimal response to a short entry normalised with a long intent"
    try:
        order = await contract.driver.normalize_order(raw, misleading)
    except OrderIncomplete:
        return
    _check_complete(contract, order, venue_order, what)


@pytest.mark.hooks("normalize_order")
async def test_minimal_response_for_an_unknown_order_raises_order_incomplete(contract):
    intent, raw, venue_order = await _minimal_entry(contract, "long")
    unknown = "7" + venue_order.id
    forged = {**raw, "id": unknown, "clientOrderId": None, "side": None, "amount": None, "filled": None,
              "status": None}
    info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
    forged["info"] = {k: (unknown if k.lower() in ("orderid", "id") else None if "clientorder" in k.lower()
                          or "orderlinkid" in k.lower() else v) for k, v in info.items()}
    try:
        order = await contract.driver.normalize_order(forged, None)
    except OrderIncomplete:
        return
    except Exception as exc:
        contract.fail(f"minimal response naming an order the venue does not know: normalize_order raised "
                      f"{exc!r}; expected OrderIncomplete")
    contract.fail(f"minimal response naming an order the venue does not know: normalize_order returned "
                  f"{order!r} instead of raising OrderIncomplete")


# --- contract 7: close / rollback after a minimal entry goes in the right direction -----------------------


async def _close_after_minimal_entry(contract, side, kind: str) -> None:
    intent, raw, venue_order = await _minimal_entry(contract, side)
    venue = contract.require_venue()
    try:
        order = await contract.driver.normalize_order(raw, intent)
    except OrderIncomplete:
        order = None
    filled = order.filled if order is not None else venue_order.filled
    cid = fresh_client_order_id(kind)
    what = (f"{side} of {filled} opened with a minimal response; "
            f"{'rollback' if kind == 'r' else 'close'} (close_position, client id {cid})")
    try:
        closing = await contract.driver.close_position(contract.symbol, side, filled, cid)
    except Exception as exc:
        closing = exc
    wrong = [r for r in venue.truth.wrong_side_orders() if r.symbol == contract.symbol]
    if wrong:
        contract.fail(f"{what} sent {wrong[0].side} on a {wrong[0].position_side_at_submit} position: the wrong "
                      f"direction (expected {close_side(side)}); venue answer {closing!r}")
    position = contract.venue_position()
    if position.contracts != 0:
        contract.fail(f"{what} left the venue holding {position.side} {position.contracts} contracts "
                      f"(close_position answered {closing!r})")
    if isinstance(closing, Exception):
        contract.fail(f"{what} flattened the venue but raised {closing!r}")
    if closing.side != close_side(side) or closing.filled != filled:
        contract.fail(f"{what} returned {closing!r}; expected a {close_side(side)} order filled {filled}")


@pytest.mark.hooks("create_entry", "normalize_order", "close_position")
@pytest.mark.parametrize("side", ["long", "short"])
async def test_close_after_minimal_entry_goes_the_right_way_and_leaves_the_venue_flat(contract, side):
    await _close_after_minimal_entry(contract, side, "c")


@pytest.mark.hooks("create_entry", "normalize_order", "close_position")
@pytest.mark.parametrize("side", ["long", "short"])
async def test_rollback_while_rest_lags_goes_the_right_way_and_leaves_the_venue_flat(contract, side):
    contract.faults.rest_position_lag_ms = 30_000
    await _close_after_minimal_entry(contract, side, "r")


@pytest.mark.hooks("close_position")
async def test_close_of_a_flat_position_raises_position_gone(contract):
    opened = await contract.open("long")
    contract.require_venue().manual_close(contract.account, contract.symbol)
    await contract.expect_one_closure("manual close on the venue")
    await contract.expect_position_gone(
        "close_position (reduce-only)",
        lambda: contract.driver.close_position(contract.symbol, "long", opened.order.filled,
                                               fresh_client_order_id("c")),
    )
    if contract.require_venue().truth.wrong_side_orders():
        contract.fail("close_position on a flat position sent an order that could open one: "
                      f"{contract.require_venue().truth.wrong_side_orders()!r}")


@pytest.mark.hooks("fetch_order")
async def test_fetch_order_by_client_id_returns_the_complete_order(contract):
    intent, raw, venue_order = await _minimal_entry(contract, "short")
    try:
        order = await contract.driver.fetch_order(contract.symbol, None, intent.client_order_id)
    except Exception as exc:
        contract.fail(f"fetch_order by client order id {intent.client_order_id} raised {exc!r}")
    _check_complete(contract, order, venue_order, f"fetch_order({intent.client_order_id})")
    try:
        missing = await contract.driver.fetch_order(contract.symbol, None, fresh_client_order_id("o"))
    except OrderNotFound:
        return
    except Exception as exc:
        contract.fail(f"fetch_order of an unknown client order id raised {exc!r}, expected OrderNotFound")
    contract.fail(f"fetch_order of an unknown client order id returned {missing!r}, expected OrderNotFound")


@pytest.mark.hooks("fetch_snapshot")
async def test_snapshot_costs_one_call_per_kind_whatever_the_number_of_positions(contract):
    await contract.open("long")
    venue = contract.require_venue()
    venue.place_order(contract.account, contract.barrier_symbol, "sell", amount=venue.instruments[
        contract.barrier_symbol].min_amount * 2)
    before = contract.rest_call_snapshot()
    snapshot = await contract.driver.fetch_snapshot()
    after = contract.rest_call_snapshot()
    made = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    sides = {p.symbol: (p.side, p.contracts) for p in snapshot.positions}
    expected = {p.symbol: (p.side, p.contracts) for p in venue.positions(contract.account)}
    if sides != expected:
        contract.fail(f"fetch_snapshot listed positions {sides}, the venue holds {expected}")
    if made and sum(made.values()) > 3:
        contract.fail(f"fetch_snapshot of {len(expected)} positions made {sum(made.values())} REST calls "
                      f"({made}); one per kind is the contract")
    if made and snapshot.rest_calls != sum(made.values()):
        contract.fail(f"fetch_snapshot says rest_calls={snapshot.rest_calls}, the venue counted {made}")
    if not any(s.trigger_price == contract.book.get(contract.symbol).stop_price for s in snapshot.stops
               if s.symbol == contract.symbol):
        contract.fail(f"fetch_snapshot lists stops {snapshot.stops!r}; the resting stop at "
                      f"{contract.book.get(contract.symbol).stop_price} is missing")


@pytest.mark.hooks("close_position", "on_alert")
async def test_close_refused_by_a_server_error_is_never_reported_as_closed(contract):
    await contract.open("long")
    contract.faults.http_error_status = 503
    contract.faults.http_error_next = 1
    try:
        closed = await close_on_venue(contract.book, contract.driver, contract.store, contract.pm, contract.symbol)
    except PositionGone as exc:
        contract.fail(f"close_position answered by HTTP 503 raised {exc!r}: a server error is not 'position gone'")
    except VenueError:
        closed = False
    held_on_venue = contract.venue_position().contracts
    if closed and held_on_venue:
        contract.fail(f"close_position answered by HTTP 503 reported the position closed while the venue still "
                      f"holds {held_on_venue} contracts: a success for an action that did nothing")
    if not closed:
        if held_on_venue == 0:
            # the venue executed it after all: the closure must still arrive exactly once
            await contract.expect_one_closure("reduce-only close answered by HTTP 503")
            return
        alerted = [a for a in contract.journal.hooks["on_alert"] if a.level == "critical"]
        if not contract.book.holds(contract.symbol) or not alerted:
            contract.fail(f"close_position answered by HTTP 503 failed; the book holds "
                          f"{contract.book.get(contract.symbol)!r} and critical alerts were {alerted!r}")
