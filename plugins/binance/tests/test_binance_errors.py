"""Binance's error table (framework_binance.rest.ERRORS) through the one translator in framework.driverkit."""

from __future__ import annotations

import ccxt
import pytest
from framework_binance.rest import ERRORS, BinanceApiError, venue_errors

from framework.driverkit import translate_error
from framework.errors import (
    OrderNotFound,
    OrderRejected,
    OutcomeUnknown,
    PositionGone,
    RateLimited,
    RequestExpired,
    VenueError,
    WouldTriggerImmediately,
)


@pytest.mark.parametrize(("status", "code", "write", "expected"), [
    (400, -2021, True, WouldTriggerImmediately),
    (400, -2022, False, PositionGone),
    (400, -4509, True, PositionGone),
    (400, -2011, False, OrderNotFound),
    (400, -2013, True, OrderNotFound),
    (429, -1003, False, RateLimited),
    (418, -1003, True, RateLimited),
    (503, -1001, True, OutcomeUnknown),
    (503, -1001, False, VenueError),
    (400, -1000, True, OutcomeUnknown),
    (502, None, True, OutcomeUnknown),
    (400, -4116, True, OrderRejected),  # the caller resolves a duplicate by its client order id
    (400, -4164, False, VenueError),
    # outside the recvWindow (a lease's fence refusing a paused request): not executed, never "gone"
    (400, -1021, True, RequestExpired),
    (400, -1021, False, VenueError),
])
def test_an_answer_maps_by_code_then_status_and_write(status, code, write, expected):
    error = translate_error(ERRORS, BinanceApiError(status, code, "m"), "act", write=write, symbol="S")
    assert type(error) is expected
    assert (error.code, error.venue, error.symbol) == (code, "binance", "S")
    assert error.message == f"act: Binance {code} m"


def test_a_rate_limit_carries_the_venue_s_wait():
    error = translate_error(ERRORS, BinanceApiError(429, -1003, "slow", retry_after_ms=1_000), "act")
    assert isinstance(error, RateLimited) and error.retry_after_ms == 1_000


@pytest.mark.parametrize(("exc", "write", "expected"), [
    (ccxt.DDoSProtection("x"), True, RateLimited),
    (ccxt.RequestTimeout("x"), True, OutcomeUnknown),
    (ccxt.NetworkError("x"), False, VenueError),
    (ccxt.InvalidOrder("x"), True, OrderRejected),
    (ccxt.InvalidOrder("x"), False, VenueError),
    (ccxt.BadSymbol("x"), True, VenueError),
])
def test_ccxt_failures_map_by_type(exc, write, expected):
    with pytest.raises(expected) as raised, venue_errors("act", write=write):
        raise exc
    assert type(raised.value) is expected and raised.value.__cause__ is exc


def test_other_exceptions_and_framework_errors_pass_through():
    with pytest.raises(KeyError), venue_errors("act"):
        raise KeyError("a bug is not a venue error")
    gone = PositionGone("gone", venue="binance")
    with pytest.raises(PositionGone) as raised, venue_errors("act", write=True):
        raise gone
    assert raised.value is gone


def test_rate_limit_headers_are_read_in_any_case_and_garbage_is_none():
    from framework_binance.rest import retry_after_ms, used_weight_1m

    assert retry_after_ms({"retry-after": "2"}) == 2_000 and retry_after_ms({"Retry-After": "x"}) is None
    assert used_weight_1m({"X-MBX-USED-WEIGHT-1M": "37"}) == 37 and used_weight_1m(None) is None
