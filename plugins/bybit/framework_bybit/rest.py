"""Bybit v5 (linear) over REST with the real ccxt client: connection, orders, stops, snapshot.

ccxt's ``bybit`` is used unmodified except for two things: ``urls`` point at ``DriverConfig.rest_url``
when it is set (the emulator), and :meth:`BybitClient.handle_errors` keeps Bybit's ``retCode`` /
``retMsg`` on the exception so this module can translate them to :mod:`framework.errors` (on a
loopback URL ccxt's own tables cannot tell "zero position" from any other 10001).

Endpoints (Bybit v5 docs): ``POST /v5/order/create`` (answers only ids), ``GET /v5/order/realtime``,
``GET /v5/order/history``, ``POST /v5/position/trading-stop``, ``GET /v5/position/list``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async

from framework import (
    UNKNOWN,
    ErrorRule,
    ErrorTable,
    PositionGone,
    RateLimited,
    WouldTriggerImmediately,
    record_transport,
    translate_error,
)
from framework.driverkit import EXPIRED, fence_requests, header_number, wait_stream_change
from framework.errors import (
    DuplicateOrderId,
    OrderIncomplete,
    OrderNotFound,
    OrderRejected,
    OutcomeUnknown,
    StreamError,
    VenueError,
)
from framework.marksockets import MarkSocketPool
from framework.models import (
    DriverConfig,
    Order,
    OrderIntent,
    Position,
    PositionSide,
    StopLoss,
    TrailingSpec,
    VenueSnapshot,
    close_side,
    now_ms,
)
from framework.protocols import StreamEvidence
from framework_bybit.decoder import VENUE, BybitDecoder, decimal_or_none, positive_or_none, unified_symbol

log = logging.getLogger(__name__)

LIVE_WS_URL = "wss://stream.bybit.com"
TESTNET_WS_URL = "wss://stream-testnet.bybit.com"

# Bybit retCodes this driver acts on (Bybit v5 docs, "Error Codes").
ZERO_POSITION_OR_PARAMS = 10001  # "can not set tp/sl/ts for zero position", crossed stop, bad params
TIMESTAMP_ERROR = 10002
INVALID_KEY = 10003
INVALID_SIGN = 10004
RATE_LIMIT = 10006
NOT_MODIFIED = 34040
ORDER_NOT_EXIST = 110001
REDUCE_ONLY_SAME_SIDE = 110017
DUPLICATE_ORDER_LINK_ID = 110072
MIN_NOTIONAL = 110094  # "Order notional value below the lower limit"
#: "403, access too frequent": the IP exceeded 600 requests in 5 s; "wait for at least 10 minutes" (Bybit v5
#: "Rate Limit Rules", HTTP IP limit).  The core caps the pause it takes from this (framework.driver).
IP_BAN_MS = 600_000

_TRIGGER_FIELDS = {"stop_loss": ("stopLoss", "slTriggerBy"), "take_profit": ("takeProfit", "tpTriggerBy")}


class BybitApiError(ccxt.ExchangeError):
    """A Bybit answer with ``retCode != 0``; ``ret_code`` / ``ret_msg`` as the venue sent them, and
    ``reset_at_ms``: the ``X-Bapi-Limit-Reset-Timestamp`` header ("when your request limit resets if you
    have exceeded your rate_limit", Bybit v5 "Rate Limit") when the answer carried one."""

    status = None  # Bybit answers with HTTP 200; transport failures are ccxt's

    def __init__(self, ret_code: int, ret_msg: str, reset_at_ms: int | None = None) -> None:
        self.ret_code = ret_code
        self.ret_msg = ret_msg
        self.reset_at_ms = reset_at_ms
        super().__init__(f"bybit retCode {ret_code}: {ret_msg}")

    @property
    def code(self) -> int:
        return self.ret_code

    @property
    def msg(self) -> str:
        return self.ret_msg

    @property
    def retry_after_ms(self) -> int | None:
        """Until the limit resets, at most a minute."""
        return None if self.reset_at_ms is None else max(0, min(self.reset_at_ms - now_ms(), 60_000))


def limit_reset_ms(headers: object) -> int | None:
    """``X-Bapi-Limit-Reset-Timestamp`` (ms since the epoch) from response headers, if present and a number."""
    reset = header_number(headers, "X-Bapi-Limit-Reset-Timestamp")
    return None if reset is None else int(reset)


class BybitIpBanned(BybitApiError):
    """HTTP 403 "access too frequent": the venue refuses every request from this IP for at least 10 minutes
    (its ``code`` is the HTTP status: the answer carries no retCode)."""

    status = 403

    def __init__(self, body: str) -> None:
        super().__init__(403, f"HTTP 403: {body[:200]}")

    @property
    def retry_after_ms(self) -> int:
        return IP_BAN_MS


class BybitClient(ccxt_async.bybit):
    """ccxt's bybit, raising :class:`BybitApiError` (with the retCode) for every non-zero retCode and
    :class:`BybitIpBanned` for a 403."""

    def handle_errors(self, httpCode, reason, url, method, headers, body, response, requestHeaders, requestBody):
        if httpCode == 403:
            raise BybitIpBanned(str(body or reason))
        if isinstance(response, dict):
            code = response.get("retCode")  # the v5 envelope (retCode, retMsg); not v3's ret_code
            if code is not None and str(code) not in ("0", "30084"):
                message = str(response.get("retMsg", ""))
                raise BybitApiError(int(code), message, limit_reset_ms(headers) if int(code) == RATE_LIMIT else None)
        return super().handle_errors(
            httpCode, reason, url, method, headers, body, response, requestHeaders, requestBody
        )


class BybitConnection:
    """What :func:`connect` returns: the ccxt client, the config, the decoder and, while ``run_stream``
    runs, the core's stream state.

    :ivar stream_state: what the private stream said, as the core holds it (the sink given to
        ``run_stream`` when it is :class:`~framework.protocols.StreamEvidence`: the PositionBook); ``None``
        when there is none, and then no stream evidence outweighs the venue's answer.
    :ivar symbols: native id (``XRPUSDT``) -> unified symbol, from ccxt's markets.
    """

    def __init__(self, config: DriverConfig, client: BybitClient) -> None:
        self.config = config
        self.client = client
        self.stream_state: StreamEvidence | None = None
        self.symbols: dict[str, str] = {}
        self.decoder = BybitDecoder()
        self.mark_pool: MarkSocketPool | None = None  # the public sockets while watch_mark_prices runs
        options = config.options
        self.ping_interval_s = float(options.get("ping_interval_s", 20.0))
        # How long a just-created order may stay invisible to /v5/order/realtime and history (asked again
        # every poll_interval_ms), and how long a position the stream showed open outweighs a trading-stop
        # "zero position" (docs/conformance.md Y8).
        self.poll_interval_ms = int(options.get("poll_interval_ms", 200))
        self.order_visible_wait_ms = int(options.get("order_visible_wait_ms", 3000))
        self.position_visible_grace_ms = int(options.get("position_visible_grace_ms", 2000))

    def __repr__(self) -> str:
        return f"BybitConnection(rest_url={self.config.rest_url!r}, ws_url={self.ws_url!r})"

    @property
    def ws_url(self) -> str:
        """Base of the WebSocket endpoints (``<ws_url>/v5/private``, ``<ws_url>/v5/public/linear``)."""
        if self.config.ws_url:
            return self.config.ws_url.rstrip("/")
        return TESTNET_WS_URL if self.config.testnet else LIVE_WS_URL

    def market_id(self, symbol: str) -> str:
        """``XRP/USDT:USDT`` -> ``XRPUSDT``.

        :raises VenueError: the venue lists no such linear market.
        """
        try:
            return str(self.client.market(symbol)["id"])
        except ccxt.BadSymbol as exc:
            raise VenueError(f"unknown symbol {symbol!r}", venue=VENUE, symbol=symbol) from exc

    def unified(self, native: str) -> str:
        return unified_symbol(native, self.symbols)

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One signed REST call through ccxt's implicit API (e.g. ``privatePostV5PositionTradingStop``);
        returns Bybit's ``result`` object.  ccxt exceptions pass through (see :func:`translate`)."""
        response = await getattr(self.client, method)(params)
        return response.get("result") or {}


def make_client(config: DriverConfig) -> BybitClient:
    """A ccxt bybit client for ``config``: linear markets only, our emulator when ``rest_url`` is set.

    ``config.options``: ``timeout_ms``, ``enable_rate_limit``, ``recv_window_ms`` (``X-BAPI-RECV-WINDOW``,
    default 5 000; under a lease at most the lease's: :func:`framework.driverkit.fence_requests`).
    """
    options = config.options
    client = BybitClient(
        {
            "apiKey": config.api_key.get_secret_value(),
            "secret": config.api_secret.get_secret_value(),
            "timeout": int(options.get("timeout_ms", 10_000)),
            "enableRateLimit": bool(options.get("enable_rate_limit", True)),
            "options": {
                "defaultType": "swap",
                "defaultSubType": "linear",
                "fetchMarkets": {"types": ["linear"]},
                "recvWindow": int(options.get("recv_window_ms", 5_000)),
            },
        }
    )
    if config.rest_url:
        base = config.rest_url.rstrip("/")
        client.urls["api"] = {name: base for name in ("spot", "futures", "v2", "public", "private")}
    elif config.testnet:
        client.set_sandbox_mode(True)
    record_transport(client, VENUE)
    fence_requests(client, config.fence)
    return client


async def connect(config: DriverConfig) -> BybitConnection:
    """Create the client and load linear markets (``GET /v5/market/instruments-info``).

    :raises VenueError: the venue is unreachable or refuses the credentials.
    """
    conn = BybitConnection(config, make_client(config))
    await load_markets(conn)
    return conn


async def load_markets(conn: BybitConnection) -> None:
    """Load linear markets into a new connection (``GET /v5/market/instruments-info``); the client is
    closed when this fails.

    :raises VenueError: the venue is unreachable or refuses the credentials.
    """
    try:
        markets = await conn.client.load_markets()
    except Exception as exc:
        await conn.client.close()
        raise translate(exc, "load markets") from exc
    conn.symbols = {m["id"]: m["symbol"] for m in markets.values() if m.get("linear") and m.get("swap")}
    conn.decoder = BybitDecoder(conn.symbols)


async def disconnect(conn: BybitConnection) -> bool:
    await conn.client.close()
    return True


# --- errors -----------------------------------------------------------------------------------------


#: Bybit's retCodes (Bybit v5 docs, "Error Codes"), applied by :func:`framework.driverkit.translate_error`;
#: on a loopback URL ccxt's own tables cannot tell "zero position" from any other 10001
ERRORS = ErrorTable(
    venue=VENUE, answer=BybitApiError, describe="{action}: {msg} (retCode {code})",
    broad={ZERO_POSITION_OR_PARAMS: {"zero position": PositionGone, "should lower than": WouldTriggerImmediately,
                                     "should higher than": WouldTriggerImmediately}},
    exact={
        REDUCE_ONLY_SAME_SIDE: PositionGone,
        ORDER_NOT_EXIST: OrderNotFound,
        RATE_LIMIT: RateLimited,
        MIN_NOTIONAL: ErrorRule(OrderRejected, note="; below the instrument's minNotionalValue"),
        DUPLICATE_ORDER_LINK_ID: ErrorRule(OutcomeUnknown, note="; an order with this client order id exists"),
        # outside X-BAPI-RECV-WINDOW: refused, not executed (the lease's fence: docs/scaling.md)
        TIMESTAMP_ERROR: EXPIRED,
        **dict.fromkeys((INVALID_KEY, INVALID_SIGN), VenueError),  # never an order's refusal
    },
    by_status={403: RateLimited},  # BybitIpBanned: "403, access too frequent", wait 10 minutes
    by_type=((ccxt.RateLimitExceeded, RateLimited), (ccxt.DDoSProtection, RateLimited),
             (ccxt.NetworkError, UNKNOWN)),  # timeouts, connection drops, 5xx
)
#: ``translate(exc, action, write=..., symbol=..., order_id=...)``: ccxt / Bybit errors → framework errors
translate = functools.partial(translate_error, ERRORS)


# --- orders -----------------------------------------------------------------------------------------


async def create_entry(conn: BybitConnection, intent: OrderIntent) -> dict[str, Any]:
    """Market order opening ``intent`` with its stop-loss (and take-profit) attached, ``tpslMode=Full``,
    triggered by mark price (``POST /v5/order/create``).

    :returns: ccxt's order dict: Bybit answers only ``orderId`` / ``orderLinkId``.
    :raises OrderRejected: the venue refused it.  :raises OutcomeUnknown: timeout / 5xx / duplicate id.
    """
    params: dict[str, Any] = {
        "clientOrderId": intent.client_order_id,
        "positionIdx": 0,
        "tpslMode": "Full",
        "stopLoss": {"triggerPrice": str(intent.stop_loss)},
        "slTriggerBy": "MarkPrice",
    }
    if intent.take_profit is not None:
        params["takeProfit"] = {"triggerPrice": str(intent.take_profit)}
        params["tpTriggerBy"] = "MarkPrice"
    return await _create_market_order(
        conn, intent.symbol, intent.order_side, intent.contracts, params, intent.client_order_id
    )


async def _create_market_order(
    conn: BybitConnection, symbol: str, side: str, contracts: Decimal, params: dict[str, Any], client_order_id: str
) -> dict[str, Any]:
    _check_size(conn, symbol, contracts, client_order_id)
    try:
        return await conn.client.create_order(symbol, "market", side, str(contracts), None, params)
    except Exception as exc:
        error = translate(exc, "create order", write=True, symbol=symbol, order_id=client_order_id)
        if isinstance(exc, BybitApiError) and exc.ret_code == DUPLICATE_ORDER_LINK_ID:
            existing = await _existing_order(conn, symbol, client_order_id)
            if existing is not None:
                return existing
        raise error from exc


def _check_size(conn: BybitConnection, symbol: str, contracts: Decimal, client_order_id: str) -> None:
    """Refuse a size the venue would not take as is, before anything is sent: ccxt truncates ``qty`` to
    ``lotSizeFilter.qtyStep`` silently, which would open or close another size than asked.

    :raises OrderRejected: ``contracts`` below ``lotSizeFilter.minOrderQty`` or not a multiple of ``qtyStep``
        (``/v5/market/instruments-info``, as loaded by ccxt).
    """
    market = conn.client.market(symbol)
    step = market["precision"]["amount"]
    minimum = (market.get("limits") or {}).get("amount", {}).get("min")
    where = {"venue": VENUE, "symbol": symbol, "order_id": client_order_id}
    if step and contracts % Decimal(str(step)) != 0:
        raise OrderRejected(f"{contracts} contracts is not a multiple of the qty step {step}; nothing sent", **where)
    if minimum and contracts < Decimal(str(minimum)):
        raise OrderRejected(f"{contracts} contracts is below the minimum order qty {minimum}; nothing sent",
                            **where)


async def _existing_order(conn: BybitConnection, symbol: str, client_order_id: str) -> dict[str, Any] | None:
    """110072 "OrderLinkedID is duplicate": an order with this client order id exists (typically the
    first attempt, whose answer was lost).  It is that order's result, never a rejection: ccxt's order
    dict of the venue's order looked up by orderLinkId, or ``None`` while the venue does not show it yet
    (the caller then gets :class:`OutcomeUnknown`)."""
    try:
        payload = await fetch_order_payload(conn, symbol, None, client_order_id)
    except VenueError as exc:
        log.warning("bybit: order %s after 110072 not readable: %s", client_order_id, exc)
        return None
    if payload is None:
        return None
    return dict(conn.client.parse_order(payload, conn.client.market(symbol)))


async def fetch_order_payload(
    conn: BybitConnection, symbol: str | None, order_id: str | None, client_order_id: str | None
) -> dict[str, Any] | None:
    """The venue's order object by id: ``/v5/order/realtime`` first, then ``/v5/order/history``.

    :returns: the raw Bybit order, or ``None`` when neither endpoint knows it.
    """
    if not order_id and not client_order_id:
        raise ValueError("need an order id or a client order id")
    params: dict[str, Any] = {"category": "linear"}
    if symbol:
        params["symbol"] = conn.market_id(symbol)
    else:
        params["settleCoin"] = "USDT"
    if order_id:
        params["orderId"] = order_id
    else:
        params["orderLinkId"] = client_order_id
    for method in ("privateGetV5OrderRealtime", "privateGetV5OrderHistory"):
        try:
            rows = (await conn.call(method, params)).get("list") or []
        except Exception as exc:
            error = translate(exc, "fetch order", symbol=symbol, order_id=order_id or client_order_id)
            if isinstance(error, OrderNotFound):
                continue
            raise error from exc
        if rows:
            return rows[0]
    return None


async def _await_order_payload(
    conn: BybitConnection, symbol: str | None, order_id: str | None, client_order_id: str | None
) -> dict[str, Any] | None:
    """:func:`fetch_order_payload` for an order just created: Bybit's order creation "is asynchronous"
    (bybit docs ``order/create-order.mdx``), so an order may not be listed yet.  Asks again, waking on
    stream changes, for up to ``options['order_visible_wait_ms']`` (3000) before answering ``None``."""
    deadline = time.monotonic() + conn.order_visible_wait_ms / 1000
    while True:
        payload = await fetch_order_payload(conn, symbol, order_id, client_order_id)
        remaining = deadline - time.monotonic()
        if payload is not None or remaining <= 0:
            return payload
        await wait_stream_change(conn.stream_state, symbol, min(remaining, conn.poll_interval_ms / 1000))


async def normalize_order(
    conn: BybitConnection, raw: Mapping[str, Any], intent: OrderIntent | None = None
) -> Order:
    """A complete :class:`Order` from ccxt's dict or a Bybit payload; a minimal one (Bybit's create
    answers only ids) is completed from ``/v5/order/realtime`` or ``/v5/order/history``.

    :raises OrderIncomplete: the venue cannot say what the order is, or it contradicts ``intent``.
    """
    info = raw.get("info") if isinstance(raw.get("info"), Mapping) else raw
    order_id = info.get("orderId") or raw.get("id")
    client_order_id = info.get("orderLinkId") or raw.get("clientOrderId")
    symbol = intent.symbol if intent is not None else raw.get("symbol")
    where = {"venue": VENUE, "symbol": symbol, "order_id": order_id or client_order_id}
    try:
        return _checked(conn.decoder.order_from_payload(info), intent, where)
    except StreamError:
        pass  # minimal answer: ask the venue
    if not order_id and not client_order_id:
        raise OrderIncomplete("the order has neither an id nor a client order id", **where)
    try:
        payload = await _await_order_payload(conn, symbol, order_id, client_order_id)
    except VenueError as exc:
        raise OrderIncomplete(f"could not complete the order from the venue: {exc.message}", **where) from exc
    if payload is None:
        raise OrderIncomplete("the venue does not know this order (realtime and history)", **where)
    try:
        return _checked(conn.decoder.order_from_payload(payload), intent, where)
    except StreamError as exc:
        raise OrderIncomplete(f"the venue's order is incomplete: {exc.message}", **where) from exc


def _checked(order: Order, intent: OrderIntent | None, where: dict[str, Any]) -> Order:
    if intent is not None and (order.symbol != intent.symbol or order.side != intent.order_side):
        raise OrderIncomplete(
            f"the venue's order ({order.side} {order.symbol}) contradicts the intent "
            f"({intent.order_side} {intent.symbol})",
            **where,
        )
    return order


async def fetch_order(
    conn: BybitConnection, symbol: str, order_id: str | None = None, client_order_id: str | None = None
) -> Order:
    """One order by venue id or client order id.  :raises OrderNotFound: neither endpoint knows it."""
    payload = await fetch_order_payload(conn, symbol, order_id, client_order_id)
    if payload is None:
        raise OrderNotFound("no such order", venue=VENUE, symbol=symbol, order_id=order_id or client_order_id)
    return conn.decoder.order_from_payload(payload)


async def close_position(
    conn: BybitConnection, symbol: str, side: PositionSide, contracts: Decimal, client_order_id: str
) -> Order:
    """Reduce-only market order on the closing side, completed from the venue.

    :raises PositionGone: 110017, nothing to reduce.
    """
    raw = await _create_market_order(
        conn, symbol, close_side(side), contracts,
        {"clientOrderId": client_order_id, "reduceOnly": True, "positionIdx": 0}, client_order_id,
    )
    payload = await _await_order_payload(conn, symbol, raw.get("id"), client_order_id)
    if payload is None:
        raise OrderIncomplete("closing order accepted but unknown to the venue", venue=VENUE, symbol=symbol,
                              order_id=raw.get("id"))
    return conn.decoder.order_from_payload(payload)


# --- stops: /v5/position/trading-stop ------------------------------------------------------------------


async def _trading_stop(conn: BybitConnection, symbol: str, fields: dict[str, str]) -> bool:
    """``POST /v5/position/trading-stop`` (Full mode, position in one-way mode).

    :returns: ``True`` when the venue changed something, ``False`` for 34040 "not modified" once the
        position shows every value asked for (see :func:`_confirm_not_modified`).
    :raises PositionGone: 10001 zero position (never retried).
    :raises VenueError: 34040 that is not "already set" (a missing parameter), or any other failure.
    """
    params = {"category": "linear", "symbol": conn.market_id(symbol), "tpslMode": "Full", "positionIdx": 0, **fields}
    while True:
        try:
            await conn.call("privatePostV5PositionTradingStop", params)
        except BybitApiError as exc:
            if exc.ret_code == NOT_MODIFIED:
                await _confirm_not_modified(conn, symbol, fields, exc)
                return False
            error = translate(exc, "trading-stop", symbol=symbol)
            if isinstance(error, PositionGone) and _stream_shows_open(conn, symbol):
                # A fill the stream showed, the venue's position view not yet (order creation "is
                # asynchronous"): ask again while that evidence is fresh, then the venue's answer stands.
                log.info("bybit %s: trading-stop says zero position, the stream showed it open: asking again",
                         symbol)
                await wait_stream_change(conn.stream_state, symbol, conn.poll_interval_ms / 1000)
                continue
            raise error from exc
        except Exception as exc:  # a timeout or 5xx: the stop may have changed (a write)
            raise translate(exc, "trading-stop", write=True, symbol=symbol) from exc
        return True


def _stream_shows_open(conn: BybitConnection, symbol: str) -> bool:
    """The private stream's latest position for ``symbol`` is open and at most
    ``options['position_visible_grace_ms']`` (2000) old: a "zero position" answer then contradicts evidence
    already held (the fill was shown; the venue's position view may lag it), so it is not taken as gone
    yet.  Bounded, because a lost flat frame leaves the same evidence behind a position really gone (I-1).
    Without stream evidence (``conn.stream_state is None``) nothing contradicts the venue."""
    update = conn.stream_state.last_update(symbol) if conn.stream_state is not None else None
    return update is not None and update.contracts > 0 and now_ms() - update.timestamp <= conn.position_visible_grace_ms


async def _confirm_not_modified(conn: BybitConnection, symbol: str, fields: dict[str, str], exc: BybitApiError) -> None:
    """34040 is "Not modified. Indicates you already set this TP/SL value or you didn't pass a required
    parameter" (bybit docs ``error.mdx``): it is taken as "already set" only when ``GET /v5/position/list``
    shows every price asked for (``"0"``: none set).

    :raises VenueError: no price was asked for, the position shows other values (a missing parameter, or
        REST lagging behind: the caller retries), or the position cannot be read.
    """
    where = {"venue": VENUE, "symbol": symbol, "code": NOT_MODIFIED}
    asked = {field: Decimal(value) for field, value in fields.items() if field in ("stopLoss", "takeProfit",
                                                                                  "trailingStop")}
    if not asked:
        raise VenueError(f"trading-stop: {exc.ret_msg} (retCode 34040) with no price asked for: a missing parameter",
                         **where)
    try:
        rows = (await conn.call("privateGetV5PositionList",
                                {"category": "linear", "symbol": conn.market_id(symbol)})).get("list") or []
    except Exception as read_exc:
        raise translate(read_exc, "trading-stop: reading the position after 34040", symbol=symbol) from exc
    shown = rows[0] if rows else {}
    for field, value in asked.items():
        if (decimal_or_none(shown.get(field)) or Decimal(0)) != value:
            raise VenueError(f"trading-stop: {exc.ret_msg} (retCode 34040) but the position shows "
                             f"{field}={shown.get(field)!r}, not {value}", **where)


def _price(conn: BybitConnection, symbol: str, price: Decimal) -> str:
    return str(conn.client.price_to_precision(symbol, str(price)))


async def set_trigger(
    conn: BybitConnection, symbol: str, side: PositionSide, trigger_price: Decimal, kind: str
) -> StopLoss:
    """Attach (or move) the position's stop-loss / take-profit in place; no position lookup (I-4).
    34040 "not modified" means it is already there: returned as resting."""
    if kind not in _TRIGGER_FIELDS:
        raise VenueError(f"{kind} is not supported by trading-stop in this driver", venue=VENUE, symbol=symbol)
    price_field, trigger_by = _TRIGGER_FIELDS[kind]
    price = _price(conn, symbol, trigger_price)
    await _trading_stop(conn, symbol, {price_field: price, trigger_by: "MarkPrice"})
    return StopLoss(venue=VENUE, symbol=symbol, side=side, kind=kind, trigger_price=Decimal(price))  # type: ignore[arg-type]


async def set_trailing(
    conn: BybitConnection, symbol: str, side: PositionSide, trailing: TrailingSpec, reference_price: Decimal
) -> StopLoss:
    """Attach a trailing stop to the position: ``trailingStop`` (a price distance, ``callback_rate`` percent
    of the activation price, else of ``reference_price``, rounded to the tick) and ``activePrice`` on
    trading-stop.  The position's ``stopLoss`` is not sent, so it stays as it is (bybit docs
    position/trading-stop.mdx; docs/conformance.md Y19).  The distance then stays fixed in price, where a
    percentage trail would widen as the price runs.

    :raises OrderRejected: the distance rounds to less than one tick (nothing was sent).
    :raises PositionGone: 10001 zero position.
    """
    start = trailing.activation_price or reference_price
    try:  # ccxt refuses a price under one tick
        distance = Decimal(_price(conn, symbol, start * trailing.callback_rate / 100))
    except ccxt.InvalidOrder:
        distance = Decimal(0)
    if distance <= 0:
        raise OrderRejected(f"a {trailing.callback_rate} % trail of {start} is less than one tick", venue=VENUE,
                            symbol=symbol)
    fields = {"trailingStop": str(distance)}
    if trailing.activation_price is not None:
        fields["activePrice"] = _price(conn, symbol, trailing.activation_price)
    await _trading_stop(conn, symbol, fields)
    first = start - distance if side == "long" else start + distance
    return StopLoss(venue=VENUE, symbol=symbol, side=side, kind="trailing_stop", trigger_price=first)


async def create_stop_loss_order(
    conn: BybitConnection, symbol: str, side: PositionSide, contracts: Decimal, trigger_price: Decimal,
    client_order_id: str,
) -> StopLoss:
    """``POST /v5/order/create``: a conditional Market order of its own on the closing side of ``side``,
    reduce-only for ``contracts``, triggered by the mark price at ``trigger_price`` (ccxt's ``stopLossPrice``:
    ``triggerPrice`` with the ``triggerDirection`` of a stop, ``reduceOnly``), ``orderLinkId=client_order_id``.
    A conditional order "does not occupy the margin" and rests until triggered (bybit docs
    ``order/create-order.mdx``); Bybit answers only ids.

    :raises DuplicateOrderId: 110072: an order already carries ``client_order_id`` (``orderLinkId`` is
        "always unique", create-order.mdx; docs/conformance.md Y7); never resolved, nothing placed.
    :raises PositionGone: 110017, nothing to reduce.
    """
    _check_size(conn, symbol, contracts, client_order_id)
    price = _price(conn, symbol, trigger_price)
    params = {"stopLossPrice": price, "triggerBy": "MarkPrice", "reduceOnly": True,
              "clientOrderId": client_order_id, "positionIdx": 0}
    placed_at = now_ms()
    try:
        raw = await conn.client.create_order(symbol, "market", close_side(side), str(contracts), None, params)
    except Exception as exc:
        if isinstance(exc, BybitApiError) and exc.ret_code == DUPLICATE_ORDER_LINK_ID:
            raise DuplicateOrderId(f"create stop-loss order: {exc.ret_msg} (retCode {exc.ret_code})", venue=VENUE,
                                   symbol=symbol, order_id=client_order_id, code=exc.ret_code) from exc
        raise translate(exc, "create stop-loss order", write=True, symbol=symbol, order_id=client_order_id) from exc
    if not raw.get("id"):
        raise OrderIncomplete("conditional order answered without an orderId", venue=VENUE, symbol=symbol,
                              order_id=client_order_id)
    return StopLoss(venue=VENUE, symbol=symbol, side=side, kind="stop_loss", trigger_price=Decimal(price),
                    order_id=str(raw["id"]), contracts=contracts, placed_at=placed_at)


async def cancel_trigger(conn: BybitConnection, stop: StopLoss) -> bool:
    """Remove a stop: a conditional order by id (``POST /v5/order/cancel``), an attached one with ``"0"``
    via trading-stop.  ``False`` when the venue no longer had it.

    An order-based stop is never "removed" through trading-stop: that would clear the position's
    attached stop instead — its real protection."""
    if stop.order_id is not None:
        params = {"category": "linear", "symbol": conn.market_id(stop.symbol), "orderId": stop.order_id}
        try:
            await conn.call("privatePostV5OrderCancel", params)
        except Exception as exc:
            error = translate(exc, "cancel", symbol=stop.symbol)
            if isinstance(error, OrderNotFound):
                return False
            raise error from exc
        return True
    field = "trailingStop" if stop.kind == "trailing_stop" else _TRIGGER_FIELDS[stop.kind][0]
    try:
        return await _trading_stop(conn, stop.symbol, {field: "0"})
    except PositionGone:
        return False


# --- verification and snapshot --------------------------------------------------------------------------


def _position_from_row(conn: BybitConnection, row: Mapping[str, Any]) -> Position | None:
    """A ``/v5/position/list`` row as a :class:`Position`, ``None`` when flat."""
    size = decimal_or_none(row.get("size")) or Decimal(0)
    side = {"Buy": "long", "Sell": "short"}.get(str(row.get("side")))
    if size <= 0:
        return None
    if side is None:
        raise VenueError(f"open position of size {size} without a side", venue=VENUE, symbol=row.get("symbol"))
    entry = positive_or_none(row.get("avgPrice")) or positive_or_none(row.get("entryPrice"))
    if entry is None:
        raise VenueError("open position without an entry price", venue=VENUE, symbol=row.get("symbol"))
    updated = row.get("updatedTime")
    return Position(
        venue=VENUE,
        account=conn.config.account,
        symbol=conn.unified(str(row["symbol"])),
        side=side,  # type: ignore[arg-type]
        contracts=size,
        entry_price=entry,
        mark_price=positive_or_none(row.get("markPrice")),
        unrealized_pnl=decimal_or_none(row.get("unrealisedPnl")),
        realized_pnl=decimal_or_none(row.get("curRealisedPnl")),
        stop_loss=positive_or_none(row.get("stopLoss")),
        take_profit=positive_or_none(row.get("takeProfit")),
        opened_at=int(row["createdTime"]) if row.get("createdTime") else None,
        **({"updated_at": int(updated)} if updated else {}),
    )


_CONDITIONAL_KINDS = {"PartialStopLoss": "stop_loss", "Stop": "stop_loss", "PartialTakeProfit": "take_profit"}
# A Full-mode TP / SL / trailing stop of the position: the conditional order the system creates for the
# position's stopLoss / takeProfit / trailingStop (bybit docs position/trading-stop.mdx, enum.mdx
# stopOrderType; docs/conformance.md Y1-Y2).  It is the position's stop, not a second one.
_POSITION_TPSL_KINDS = {"StopLoss": "stop_loss", "TakeProfit": "take_profit", "TrailingStop": "trailing_stop"}


_ATTACHED_FIELDS = (("stop_loss", "stopLoss"), ("take_profit", "takeProfit"), ("trailing_stop", "trailingStop"))


async def _all_pages(conn: BybitConnection, method: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every row of a paged list endpoint (``nextPageCursor``), and the number of calls it took.

    A snapshot that stopped at the first page would make positions past it look like orphans and stops
    past it look missing.
    """
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"category": "linear", "settleCoin": "USDT", "limit": limit}
    calls = 0
    while True:
        result = await conn.call(method, params)
        calls += 1
        rows += result.get("list") or []
        cursor = result.get("nextPageCursor")
        if not cursor:
            return rows, calls
        params = {**params, "cursor": cursor}


Rows = list[dict[str, Any]]


async def snapshot_rows(conn: BybitConnection) -> tuple[tuple[Rows, int], tuple[Rows, int]]:
    """The snapshot's answers as Bybit's raw rows, every page: ``(position rows, calls)``, ``(order rows,
    calls)`` (what :func:`fetch_snapshot` decodes; ``framework bench`` times it as the floor)."""
    page = conn.config.options.get("snapshot_page_limit")
    try:
        return (await _all_pages(conn, "privateGetV5PositionList", page or 200),
                await _all_pages(conn, "privateGetV5OrderRealtime", page or 50))
    except Exception as exc:
        raise translate(exc, "snapshot") from exc


def _trail_start(position: Position, distance: Decimal) -> Decimal | None:
    """Where an attached trailing stop (a price ``distance``, docs/conformance.md Y19) is reported to start: that
    far behind the mark price now; ``None`` without a mark or when the result is not a price.  Its activation
    price is not in the position row (``activePrice`` is a trading-stop request field only, position.mdx), and
    what its system order's ``triggerPrice`` shows without one is not documented (Y19)."""
    start = position.mark_price
    if start is None:
        return None
    price = start - distance if position.side == "long" else start + distance
    return price if price > 0 else None


async def fetch_snapshot(conn: BybitConnection) -> VenueSnapshot:
    """``/v5/position/list`` + ``/v5/order/realtime`` (settleCoin USDT): one call each per page of 200
    positions / 50 orders (``options['snapshot_page_limit']`` lowers both, for tests).

    Stops: every position's attached stop-loss / take-profit / trailing stop, once each, as attached
    (``order_id None``: removed through trading-stop), plus resting reduce-only conditional orders.  A
    trailing stop's ``trailingStop`` is a distance: it is reported at that distance behind the mark price now
    (:func:`_trail_start`).  The
    ``Untriggered`` system orders Bybit lists for the attached ones (``stopOrderType`` ``StopLoss`` /
    ``TakeProfit`` / ``TrailingStop``) are the same stops, not more: they stay in ``open_orders`` only, and
    give the trigger when the position row does not show it yet.  Without an open position in this
    snapshot they are not reported: the venue cancels them with the position (``CancelByTpSlTsClear``).
    """
    (position_rows, position_calls), (order_rows, order_calls) = await snapshot_rows(conn)
    open_orders, stops = [], []
    system: dict[tuple[str, str], Decimal] = {}  # (symbol, kind) -> trigger of the position's TP/SL order
    for row in order_rows:
        order = conn.decoder.order_from_payload(row)
        open_orders.append(order)
        position_kind = _POSITION_TPSL_KINDS.get(str(row.get("stopOrderType") or ""))
        if position_kind is not None:
            if order.trigger_price is not None and position_kind != "trailing_stop":
                system[(order.symbol, position_kind)] = order.trigger_price
            continue
        kind = _CONDITIONAL_KINDS.get(str(row.get("stopOrderType") or ""))
        closing = bool(row.get("reduceOnly")) or bool(row.get("closeOnTrigger"))
        if kind and closing and order.trigger_price is not None:  # the stop of the order's (validated) fields
            stops.append(StopLoss.trusted({
                "venue": VENUE, "symbol": order.symbol, "side": "long" if order.side == "sell" else "short",
                "kind": kind, "trigger_price": order.trigger_price, "order_id": order.id,
                "contracts": order.amount or None}))
    positions = []
    for row in position_rows:
        position = _position_from_row(conn, row)
        if position is None:
            continue
        positions.append(position)
        for kind, field in _ATTACHED_FIELDS:
            price = positive_or_none(row.get(field)) or system.get((position.symbol, kind))
            if price is not None and kind == "trailing_stop":
                price = _trail_start(position, price)
            if price is not None:
                stops.append(StopLoss(venue=VENUE, symbol=position.symbol, side=position.side, kind=kind,  # type: ignore[arg-type]
                                      trigger_price=price))
    return VenueSnapshot(venue=VENUE, account=conn.config.account, positions=positions,
                         open_orders=open_orders, stops=stops, rest_calls=position_calls + order_calls)
