"""Contracts 4 and 6: stops never depend on REST position visibility, are never placed for a position the
venue reports gone, and moving one never leaves the venue without a resting stop (docs/incidents.md I-1, I-4, I-5)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from contract_tests.support import fresh_client_order_id
from framework.engine.broadcast import broadcast
from framework.errors import DuplicateOrderId, PositionGone, WouldTriggerImmediately
from framework.models import StopEvent, StopLoss, now_ms

pytestmark = pytest.mark.asyncio(loop_scope="session")

MOVES = 12


def _resting_trigger(contract, side) -> set[Decimal]:
    """Stop triggers protecting the position on the venue: attached, and closing-side stop orders."""
    position = contract.venue_position()
    triggers = {position.stop_loss} if position.stop_loss is not None else set()
    closing = "sell" if side == "long" else "buy"
    triggers |= {o.trigger_price for o in contract.open_stops_on_venue()
                 if o.side == closing and o.type == "stop_market" and (o.reduce_only or o.close_position)}
    return triggers


# --- contract 4: set_stop_loss right after a fill, while REST positions lag -----------------------------


@pytest.mark.hooks("create_entry", "normalize_order", "set_stop_loss")
@pytest.mark.parametrize("side", ["long", "short"])
async def test_stop_loss_right_after_fill_succeeds_while_rest_lags(contract, side):
    contract.faults.rest_position_lag_ms = 30_000
    intent = contract.intent(side, "20", stop_pct="3")
    raw = await contract.driver.create_entry(intent)
    order = await contract.driver.normalize_order(raw, intent)
    trigger = contract.stop_price(side, 2)
    calls = contract.rest_call_snapshot()
    try:
        stop = await contract.driver.set_stop_loss(contract.symbol, side, order.filled, trigger)
    except Exception as exc:
        contract.fail(f"{side} entry filled at {contract.t()} while REST positions lag 30 s; set_stop_loss at "
                      f"{trigger} raised {exc!r} (a stop must not depend on REST position visibility, I-4)")
    looked_up = {k: v - calls.get(k, 0) for k, v in contract.rest_call_snapshot().items()
                 if "position" in k.lower() and "trading-stop" not in k.lower() and v != calls.get(k, 0)}
    if looked_up:
        contract.fail(f"set_stop_loss looked the position up over REST first ({looked_up}): I-4")
    if stop.trigger_price != trigger:
        contract.fail(f"set_stop_loss at {trigger} returned a stop at {stop.trigger_price}")
    if trigger not in _resting_trigger(contract, side):
        contract.fail(f"set_stop_loss at {trigger} returned {stop!r}, but no such stop rests on the venue "
                      f"(resting: {_resting_trigger(contract, side)})")


@pytest.mark.hooks("set_stop_loss", "on_position_closed")
async def test_stop_loss_on_a_closed_position_raises_position_gone_after_at_most_one_call(contract):
    opened = await contract.open("long")
    venue = contract.require_venue()
    venue.manual_close(contract.account, contract.symbol)
    await contract.expect_one_closure("manual close on the venue")
    closed_at = contract.last_venue_closure().ts
    trigger = contract.stop_price("long", 2)
    await contract.expect_position_gone(
        f"set_stop_loss at {trigger}",
        lambda: contract.driver.set_stop_loss(contract.symbol, "long", opened.order.filled, trigger),
    )
    _no_stop_placed_since(contract, closed_at, "set_stop_loss")


def _no_stop_placed_since(contract, closed_at: int, action: str) -> None:
    venue = contract.require_venue()
    placed = [r for r in venue.truth.orders_for_closed_positions() if r.symbol == contract.symbol]
    left = [o for o in contract.open_stops_on_venue() if o.created_ms > closed_at]
    if placed or left:
        contract.fail(f"closed on the venue at {contract.t(closed_at)}; {action} still placed a stop for the "
                      f"closed position: {placed or left!r} (I-5)")


@pytest.mark.hooks("set_stop_loss")
async def test_stop_loss_already_crossed_raises_would_trigger_immediately(contract):
    intent = contract.intent("long", "20", stop_pct="3")
    order = await contract.driver.normalize_order(await contract.driver.create_entry(intent), intent)
    crossed = contract.price_at(1, up=True)  # a long's stop above the mark
    try:
        result = await contract.driver.set_stop_loss(contract.symbol, "long", order.filled, crossed)
    except WouldTriggerImmediately:
        return
    except Exception as exc:
        contract.fail(f"set_stop_loss at {crossed}, above the mark {contract.mark()} for a long, raised {exc!r}; "
                      f"expected WouldTriggerImmediately")
    contract.fail(f"set_stop_loss at {crossed}, above the mark {contract.mark()} for a long, returned {result!r}; "
                  f"expected WouldTriggerImmediately")


# --- contract 6: moving a stop -----------------------------------------------------------------------------


async def _move(contract, stop: StopLoss, trigger: Decimal) -> StopLoss:
    """Move the stop as the trailing manager does, announcing it on ``on_stop_moved``."""
    started = now_ms()
    moved = await contract.driver.move_stop_loss(stop, trigger)
    await broadcast(contract.pm, "on_stop_moved", event=StopEvent(
        account=contract.account, venue=contract.driver.venue, symbol=stop.symbol, side=stop.side,
        previous=stop.trigger_price, current=moved.trigger_price, order_id=moved.order_id,
        unprotected_ms=0, timestamp=started,
    ))
    contract.book.set_stop(stop.symbol, moved)
    return moved


@pytest.mark.hooks("move_stop_loss", "set_stop_loss", "on_stop_moved")
@pytest.mark.parametrize("side", ["long", "short"])
async def test_moving_a_stop_never_leaves_the_venue_unprotected(contract, side):
    opened = await contract.open(side, stop_pct="3")
    stop = opened.stop
    before = contract.unprotected_total_ms()
    for step in range(MOVES):
        # trail: each move 0.1 % closer to the mark, staying on the losing side
        trigger = contract.stop_price(side, Decimal("2.5") - Decimal(step) / 10)
        try:
            stop = await _move(contract, stop, trigger)
        except Exception as exc:
            contract.fail(f"move {step + 1} of the {side} stop to {trigger} raised {exc!r}")
        resting = _resting_trigger(contract, side)
        if trigger not in resting:
            contract.fail(f"move {step + 1}: move_stop_loss to {trigger} returned {stop!r} but the venue's resting "
                          f"stops are {resting}")
    unprotected = contract.unprotected_total_ms() - before
    if unprotected > 0:
        intervals = contract.require_venue().truth.unprotected_intervals(contract.account, contract.symbol)
        contract.fail(f"{MOVES} stop moves left the {side} position without a resting stop for {unprotected} ms on "
                      f"the venue (intervals {intervals[-3:]}): cancel-then-create? (I-5)")
    moved = [e for e in contract.journal.hooks["on_stop_moved"] if e.symbol == contract.symbol]
    if len(moved) != MOVES:
        contract.fail(f"on_stop_moved fired {len(moved)} times for {MOVES} moves")


@pytest.mark.hooks("move_stop_loss", "on_position_closed")
async def test_moving_the_stop_of_a_closed_position_raises_position_gone(contract):
    opened = await contract.open("long", stop_pct="3")
    venue = contract.require_venue()
    venue.manual_close(contract.account, contract.symbol)
    await contract.expect_one_closure("manual close on the venue")
    closed_at = contract.last_venue_closure().ts
    trigger = contract.stop_price("long", 2)
    await contract.expect_position_gone(
        f"move_stop_loss to {trigger}", lambda: contract.driver.move_stop_loss(opened.stop, trigger)
    )
    _no_stop_placed_since(contract, closed_at, "move_stop_loss")


@pytest.mark.hooks("move_stop_loss")
async def test_moving_the_stop_of_a_position_closed_unseen_by_the_stream_places_no_stop(contract):
    # I-5: the position closed inside the move and no frame said so (closing frame 30 s late).
    opened = await contract.open("long", stop_pct="3")
    contract.faults.delay_closing_frames_ms = 30_000
    venue = contract.require_venue()
    venue.manual_close(contract.account, contract.symbol)
    closed_at = contract.last_venue_closure().ts
    trigger = contract.stop_price("long", 2)
    try:
        result = await contract.driver.move_stop_loss(opened.stop, trigger)
    except PositionGone:
        result = None
    except Exception as exc:
        result = exc
    _no_stop_placed_since(contract, closed_at, f"move_stop_loss to {trigger} (answered {result!r})")
    if isinstance(result, StopLoss):
        contract.fail(f"closed on the venue at {contract.t(closed_at)}; move_stop_loss to {trigger} reported "
                      f"success ({result!r}) but no stop rests for a flat position: a success that did nothing")


@pytest.mark.hooks("move_stop_loss")
async def test_moving_a_stop_past_the_mark_raises_would_trigger_immediately_and_keeps_the_old_one(contract):
    opened = await contract.open("long", stop_pct="3")
    crossed = contract.price_at(1, up=True)
    try:
        result = await contract.driver.move_stop_loss(opened.stop, crossed)
    except WouldTriggerImmediately:
        result = None
    except Exception as exc:
        result = exc
    resting = _resting_trigger(contract, "long")
    if result is not None:
        contract.fail(f"move_stop_loss of a long's stop to {crossed}, above the mark {contract.mark()}, answered "
                      f"{result!r}; expected WouldTriggerImmediately")
    if opened.stop.trigger_price not in resting:
        contract.fail(f"move_stop_loss to a crossed {crossed} raised WouldTriggerImmediately but the old stop at "
                      f"{opened.stop.trigger_price} no longer rests (resting: {resting})")


@pytest.mark.hooks("cancel_stop_loss")
async def test_cancel_stop_loss_removes_it_and_reports_a_missing_one(contract):
    opened = await contract.open("long", stop_pct="3")
    try:
        removed = await contract.driver.cancel_stop_loss(opened.stop)
    except Exception as exc:
        contract.fail(f"cancel_stop_loss of the resting stop {opened.stop!r} raised {exc!r}")
    if removed is not True or opened.stop.trigger_price in _resting_trigger(contract, "long"):
        contract.fail(f"cancel_stop_loss returned {removed!r}; the venue still rests "
                      f"{_resting_trigger(contract, 'long')}")
    venue = contract.require_venue()
    venue.manual_close(contract.account, contract.symbol)
    await contract.expect_one_closure("manual close on the venue")
    try:
        again = await contract.driver.cancel_stop_loss(opened.stop)
    except PositionGone:
        return
    except Exception as exc:
        contract.fail(f"cancel_stop_loss of a stop the venue no longer has raised {exc!r}; expected False")
    if again is not False:
        contract.fail(f"cancel_stop_loss of a stop the venue no longer has returned {again!r}; expected False")



# --- a stop-loss order of its own, with the caller's client order id (``framework check``'s duplicate row) ---


@pytest.mark.hooks("create_stop_loss_order", "cancel_stop_loss", "fetch_snapshot")
@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_stop_loss_order_rests_with_its_client_id_and_the_same_id_again_is_refused(contract, side):
    """The order rests reduce-only beside the position's stop, carrying the caller's id; the same id again is
    the venue's duplicate refusal (``DuplicateOrderId`` naming the venue, symbol and id, with the venue's
    code), never a second order nor the first one returned;
    cancelled, nothing of it is left and nothing traded."""
    opened = await contract.open(side, stop_pct="3")
    venue = contract.require_venue()
    fills_before, contracts = len(venue.truth.fills), opened.verification.contracts
    client_id, trigger = fresh_client_order_id("k"), contract.stop_price(side, 5)
    closing = "sell" if side == "long" else "buy"

    def carrying_the_id() -> list:
        return [o for o in venue.orders(contract.account, contract.symbol, open_only=True) if
                o.client_order_id == client_id]

    stop = await contract.driver.create_stop_loss_order(contract.symbol, side, contracts, trigger, client_id)
    [resting] = carrying_the_id() or [None]
    if resting is None or (resting.id, resting.side, resting.trigger_price, resting.amount, resting.reduce_only) != (
            stop.order_id, closing, trigger, contracts, True) or (stop.side, stop.kind, stop.contracts) != (
            side, "stop_loss", contracts):
        contract.fail(f"create_stop_loss_order({side}, {contracts} at {trigger}, {client_id}) returned {stop!r}; "
                      f"the venue rests {carrying_the_id()!r}: expected one reduce-only {closing} stop order")
    listed = await contract.driver.fetch_snapshot()
    if [o.id for o in listed.open_orders if o.client_order_id == client_id] != [stop.order_id] or not any(
            s.order_id == stop.order_id and s.trigger_price == trigger for s in listed.stops):
        contract.fail(f"fetch_snapshot does not list the stop order {stop.order_id} ({client_id}) at {trigger}: "
                      f"{listed.open_orders!r}")
    try:
        again = await contract.driver.create_stop_loss_order(contract.symbol, side, contracts, trigger, client_id)
    except DuplicateOrderId as exc:
        where = (exc.venue, exc.symbol, exc.order_id)
        if where != (contract.driver.venue, contract.symbol, client_id) or exc.code is None or not exc.message:
            contract.fail(f"DuplicateOrderId for {client_id} names {where} with code {exc.code!r}; expected "
                          f"{(contract.driver.venue, contract.symbol, client_id)} and the venue's error code")
    except Exception as exc:
        contract.fail(f"the same client order id {client_id} again, while its order rests, raised {exc!r}; "
                      f"expected DuplicateOrderId (the venue's refusal)")
    else:
        contract.fail(f"the same client order id {client_id} again, while its order rests, answered {again!r}; "
                      f"expected DuplicateOrderId (the venue's refusal)")
    if [o.id for o in carrying_the_id()] != [stop.order_id]:
        contract.fail(f"after the duplicate, the venue rests {carrying_the_id()!r} with id {client_id}")
    if await contract.driver.cancel_stop_loss(stop) is not True or carrying_the_id():
        contract.fail(f"cancel_stop_loss({stop!r}) left {carrying_the_id()!r}")
    if len(venue.truth.fills) != fills_before or contract.venue_position().contracts != contracts:
        contract.fail(f"placing, refusing and cancelling a stop order traded: fills {venue.truth.fills[fills_before:]}")
