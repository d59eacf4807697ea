"""Bybit's error table (framework_bybit.rest.ERRORS) through the one translator in framework.driverkit."""

from __future__ import annotations

import ccxt
import pytest
from framework_bybit.rest import BybitApiError, BybitClient, BybitIpBanned, translate

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
from framework.models import now_ms


@pytest.mark.parametrize(("code", "msg", "write", "expected"), [
    (10001, "can not set tp/sl/ts for zero position", False, PositionGone),
    (10001, "StopLoss:0.9 set for Sell position should higher than base_price:1??MarkPrice", True,
     WouldTriggerImmediately),
    (10001, "StopLoss:1.1 set for Buy position should lower than base_price:1??MarkPrice", False,
     WouldTriggerImmediately),
    (10001, "params error: side invalid", True, OrderRejected),
    (10001, "params error: side invalid", False, VenueError),
    (110017, "Reduce-only rule not satisfied", True, PositionGone),
    (110001, "order not exists or too late to cancel", False, OrderNotFound),
    (110094, "Order notional value below the lower limit", False, OrderRejected),
    (110072, "OrderLinkedID is duplicate", True, OutcomeUnknown),
    (10002, "invalid request, please check your timestamp", True, RequestExpired),  # not executed (the fence)
    (10002, "invalid request, please check your timestamp", False, VenueError),
    (10003, "API key is invalid.", True, VenueError),
    (10004, "error sign!", True, VenueError),
])
def test_a_retcode_maps_by_message_then_code_and_write(code, msg, write, expected):
    error = translate(BybitApiError(code, msg), "act", write=write, symbol="S", order_id="c1")
    assert type(error) is expected
    assert (error.code, error.venue, error.symbol, error.order_id) == (code, "bybit", "S", "c1")
    assert error.message.startswith(f"act: {msg} (retCode {code})")


def test_notes_name_what_the_code_means():
    assert translate(BybitApiError(110094, "m"), "a").message.endswith("below the instrument's minNotionalValue")
    assert translate(BybitApiError(110072, "m"), "a").message.endswith("an order with this client order id exists")


@pytest.mark.parametrize(("reset_in_ms", "wait"), [(800, range(0, 801)), (-5, range(0, 1)), (None, None),
                                                   (600_000, range(60_000, 60_001))])
def test_a_rate_limit_waits_until_the_reset_at_most_a_minute(reset_in_ms, wait):
    reset = None if reset_in_ms is None else now_ms() + reset_in_ms
    error = translate(BybitApiError(10006, "Too many visits!", reset), "act")
    assert isinstance(error, RateLimited)
    assert error.retry_after_ms is None if wait is None else error.retry_after_ms in wait


@pytest.mark.parametrize(("exc", "write", "expected"), [
    (ccxt.RateLimitExceeded("x"), True, RateLimited),
    (ccxt.DDoSProtection("x"), False, RateLimited),
    (ccxt.RequestTimeout("x"), True, OutcomeUnknown),
    (ccxt.ExchangeNotAvailable("x"), False, VenueError),
    (ccxt.InvalidOrder("x"), True, VenueError),
    (ValueError("x"), True, VenueError),
])
def test_other_failures_map_by_type(exc, write, expected):
    assert type(translate(exc, "act", write=write)) is expected


def test_a_framework_error_is_returned_as_it_is():
    gone = PositionGone("gone", venue="bybit")
    assert translate(gone, "act") is gone


def test_the_limit_reset_header_is_read_in_any_case_and_garbage_is_none():
    from framework_bybit.rest import limit_reset_ms

    assert limit_reset_ms({"x-bapi-limit-reset-timestamp": "1733200000123"}) == 1_733_200_000_123
    assert limit_reset_ms({"X-Bapi-Limit-Reset-Timestamp": "soon"}) is None and limit_reset_ms([]) is None


SENT_HEADERS = {"X-BAPI-API-KEY": "key-that-must-not-leak", "X-BAPI-SIGN": "sign-that-must-not-leak"}


@pytest.mark.parametrize(("status", "response", "raised", "text"), [
    (200, {"retCode": 10001, "retMsg": "params error: side invalid"}, BybitApiError, "params error: side invalid"),
    (403, "403, access too frequent", BybitIpBanned, "HTTP 403: 403, access too frequent"),
    (200, {"retCode": 30084, "retMsg": "Isolated not modified"}, None, ""),  # already so: not an error
    (200, {"retCode": 0, "retMsg": "OK", "result": {}}, None, ""),
])
async def test_an_answer_is_read_by_its_retcode_and_the_error_carries_nothing_of_the_request(
        status, response, raised, text):
    """``BybitClient.handle_errors``: a non-zero retCode (but 30084) is a ``BybitApiError`` with the venue's
    code and message, a 403 a ``BybitIpBanned`` with its body; neither carries the signed request's headers or
    body (the API key, the signature)."""
    client = BybitClient({"apiKey": "key-that-must-not-leak", "secret": "secret-that-must-not-leak"})
    body = response if isinstance(response, str) else str(response)
    answer = None if isinstance(response, str) else response
    try:
        if raised is None:
            assert client.handle_errors(status, "", "https://api.bybit.com/v5/x", "POST", {}, body, answer,
                                        SENT_HEADERS, '{"apiKey": "key-that-must-not-leak"}') is None
            return
        with pytest.raises(raised) as error:
            client.handle_errors(status, "Forbidden", "https://api.bybit.com/v5/x", "POST", {}, body, answer,
                                 SENT_HEADERS, '{"apiKey": "key-that-must-not-leak"}')
        shown = f"{error.value} {error.value!r} {error.value.args}"
        assert text in shown and "must-not-leak" not in shown
    finally:
        await client.close()


@pytest.mark.parametrize(("code", "reset_in_ms"), [(10006, 5_000), (10001, None)])
async def test_a_rate_limit_answer_carries_when_the_limit_resets_and_no_other_answer_does(code, reset_in_ms):
    """Bybit v5 "Rate Limit": ``X-Bapi-Limit-Reset-Timestamp`` says when the limit resets; only a 10006 answer
    is read for it (the header comes with every answer)."""
    client = BybitClient({})
    reset_at = now_ms() + 5_000
    try:
        with pytest.raises(BybitApiError) as error:
            client.handle_errors(200, "", "https://api.bybit.com/v5/x", "GET", {"X-Bapi-Limit-Reset-Timestamp":
                                 str(reset_at)}, "{}", {"retCode": code, "retMsg": "Too many visits"}, {}, "")
        assert error.value.reset_at_ms == (reset_at if reset_in_ms else None)
    finally:
        await client.close()
