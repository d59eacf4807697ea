"""``Model.trusted``: the hot paths' construction without a second validation (a snapshot of 10,000 positions)
gives what the validating constructor gives, and ``in_range`` admits only what ``Price`` admits."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ConfigDict, TypeAdapter, ValidationError

from framework.models import MAX_AMOUNT, Model, Order, OrderIntent, Position, Price, StopLoss, VenueSnapshot, in_range

SYMBOL = "XRP/USDT:USDT"
POSITION = {"account": "a", "venue": "binance", "symbol": SYMBOL, "side": "short", "contracts": Decimal(3),
            "entry_price": Decimal("0.5"), "mark_price": None, "unrealized_pnl": Decimal("-0.25"), "updated_at": 7}
ORDER = {"venue": "binance", "symbol": SYMBOL, "id": "1", "client_order_id": None, "side": "buy", "type": "market",
         "amount": Decimal(2), "filled": Decimal(0), "average": None, "status": "open", "reduce_only": True,
         "trigger_price": Decimal("0.6"), "timestamp": 1}
STOP = {"venue": "binance", "symbol": SYMBOL, "side": "short", "kind": "stop_loss", "trigger_price": Decimal("0.6"),
        "order_id": "1", "contracts": None, "placed_at": 9}


@pytest.mark.parametrize(("model", "values"), [(Position, POSITION), (Order, ORDER), (StopLoss, STOP)])
def test_trusted_is_what_the_validating_constructor_gives(model, values):
    trusted, validated = model.trusted(values), model(**values)
    assert trusted == validated and hash(trusted) == hash(validated)
    assert repr(trusted) == repr(validated) and trusted.model_dump_json() == validated.model_dump_json()
    assert trusted.model_fields_set == validated.model_fields_set == set(values)


def test_trusted_fills_defaults_and_calls_each_factory_per_instance():
    first = StopLoss.trusted({"venue": "b", "symbol": SYMBOL, "side": "long", "trigger_price": Decimal(1)})
    assert (first.kind, first.order_id, first.contracts, first.placed_at > 0) == ("stop_loss", None, None, True)
    assert first.model_fields_set == {"venue", "symbol", "side", "trigger_price"}
    one, two = (VenueSnapshot.trusted({"venue": "b", "positions": []}) for _ in range(2))
    assert one.open_orders == [] and one.open_orders is not two.open_orders


def test_trusted_refuses_a_misspelt_or_a_missing_field():
    for _ in range(2):  # names are checked once per tuple of names, and a refusal is not remembered as checked
        with pytest.raises(TypeError, match=r"unknown \['trigger'\]"):
            StopLoss.trusted({**STOP, "trigger": Decimal(1)})
        with pytest.raises(TypeError, match=r"missing \['side'\]"):
            StopLoss.trusted({k: v for k, v in STOP.items() if k != "side"})
        assert StopLoss.trusted(STOP).side == "short"


def test_a_trusted_model_stays_frozen():
    with pytest.raises(ValidationError):
        Position.trusted(POSITION).contracts = Decimal(1)  # type: ignore[misc]


PRICE = TypeAdapter(Price)
decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal(0), Decimal("-0"), MAX_AMOUNT, MAX_AMOUNT + Decimal("1e-9"), Decimal("1e-30"),
                     Decimal("sNaN"), Decimal("-Infinity")]),
)


@given(decimals)
def test_in_range_admits_exactly_what_price_admits(value):
    try:
        PRICE.validate_python(value)
    except ValidationError:
        assert not in_range(value)
    else:
        assert in_range(value)


def test_trusted_instances_share_their_names_yet_a_copy_changes_only_its_own():
    first, second = Position.trusted(POSITION), Position.trusted(dict(POSITION))
    assert first.model_fields_set is second.model_fields_set  # one set for the same names (memory, 10,000 rows)
    moved = first.model_copy(update={"contracts": Decimal(5)})
    assert moved.model_fields_set == set(POSITION) and moved.model_fields_set is not first.model_fields_set
    assert first.model_fields_set == second.model_fields_set == set(POSITION)


def test_a_model_that_is_not_frozen_gets_a_set_of_its_own():
    class Loose(Model):
        model_config = ConfigDict(frozen=False)
        name: str

    one, two = Loose.trusted({"name": "a"}), Loose.trusted({"name": "b"})
    assert one.model_fields_set is not two.model_fields_set
    one.name = "c"
    assert two.name == "b" and one.model_fields_set == {"name"}


@pytest.mark.parametrize("contracts", [Decimal(0), Decimal("-1"), MAX_AMOUNT + 1, Decimal("Infinity"), Decimal("NaN")])
def test_a_position_or_an_entry_of_no_size_or_beyond_any_venues_size_is_refused(contracts):
    with pytest.raises(ValidationError):
        Position(**{**POSITION, "contracts": contracts})
    with pytest.raises(ValidationError):
        OrderIntent(venue="binance", symbol=SYMBOL, side="long", contracts=contracts, stop_loss=Decimal("0.4"),
                    client_order_id="fw-e-1")
    assert Position(**{**POSITION, "contracts": MAX_AMOUNT}).contracts == MAX_AMOUNT
