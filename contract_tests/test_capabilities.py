"""Contract 9: capability declarations are honest.  A declared capability that does not work is a failure;
an undeclared one is skipped with a reason naming the plugin and the capability."""

from __future__ import annotations

from decimal import Decimal

import pytest

from framework.models import CAPABILITIES, DriverInfo, TrailingSpec

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _require(contract, capability: str) -> None:
    if not contract.driver.supports(capability):
        pytest.skip(f"{contract.plugin} does not declare capability {capability!r}")


@pytest.mark.hooks("driver_info")
async def test_driver_info_names_the_venue_and_only_known_capabilities(contract):
    info = contract.driver.info
    if not isinstance(info, DriverInfo):
        contract.fail(f"driver_info returned {info!r}, not a DriverInfo")
    venue = contract.harness.venue
    if not info.venue or (venue is not None and info.venue != venue.name):
        contract.fail(f"driver_info says venue {info.venue!r}; its harness runs {venue!r}")
    unknown = set(info.capabilities) - set(CAPABILITIES)
    if unknown:
        contract.fail(f"driver_info declares unknown capabilities {sorted(unknown)}")


@pytest.mark.capability("attached_stop_on_entry")
@pytest.mark.hooks("create_entry", "driver_info")
async def test_attached_stop_on_entry_protects_from_the_first_fill(contract):
    _require(contract, "attached_stop_on_entry")
    intent = contract.intent("long", "20")
    before = contract.unprotected_total_ms()
    await contract.driver.create_entry(intent)
    position = contract.venue_position()
    if position.contracts == 0:
        contract.fail("create_entry filled nothing (test set-up problem)")
    if position.stop_loss != intent.stop_loss:
        contract.fail(f"declares attached_stop_on_entry, but after create_entry the venue position's stop is "
                      f"{position.stop_loss} (intent's stop {intent.stop_loss})")
    unprotected = contract.unprotected_total_ms() - before
    if unprotected:
        contract.fail(f"declares attached_stop_on_entry, yet the position was unprotected for {unprotected} ms")


@pytest.mark.capability("stop_before_entry")
@pytest.mark.hooks("set_stop_loss", "create_entry", "driver_info")
async def test_stop_before_entry_leaves_no_naked_window(contract):
    _require(contract, "stop_before_entry")
    intent = contract.intent("short", "20")
    try:
        stop = await contract.driver.set_stop_loss(contract.symbol, "short", intent.contracts, intent.stop_loss)
    except Exception as exc:
        contract.fail(f"declares stop_before_entry, but set_stop_loss with no position open raised {exc!r}")
    before = contract.unprotected_total_ms()
    order = await contract.driver.normalize_order(await contract.driver.create_entry(intent), intent)
    unprotected = contract.unprotected_total_ms() - before
    if order.filled != intent.contracts or contract.venue_position().contracts != intent.contracts:
        contract.fail("create_entry after a stop placed before it did not open the position")
    if unprotected:
        contract.fail(f"declares stop_before_entry, yet the entry was unprotected for {unprotected} ms "
                      f"(stop {stop!r})")


@pytest.mark.capability("amend_stop_in_place")
@pytest.mark.hooks("move_stop_loss", "driver_info")
async def test_amend_stop_in_place_moves_without_new_orders(contract):
    _require(contract, "amend_stop_in_place")
    opened = await contract.open("long", stop_pct="3")
    venue = contract.require_venue()
    submitted = len(venue.truth.orders)
    trigger = contract.stop_price("long", 2)
    moved = await contract.driver.move_stop_loss(opened.stop, trigger)
    new_orders = venue.truth.orders[submitted:]
    if new_orders:
        contract.fail(f"declares amend_stop_in_place, but move_stop_loss submitted orders {new_orders!r}")
    position = contract.venue_position()
    if position.stop_loss != trigger or moved.trigger_price != trigger:
        contract.fail(f"declares amend_stop_in_place; after moving to {trigger} the venue stop is "
                      f"{position.stop_loss} and move_stop_loss returned {moved!r}")


@pytest.mark.capability("native_trailing_stop")
@pytest.mark.hooks("set_trailing_stop", "on_position_closed", "driver_info")
@pytest.mark.parametrize("side", ["long", "short"])
async def test_native_trailing_stop_is_run_by_the_venue_beside_the_fixed_stop(contract, side):
    _require(contract, "native_trailing_stop")
    limits = contract.driver.info.trailing_limits
    spec = TrailingSpec(callback_rate=Decimal(1))
    if limits is None or not limits.fits(spec):
        contract.fail(f"declares native_trailing_stop; its trailing_limits {limits!r} do not admit a 1 % callback")
    opened = await contract.open(side, stop_pct="5")
    start = contract.mark()
    venue = contract.require_venue()
    try:
        trail = await contract.driver.set_trailing_stop(contract.symbol, side, opened.verification.contracts, spec,
                                                        start)
    except Exception as exc:
        contract.fail(f"declares native_trailing_stop; set_trailing_stop raised {exc!r}")
        raise  # unreachable: fail() raises
    position = contract.venue_position()
    trailing_orders = [o for o in contract.open_stops_on_venue() if o.type == "trailing_stop_market"]
    if trail.kind != "trailing_stop" or (position.trailing_stop is None and not trailing_orders):
        contract.fail(f"set_trailing_stop returned {trail!r} and left no trailing stop on the venue")
    fixed = [o for o in contract.open_stops_on_venue() if o.type == "stop_market"]
    if position.stop_loss is None and not fixed:
        contract.fail("set_trailing_stop removed the fixed stop-loss: the trail must rest beside it")
    long = side == "long"
    contract.move_mark(contract.price_at(3, up=long))
    contract.move_mark(contract.price_at(2, up=not long))
    if not venue.truth.closures_for(contract.account, contract.symbol):
        contract.fail(f"declares native_trailing_stop; the mark went {start} -> 3 % better -> 2 % back and the "
                      f"venue's trailing stop did not close the {side} position")
    await contract.expect_one_closure("native trailing stop", reason="trailing_stop")
