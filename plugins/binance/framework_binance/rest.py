"""Binance USDⓈ-M REST through ccxt ``binanceusdm`` (unmodified; only ``urls`` point at an emulator).

Conditional orders (STOP_MARKET / TAKE_PROFIT_MARKET / TRAILING_STOP_MARKET) go to the Algo Order API
``POST /fapi/v1/algoOrder``; ccxt fetches and cancels them with ``params={'trigger': True}``.
Binance errors are translated to :mod:`framework.errors` by the table :data:`ERRORS` (:func:`venue_errors`),
from the venue's own code: on a loopback URL ccxt's per-market error tables do not apply.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import ccxt
import ccxt.async_support as ccxt_async

from framework import record_transport
from framework.driverkit import EXPIRED, REFUSED, UNKNOWN, ErrorTable, fence_requests, header_number, stream_flat_since
from framework.driverkit import venue_errors as translate_errors_of
from framework.errors import (
    DuplicateOrderId,
    OrderIncomplete,
    OrderNotFound,
    OrderRejected,
    OutcomeUnknown,
    PositionGone,
    RateLimited,
    StreamError,
    VenueError,
    WouldTriggerImmediately,
)
from framework.marksockets import MarkSocketPool
from framework.models import DriverConfig, Order, Position, PositionSide, in_range
from framework.protocols import StreamEvidence
from framework_binance.decoder import ALGO_STATUS, ORDER_STATUS, unified_symbol

log = logging.getLogger(__name__)

VENUE = "binance"
DEFAULT_TIMEOUT_MS = 10_000
#: ccxt ``urls['api']`` entries of the USDⓈ-M futures API, and their path on the venue
FAPI_URLS = {
    "fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2", "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1", "fapiPrivateV2": "/fapi/v2", "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
}
CLOSE_STATUSES = ("closed", "canceled", "rejected", "expired")
STATUSES = ("open", *CLOSE_STATUSES)
SIDES = ("buy", "sell")
#: Binance: an OPEN order already has this client order id (-4015 is a malformed id)
DUPLICATE_CLIENT_ID = -4116
#: user data events the driver subscribes to (``events=`` of ``/private/ws``)
USER_EVENTS = ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "ALGO_UPDATE", "listenKeyExpired")


class BinanceApiError(ccxt.ExchangeError):
    """A Binance error answer: HTTP ``status``, Binance ``code`` (e.g. ``-2021``) and ``msg``, and for a
    418 / 429 the ``Retry-After`` header in ms ("a Retry-After header is sent with a 418 or 429 response
    and will give the number of seconds required to wait", Binance "General Info: Limits")."""

    def __init__(self, status: int, code: int | None, msg: str, retry_after_ms: int | None = None) -> None:
        super().__init__(f"binance HTTP {status} code {code}: {msg}")
        self.status, self.code, self.msg = status, code, msg
        self.retry_after_ms = retry_after_ms


def retry_after_ms(headers: object) -> int | None:
    """``Retry-After`` (seconds) from response headers, in ms; ``None`` when absent or not a number."""
    seconds = header_number(headers, "Retry-After")
    return int(seconds * 1000) if seconds is not None and 0 <= seconds < 86_400 else None


def used_weight_1m(headers: object) -> int | None:
    """``X-MBX-USED-WEIGHT-1M`` (the IP's request weight used in the current minute) from response headers."""
    weight = header_number(headers, "X-MBX-USED-WEIGHT-1M")
    return None if weight is None else int(weight)


class BinanceUsdm(ccxt_async.binanceusdm):
    """ccxt's client, raising :class:`BinanceApiError` with the venue's code for every error answer.

    :ivar used_weight_1m: the IP's request weight used this minute, as the last answer said
        (``X-MBX-USED-WEIGHT-1M``, sent with every response: Binance "General Info: Limits"); ``None``
        before the first answer that carried it.
    """

    used_weight_1m: int | None = None

    def handle_errors(self, code, reason, url, method, headers, body, response, requestHeaders, requestBody):  # type: ignore[no-untyped-def]
        weight = used_weight_1m(headers)
        if weight is not None:
            self.used_weight_1m = weight
        api_code = response.get("code") if isinstance(response, dict) else None
        try:
            api_code = int(api_code) if api_code is not None else None
        except (TypeError, ValueError):
            api_code = None
        if code >= 400 or (api_code is not None and api_code < 0):
            msg = response.get("msg") if isinstance(response, dict) else None
            wait = retry_after_ms(headers) if code in (418, 429) else None
            raise BinanceApiError(code, api_code, str(msg or reason or "")[:300], wait)
        return super().handle_errors(code, reason, url, method, headers, body, response, requestHeaders, requestBody)


#: Binance's errors (Binance "Error Codes"), applied by :func:`framework.driverkit.translate_error`
ERRORS = ErrorTable(
    venue=VENUE, answer=BinanceApiError, describe="{action}: Binance {code} {msg}",
    exact={
        -2021: WouldTriggerImmediately,
        -2022: PositionGone, -4509: PositionGone,  # -4509: a closePosition stop with no position (B7)
        -2011: OrderNotFound, -2013: OrderNotFound,
        -1003: RateLimited,
        -1021: EXPIRED,  # "Timestamp for this request is outside of the recvWindow": not executed
        # -4116 "clientOrderId is duplicated" is a refusal here; the caller resolves it by client id
        **dict.fromkeys((-1000, -1001, -1006, -1007, -1008), UNKNOWN),
    },
    by_status={418: RateLimited, 429: RateLimited}, server_error=UNKNOWN,
    by_type=((ccxt.DDoSProtection, RateLimited), (ccxt.NetworkError, UNKNOWN), (ccxt.InvalidOrder, REFUSED),
             (ccxt.BaseError, VenueError)),
)
#: ``with venue_errors(action, write=..., symbol=..., order_id=...)``: ccxt / Binance errors → framework errors
venue_errors = functools.partial(translate_errors_of, ERRORS)


def make_exchange(config: DriverConfig) -> BinanceUsdm:
    """A ccxt ``binanceusdm`` client for ``config``: the emulator at ``rest_url``, testnet, or mainnet.

    ``config.options``: ``timeout_ms`` (ccxt request timeout, default 10 000), ``recv_window_ms`` (default
    5 000; under a lease at most the lease's: :func:`framework.driverkit.fence_requests`).
    """
    options = config.options
    exchange = BinanceUsdm({
        "apiKey": config.api_key.get_secret_value(),
        "secret": config.api_secret.get_secret_value(),
        "timeout": int(options.get("timeout_ms", DEFAULT_TIMEOUT_MS)),
        "enableRateLimit": config.rest_url is None,
        "options": {
            "defaultType": "swap",
            "fetchCurrencies": False,  # a spot wallet endpoint; a futures driver needs none of it
            "recvWindow": int(options.get("recv_window_ms", 5_000)),
            "disableFuturesSandboxWarning": True,
        },
    })
    if config.rest_url:
        base = config.rest_url.rstrip("/")
        for name, path in FAPI_URLS.items():
            exchange.urls["api"][name] = base + path
    elif config.testnet:
        exchange.set_sandbox_mode(True)
    record_transport(exchange, VENUE)
    fence_requests(exchange, config.fence)
    return exchange


def new_client_id(kind: str) -> str:
    """A client order id for orders the driver creates itself: ``fw-<kind>-<hex>`` (≤ 36 chars)."""
    return f"fw-{kind}-{secrets.token_hex(12)}"


ZERO = Decimal(0)


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(value if type(value) is str else str(value))


def to_order(raw: dict[str, Any]) -> Order:
    """A ccxt order → :class:`Order`.

    :raises OrderIncomplete: side, amount, filled, status or id missing (never filled in by a guess).
    """
    return _order(raw.get("id"), raw.get("symbol"), raw.get("clientOrderId"), raw.get("side"), raw.get("type"),
                  raw.get("amount"), raw.get("filled"), raw.get("average"), raw.get("status"), raw.get("reduceOnly"),
                  bool((raw.get("info") or {}).get("closePosition")), raw.get("triggerPrice"), raw.get("timestamp"))


def _order(order_id: Any, symbol: Any, client_order_id: Any, side: Any, kind: Any, amount: Any, filled: Any,
           average: Any, status: Any, reduce_only: Any, close_position: bool, trigger: Any, timestamp: Any) -> Order:
    """:class:`Order` from ccxt-unified field values (:func:`to_order`, :func:`order_from_row`).

    :raises OrderIncomplete: as :func:`to_order`.
    """
    # a closePosition order carries no quantity: it closes whatever is open when it triggers
    if (order_id is None or symbol is None or side not in SIDES or (amount is None and not close_position)
            or filled is None or status not in STATUSES):
        missing = [
            name for name, value in (
                ("id", order_id), ("symbol", symbol), ("side", side),
                ("amount", 0 if close_position else amount), ("filled", filled), ("status", status),
            ) if value is None
        ]
        if side not in (None, *SIDES):
            missing.append(f"side={side!r}")
        if status not in (None, *STATUSES):
            missing.append(f"status={status!r}")
        raise OrderIncomplete(f"order lacks {', '.join(missing)}", venue=VENUE, symbol=symbol, order_id=order_id)
    size = _decimal(amount) or ZERO
    done = _decimal(filled) or ZERO
    price = _decimal(average)
    trigger_price = _decimal(trigger)
    values: dict[str, Any] = {
        "venue": VENUE, "symbol": symbol, "id": str(order_id), "client_order_id": client_order_id, "side": side,
        "type": str(kind or "market"), "amount": max(size, done) if size >= 0 else size, "filled": done,
        "average": price if price and price > 0 else None, "status": status,
        "reduce_only": bool(reduce_only) or close_position,
        "trigger_price": trigger_price if trigger_price and trigger_price > 0 else None, "timestamp": timestamp,
    }
    # what the model checks, established here (filled <= amount; a negative amount is left for the model to
    # refuse), so 10,000 snapshot rows are not validated twice; anything else meets the validating constructor
    if (type(symbol) is str and (client_order_id is None or type(client_order_id) is str)
            and (done == 0 or in_range(done)) and in_range(values["amount"])
            and (values["average"] is None or in_range(values["average"]))
            and (values["trigger_price"] is None or in_range(values["trigger_price"]))
            and (timestamp is None or (type(timestamp) is int and 0 <= timestamp < 2**53))):
        return Order.trusted(values)
    return Order(**values)


#: Binance order type → ccxt's unified type (what ``binance.parse_order_type_by_market`` gives a contract)
UNIFIED_TYPE = {"limit_maker": "limit", "stop": "limit", "stop_market": "market", "take_profit": "limit",
                "take_profit_market": "market", "trailing_stop_market": "market"}
#: Binance order / algo order statuses → ccxt's unified status (``binance.parse_order_status``)
UNIFIED_STATUS = {**ORDER_STATUS, **ALGO_STATUS, "ACCEPTED": "open", "CANCELLED": "canceled",
                  "PENDING_CANCEL": "canceling"}


def _either(row: dict[str, Any], key: str, other: str) -> Any:
    """``row[key]``, else ``row[other]`` (an order's and an algo order's names for one field)."""
    value = row.get(key)
    return row.get(other) if value is None else value


#: where a raw order's creation time is, first found wins (ccxt's order of keys)
_TIME_KEYS = ("time", "createTime", "workingTime", "transactTime", "updateTime")


def order_from_row(row: dict[str, Any], symbols: dict[str, str]) -> Order:
    """A raw Binance order (``/fapi/v1/openOrders``, ``/fapi/v1/order``) or algo order
    (``/fapi/v1/openAlgoOrders``) → :class:`Order`, with ccxt's decoding rules but without its unified
    parser (the snapshot's hot path): id ``orderId`` / ``algoId``, status ``status`` / ``algoStatus``,
    amount ``origQty`` / ``quantity``, trigger ``stopPrice`` / ``triggerPrice`` (``"0"``: none), a
    ``closePosition`` order is reduce-only.

    :raises OrderIncomplete: as :func:`to_order`; an unknown market id also (never guessed).
    """
    get = row.get
    market = get("symbol")
    symbol = symbols.get(market) if type(market) is str else None  # the loaded markets: the snapshot's hot path
    if symbol is None:
        market_id = str(market or "")
        try:
            symbol = unified_symbol(market_id, symbols) if market_id else None
        except StreamError as exc:
            raise OrderIncomplete(exc.message, venue=VENUE, order_id=str(_either(row, "orderId", "algoId"))) from exc
    # each field under its order name, else its algo order name (as _either, spelt out: the snapshot's hot path)
    if (order_id := get("orderId")) is None:
        order_id = get("algoId")
    if (status := get("status")) is None:
        status = get("algoStatus")
    if (kind := get("type")) is None:
        kind = get("orderType")
    if (client_id := get("clientOrderId")) is None:
        client_id = get("clientAlgoId")
    if (amount := get("origQty")) is None:
        amount = get("quantity")
    if (filled := get("executedQty")) is None:
        filled = get("filledQty")
    if (average := get("avgPrice")) is None:
        average = get("avgFilledPrice")
    if (trigger := get("stopPrice")) is None:
        trigger = get("triggerPrice")
    kind = str(kind or "").lower()
    side = get("side")
    timestamp = None
    for key in _TIME_KEYS:
        timestamp = get(key)
        if timestamp is not None:
            break
    return _order(
        None if order_id is None else str(order_id), symbol, client_id, str(side).lower() if side else None,
        UNIFIED_TYPE.get(kind, kind) or None, amount, filled or "0", average,
        None if status is None else UNIFIED_STATUS.get(status, status), get("reduceOnly"),
        bool(get("closePosition")), trigger, timestamp,
    )


def position_from_row(row: dict[str, Any], account: str, symbols: dict[str, str],
                      taken_at: int | None = None) -> Position | None:
    """A raw ``/fapi/v3/positionRisk`` row → :class:`Position` (``None`` when flat), with ccxt's decoding
    rules (``binance.parse_position_risk``) without its unified parser: contracts ``|positionAmt|``, side
    from the sign of ``notional`` (else of ``positionAmt``), ``unRealizedProfit``, ``markPrice`` ``"0"``: none.
    ``taken_at``: when the answer was asked for (ms), the position's ``updated_at`` (else now).

    :raises OrderIncomplete: an open position of an unknown market id, or without a side.
    """
    amount = _decimal(row.get("positionAmt")) or ZERO
    if amount == 0:
        return None
    notional = _decimal(row.get("notional")) or ZERO
    try:
        symbol = unified_symbol(str(row.get("symbol") or ""), symbols)
    except StreamError as exc:
        raise OrderIncomplete(f"open position: {exc.message}", venue=VENUE) from exc
    side: PositionSide = "long" if notional > 0 else "short" if notional < 0 else "long" if amount > 0 else "short"
    return _position(account, symbol, side, abs(amount), row.get("entryPrice"), row.get("markPrice"),
                     row.get("unRealizedProfit"), taken_at)


def to_position(raw: dict[str, Any], account: str) -> Position | None:
    """A ccxt position → :class:`Position`, ``None`` when flat."""
    contracts = _decimal(raw.get("contracts")) or Decimal(0)
    if contracts <= 0:
        return None
    side = raw.get("side")
    if side not in ("long", "short"):
        amount = _decimal((raw.get("info") or {}).get("positionAmt"))
        if amount is None or amount == 0:
            raise OrderIncomplete(f"position of {raw.get('symbol')} has no side", venue=VENUE)
        side = "long" if amount > 0 else "short"
    return _position(account, raw["symbol"], side, contracts, raw.get("entryPrice"), raw.get("markPrice"),
                     raw.get("unrealizedPnl"))


def _position(account: str, symbol: str, side: PositionSide, contracts: Decimal, entry: Any, mark: Any,
              pnl: Any, updated_at: int | None = None) -> Position:
    entry_price, mark_price, unrealized_pnl = _decimal(entry), _decimal(mark), _decimal(pnl)
    if not (mark_price and mark_price > 0):
        mark_price = None
    values: dict[str, Any] = {
        "account": account, "venue": VENUE, "symbol": symbol, "side": side, "contracts": contracts,
        "entry_price": entry_price, "mark_price": mark_price, "unrealized_pnl": unrealized_pnl}
    if updated_at is not None:
        values["updated_at"] = updated_at
    # as in _order: what the model checks, established here; anything else meets the validating constructor
    if (type(symbol) is str and side in ("long", "short") and in_range(contracts)
            and entry_price is not None and in_range(entry_price) and (mark_price is None or in_range(mark_price))
            and (unrealized_pnl is None or unrealized_pnl.is_finite())
            and (updated_at is None or (type(updated_at) is int and 0 <= updated_at < 2**53))):
        return Position.trusted(values)
    return Position(**values)


class BinanceConnection:
    """What ``connect`` returns: the ccxt client, the config and, while ``run_stream`` runs, the core's
    stream state.

    :ivar stream_state: what the private stream said, as the core holds it (the sink given to
        ``run_stream`` when it is :class:`~framework.protocols.StreamEvidence`: the PositionBook); ``None``
        when there is none, and then nothing is "known flat".
    :ivar symbols: ``{market id: unified symbol}`` from the loaded markets.
    """

    venue = VENUE

    def __init__(self, config: DriverConfig, exchange: BinanceUsdm) -> None:
        self.config = config
        self.exchange = exchange
        self.stream_state: StreamEvidence | None = None
        self.symbols: dict[str, str] = {}
        self.opened_at: dict[str, int] = {}  # symbol -> latest venue time (ms) a fill / snapshot showed it open
        self.mark_pool: MarkSocketPool | None = None  # the mark-price sockets while watch_mark_prices runs

    # --- what the driver knows about a symbol without asking the venue ---------------------------

    def note_open(self, symbol: str, venue_ms: int | None) -> None:
        """Evidence (venue time) that ``symbol`` had an open position: an entry fill, a snapshot."""
        if venue_ms:
            self.opened_at[symbol] = max(self.opened_at.get(symbol, 0), int(venue_ms))

    def known_flat(self, symbol: str) -> bool:
        """The stream reported ``symbol`` flat after every open the driver knows of (fills, snapshots);
        ``False`` without stream evidence."""
        return stream_flat_since(self.stream_state, symbol, self.opened_at.get(symbol, 0))

    def __repr__(self) -> str:
        return f"BinanceConnection(account={self.config.account!r}, rest_url={self.config.rest_url!r})"

    async def open(self) -> None:
        """Load markets and leverage brackets (so a positions snapshot is one call)."""
        with venue_errors("load markets"):
            await self.exchange.load_markets()
            await self.exchange.load_leverage_brackets()
        self.symbols = {m["id"]: m["symbol"] for m in self.exchange.markets.values() if m.get("linear")}

    async def close(self) -> None:
        await self.exchange.close()

    def market_id(self, symbol: str) -> str:
        return self.exchange.market(symbol)["id"]

    # --- orders --------------------------------------------------------------------------------------

    async def create_market_order(
        self, symbol: str, side: str, amount: Decimal, client_order_id: str, reduce_only: bool = False
    ) -> dict[str, Any]:
        """``POST /fapi/v1/order`` MARKET.  :raises: see :func:`venue_errors` (``write=True``)."""
        params: dict[str, Any] = {"clientOrderId": client_order_id}
        if reduce_only:
            params["reduceOnly"] = True
        try:
            with venue_errors("create market order", symbol=symbol, order_id=client_order_id, write=True):
                return await self.exchange.create_order(symbol, "market", side, str(amount), None, params)
        except OrderRejected as exc:
            if exc.code != DUPLICATE_CLIENT_ID:
                raise
            return await self._the_order_that_exists(symbol, client_order_id, conditional=False, cause=exc)

    async def _the_order_that_exists(
        self, symbol: str, client_order_id: str, *, conditional: bool, cause: OrderRejected
    ) -> dict[str, Any]:
        """-4116: an open order already carries ``client_order_id`` (e.g. a retry after a lost answer), so
        it was not refused: it exists.  Fetched by client id and returned as the creation's answer.

        :raises OutcomeUnknown: the venue cannot show it (never "rejected": it exists).
        """
        log.info("order %s already exists (-4116): resolving it by client order id", client_order_id)
        try:
            return await self.fetch_raw_order(symbol, None, client_order_id, conditional=conditional)
        except VenueError as exc:
            raise OutcomeUnknown(
                f"client order id is duplicated (-4116) but the order cannot be fetched: {exc.message}",
                venue=VENUE, symbol=symbol, order_id=client_order_id, code=cause.code,
            ) from exc

    async def create_conditional(
        self,
        symbol: str,
        side: str,
        kind: str,
        trigger_price: Decimal,
        *,
        amount: Decimal | None = None,
        client_order_id: str,
        resolve_duplicate: bool = True,
    ) -> dict[str, Any]:
        """``POST /fapi/v1/algoOrder`` STOP_MARKET (``kind='stop_loss'``) or TAKE_PROFIT_MARKET, on the mark
        price; ``amount=None`` → ``closePosition=true``, otherwise reduce-only with that quantity.

        :param resolve_duplicate: a -4116 answer is the order that exists (returned); ``False``: raised.
        :raises DuplicateOrderId: -4116 and not ``resolve_duplicate``.
        """
        price_key = "takeProfitPrice" if kind == "take_profit" else "triggerPrice"
        params: dict[str, Any] = {price_key: str(trigger_price), "workingType": "MARK_PRICE",
                                  "clientAlgoId": client_order_id}
        return await self._create_algo(symbol, side, kind, params, amount, client_order_id, resolve_duplicate)

    async def create_trailing(
        self, symbol: str, side: str, amount: Decimal, callback_rate: Decimal, activation_price: Decimal | None,
        *, client_order_id: str,
    ) -> dict[str, Any]:
        """``POST /fapi/v1/algoOrder`` TRAILING_STOP_MARKET on the mark price, reduce-only for ``amount``
        (``closePosition`` is for STOP_MARKET / TAKE_PROFIT_MARKET only): ``callbackRate`` in percent,
        ``activatePrice`` when given (ccxt's ``trailingPercent`` / ``trailingTriggerPrice``)."""
        params: dict[str, Any] = {"trailingPercent": str(callback_rate), "workingType": "MARK_PRICE",
                                  "clientAlgoId": client_order_id}
        if activation_price is not None:
            params["trailingTriggerPrice"] = str(activation_price)
        return await self._create_algo(symbol, side, "trailing_stop", params, amount, client_order_id)

    async def _create_algo(
        self, symbol: str, side: str, kind: str, params: dict[str, Any], amount: Decimal | None, client_order_id: str,
        resolve_duplicate: bool = True,
    ) -> dict[str, Any]:
        if amount is None:
            params["closePosition"] = True
        else:
            params["reduceOnly"] = True
        try:
            with venue_errors(f"place {kind}", symbol=symbol, order_id=client_order_id, write=True):
                return await self.exchange.create_order(
                    symbol, "market", side, None if amount is None else str(amount), None, params
                )
        except OrderRejected as exc:
            if exc.code != DUPLICATE_CLIENT_ID:
                raise
            if not resolve_duplicate:
                raise DuplicateOrderId(exc.message, venue=VENUE, symbol=symbol, order_id=client_order_id,
                                       code=exc.code) from exc
            return await self._the_order_that_exists(symbol, client_order_id, conditional=True, cause=exc)

    async def fetch_raw_order(
        self, symbol: str, order_id: str | None, client_order_id: str | None = None, conditional: bool = False
    ) -> dict[str, Any]:
        """``GET /fapi/v1/order`` (or ``/fapi/v1/algoOrder`` when ``conditional``).  :raises OrderNotFound:"""
        params: dict[str, Any] = {"trigger": True} if conditional else {}
        if order_id is None:
            if client_order_id is None:
                raise OrderNotFound("need an order id or a client order id", venue=VENUE, symbol=symbol)
            params["clientOrderId"] = client_order_id
        with venue_errors("fetch order", symbol=symbol, order_id=order_id or client_order_id):
            return await self.exchange.fetch_order(order_id, symbol, params)

    async def cancel_conditional(self, symbol: str, order_id: str) -> dict[str, Any]:
        """``DELETE /fapi/v1/algoOrder``.  :raises OrderNotFound: unknown or no longer open (-2011)."""
        with venue_errors("cancel conditional order", symbol=symbol, order_id=order_id):
            return await self.exchange.cancel_order(order_id, symbol, {"trigger": True})

    async def position_rows(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """``GET /fapi/v3/positionRisk`` as Binance answers it (raw rows, see :func:`position_from_row`):
        every symbol in one call, or only ``symbol`` (``symbol=``)."""
        params = {} if symbol is None else {"symbol": self.market_id(symbol)}
        with venue_errors("fetch positions", symbol=symbol):
            return list(await self.exchange.fapiPrivateV3GetPositionRisk(params))

    async def open_order_rows(self, conditional: bool) -> list[dict[str, Any]]:
        """``GET /fapi/v1/openOrders`` or ``GET /fapi/v1/openAlgoOrders`` for every symbol (one call), as
        Binance answers it (raw rows, see :func:`order_from_row`)."""
        with venue_errors("fetch open orders"):
            if conditional:
                return list(await self.exchange.fapiPrivateGetOpenAlgoOrders())
            return list(await self.exchange.fapiPrivateGetOpenOrders())

    # --- listen key (user data stream) ---------------------------------------------------------------

    async def listen_key(self) -> str:
        """``POST /fapi/v1/listenKey``: a key for :meth:`user_stream_url` (the account's valid one if any)."""
        with venue_errors("create listen key"):
            answer = await self.exchange.fapiPrivatePostListenKey()
        return str(answer["listenKey"])

    async def keep_alive(self) -> None:
        """``PUT /fapi/v1/listenKey``: extend the key's validity.  :raises VenueError: -1125 gone key."""
        with venue_errors("keep listen key alive"):
            await self.exchange.fapiPrivatePutListenKey()

    def ws_base(self) -> str:
        """Where the streams are: the emulator's ``ws_url``, or Binance's (testnet) futures stream host."""
        if self.config.ws_url:
            return self.config.ws_url.rstrip("/")
        if self.config.testnet:
            return "wss://stream.binancefuture.com"
        return "wss://fstream.binance.com"

    def user_stream_url(self, listen_key: str) -> str:
        """``<ws>/private/ws?listenKey=K&events=...`` (docs/conformance.md B1, B3, B6).

        Since 2026-04-23 the legacy ``<ws>/ws/<listenKey>`` completes the handshake and then stays
        silent.  ``events`` is an allow list on the real venue, so every event the driver acts on is
        named, ``listenKeyExpired`` included (``TRADE_LITE`` repeats ``ORDER_TRADE_UPDATE``: not asked).
        """
        return f"{self.ws_base()}/private/ws?listenKey={quote(listen_key, safe='')}&events={'/'.join(USER_EVENTS)}"

    def market_stream_url(self, streams: list[str]) -> str:
        """``<ws>/market/stream?streams=a/b`` (combined; mark prices live under ``/market``, B1)."""
        return f"{self.ws_base()}/market/stream?streams={'/'.join(streams)}"

    def market_socket_url(self) -> str:
        """``<ws>/market/ws``: a market socket opened with no stream, streams added by ``SUBSCRIBE`` (B1, B26);
        no URL that grows with the number of symbols."""
        return f"{self.ws_base()}/market/ws"


def error_body(exc: BaseException) -> str:
    """A short, secret-free description of an exception for logs."""
    if isinstance(exc, BinanceApiError):
        return json.dumps({"code": exc.code, "msg": exc.msg})
    return type(exc).__name__
