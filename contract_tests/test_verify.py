"""Contract 5: verify_position asks several sources within a budget; REST lag is not absence (docs/incidents.md I-3)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from framework.errors import OrderRejected
from framework.models import Order

pytestmark = pytest.mark.asyncio(loop_scope="session")

#: budget for the "nothing can tell" case: short, the answer must still be ``unknown``
SHORT_BUDGET_MS = 600


@pytest.mark.hooks("create_entry", "normalize_order", "verify_position")
@pytest.mark.parametrize("side", ["long", "short"])
async def test_filled_entry_is_confirmed_while_rest_lags(contract, side):
    contract.faults.rest_position_lag_ms = 30_000
    intent = contract.intent(side, "20")
    order = await contract.driver.normalize_order(await contract.driver.create_entry(intent), intent)
    verification = await contract.driver.verify_position(intent, order, 5_000, contract.book)
    if verification.outcome != "confirmed" or verification.contracts != Decimal(20):
        contract.fail(f"{side} entry of 20 filled at {contract.t()} while REST positions lag 30 s; verify_position "
                      f"answered {verification.outcome} ({verification!r}); expected confirmed with 20 contracts "
                      f"from the stream or the order status (I-3)")


@pytest.mark.hooks("create_entry", "verify_position")
async def test_rejected_entry_is_reported_absent(contract):
    contract.faults.reject_next_orders = 1
    intent = contract.intent("long", "20")
    try:
        raw = await contract.driver.create_entry(intent)
    except OrderRejected as rejected:
        # Nothing to normalise: the order as the driver's caller knows it, rejected by the venue.
        order = Order(venue=contract.driver.venue, symbol=contract.symbol, id=rejected.order_id or
                      intent.client_order_id, client_order_id=intent.client_order_id, side=intent.order_side,
                      amount=intent.contracts, status="rejected")
    else:
        order = await contract.driver.normalize_order(raw, intent)
    verification = await contract.driver.verify_position(intent, order, 3_000, contract.book)
    if verification.outcome != "absent":
        contract.fail(f"the venue rejected entry {intent.client_order_id} (nothing filled); verify_position "
                      f"answered {verification.outcome} ({verification!r}); expected absent")
    if contract.venue_position().contracts != 0:
        contract.fail("the venue holds a position after a rejected entry (test set-up problem)")


@pytest.mark.hooks("verify_position")
async def test_nothing_can_tell_within_the_budget_is_unknown_not_absent(contract):
    # An order nobody has seen: no stream update, the venue does not know the id, REST shows nothing.
    contract.faults.rest_position_lag_ms = 30_000
    intent = contract.intent("long", "20")
    venue_ids = [o.id for o in contract.require_venue().orders(contract.account, open_only=False)]
    unseen_id = str(int(max(venue_ids, default="1000000000")) + 1000)
    order = Order(venue=contract.driver.venue, symbol=contract.symbol, id=unseen_id,
                  client_order_id=intent.client_order_id, side="buy", amount=Decimal(20), status="open")
    started = time.monotonic()
    verification = await contract.driver.verify_position(intent, order, SHORT_BUDGET_MS, contract.book)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    if verification.outcome != "unknown":
        contract.fail(f"entry {unseen_id} is unknown to every source (stream, order status, REST); "
                      f"verify_position answered {verification.outcome} ({verification!r}) within "
                      f"{SHORT_BUDGET_MS} ms; expected unknown — not absent (I-3)")
    if elapsed_ms > SHORT_BUDGET_MS * 3 + 5_000:  # the budget holds: not one 10 s client timeout per source
        contract.fail(f"verify_position took {elapsed_ms} ms for a {SHORT_BUDGET_MS} ms budget")
