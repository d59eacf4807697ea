"""Bybit v5 (linear) wire façade over :class:`framework.venue.Venue`: real paths, payload shapes, signatures
and error codes on one 127.0.0.1 port (aiohttp), so the real ccxt client and the driver's real
``websockets`` client talk to it unchanged.

REST (Bybit v5 docs): ``/v5/market/time``, ``/v5/market/instruments-info``, the market data a strategy reads
(``/v5/market/tickers``, ``/v5/market/kline`` and ``/v5/market/mark-price-kline`` from the venue's mark-price
path, ``/v5/market/orderbook``: a synthetic book one tick either side of the mark), ``/v5/order/create``
(``Market``, ``Limit`` with ``timeInForce`` GTC / PostOnly / IOC / FOK, conditional by ``triggerPrice``; answers
only ``orderId`` / ``orderLinkId``), ``/v5/order/realtime``, ``/v5/order/history``, ``/v5/order/cancel``,
``/v5/position/list``, ``/v5/position/trading-stop``, ``/v5/account/wallet-balance``, plus what ccxt calls on
its own: ``/v5/user/query-api`` and ``/v5/account/info`` (unified-account check), ``/v5/asset/coin/query-info``
(``load_markets`` with keys).  Private requests are checked like Bybit does: ``X-BAPI-API-KEY`` (10003),
``X-BAPI-TIMESTAMP`` within ``X-BAPI-RECV-WINDOW`` (10002), ``X-BAPI-SIGN`` =
hex(HMAC_SHA256(secret, timestamp + key + recvWindow + query-or-body)) (10004).

WebSocket: ``/v5/private`` (auth ``[key, expires_ms, hex(HMAC_SHA256(secret, "GET/realtime" + expires))]``,
topics ``position`` / ``order`` / ``execution`` / ``wallet``, ``{"op":"ping"}``) and
``/v5/public/linear`` (``tickers.<SYMBOL>``).  Every fault knob of ``venue.faults`` is applied here (REST lag,
HTTP errors, timeouts after accept, periodic disconnects) or by :class:`framework.venue.FrameShaper`.
Limits on the venue's clock (docs/conformance.md Y16, Y17): ``X-Bapi-Limit*`` on every private answer (with
``faults.rate_limits``: 10006 per endpoint, "403, access too frequent" per IP); a private connection with no
ping-pong and no data for ``max_active_time`` (10 minutes by default) is cut.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any, Self

from aiohttp import web

from framework.models import now_ms
from framework.venue import Candle, Venue, VenueOrder, VenuePosition, VenueReject, candles
from framework.venue.harness import EmulatorHarness
from framework.venue.limits import Ban, FixedWindow
from framework.venue.market import synthetic_book, window_stats
from framework.venue.model import BalanceEvent, FillEvent, MarkPriceEvent, OrderEvent, PositionEvent, VenueEvent
from framework.venue.wire import StreamSocket, WireEmulator, WireError, decimal_param, signature_ok
from framework_bybit.decoder import VENUE

log = logging.getLogger(__name__)

PRIVATE_TOPICS = ("position", "order", "execution", "wallet")
#: "for one public connection, you cannot have length of "args" array over 21,000 characters" (bybit docs
#: "WebSocket > Connect", Public channel - Args limits; docs/conformance.md Y20)
PUBLIC_ARGS_CHARS = 21_000
MAX_ACTIVE_MS = 600_000  # a private connection without ping-pong or data is cut after 10 minutes (Y17)
# Bybit v5 "Rate Limit Rules" (docs/v5/rate-limit/rate-limit.mdx): per IP, and per account and endpoint per second
# (the linear column of the table; an endpoint not listed here is assumed 10/s)
IP_REQUESTS_PER_5S = 600
BAPI_LIMIT = web.RequestKey("bapi_limit", dict[str, str])  # a private request's limit headers
IP_BAN_MS = 600_000  # "wait for at least 10 minutes. The ban will be lifted automatically"
API_LIMITS = {"/v5/order/create": 10, "/v5/order/amend": 10, "/v5/order/cancel": 10, "/v5/order/cancel-all": 10,
              "/v5/order/realtime": 50, "/v5/order/history": 50, "/v5/execution/list": 50, "/v5/position/list": 50,
              "/v5/position/set-leverage": 10, "/v5/position/trading-stop": 10, "/v5/account/wallet-balance": 50,
              "/v5/account/info": 50, "/v5/account/fee-rate": 5}

# VenueReject.reason -> (retCode, retMsg); retMsg None = the venue's own message (docs/venue-api.md table).
REJECT_CODES: dict[str, tuple[int, str | None]] = {
    "would_trigger_immediately": (10001, None),
    "reduce_only_rejected": (110017, "Reduce-only rule not satisfied: current position is zero or same side"),
    "zero_position": (10001, "can not set tp/sl/ts for zero position"),
    "not_modified": (34040, "not modified"),
    "order_not_found": (110001, "order not exists or too late to cancel"),
    "duplicate_client_order_id": (110072, "OrderLinkedID is duplicate"),
    "invalid_quantity": (10001, None),
    "invalid_price": (10001, None),
    "invalid_order": (10001, None),
    "unknown_symbol": (10001, None),
    "insufficient_margin": (110007, "ab not enough for new order"),
    "rejected": (10001, None),
}

# lotSizeFilter.minNotionalValue of the linear instruments (the real XRPUSDT / BTCUSDT answer "5"): an
# opening order below it is refused with 110094 "Order notional value below the lower limit" (error.mdx).
# Reduce-only orders are assumed exempt (docs/conformance.md Y9).
MIN_NOTIONAL_VALUE = Decimal(5)
MIN_NOTIONAL_CODE = 110094

_SIDE = {"buy": "Buy", "sell": "Sell"}
_POSITION_SIDE = {"long": "Buy", "short": "Sell", None: ""}
_STOP_ORDER_TYPE = {"stop_market": "Stop", "take_profit_market": "Stop", "trailing_stop_market": "TrailingStop"}
_ORIGIN_STOP_ORDER_TYPE = {"stop_loss": "StopLoss", "take_profit": "TakeProfit", "trailing_stop": "TrailingStop"}
_CREATE_TYPE = {
    "order": "CreateByUser",
    "manual": "CreateByClosing",
    "stop_loss": "CreateByStopLoss",
    "take_profit": "CreateByTakeProfit",
    "trailing_stop": "CreateByTrailingStop",
    "liquidation": "CreateByLiq",
    "adl": "CreateByAdl_PassThrough",
}
_EXEC_TYPE = {"liquidation": "BustTrade", "adl": "AdlTrade"}
_TIME_IN_FORCE = {"GTC": "gtc", "PostOnly": "post_only", "IOC": "ioc", "FOK": "fok"}
_NATIVE_TIME_IN_FORCE = {v: k for k, v in _TIME_IN_FORCE.items()}
# enum.mdx rejectReason of a limit order the venue ended at once: a post-only one that would take liquidity, an
# IOC / FOK one with nothing to take (the FOK code is assumed: docs/conformance.md Y12)
_EXPIRED_REJECT_REASON = {"post_only": "EC_PostOnlyWillTakeLiquidity", "ioc": "EC_NoImmediateQtyToFill",
                          "fok": "EC_CancelForNoFullFill"}
# enum.mdx interval -> minutes (D / W / M as 1, 7 and 30 days; a month of 30 days is assumed)
_KLINE_MINUTES = {**{str(m): m for m in (1, 3, 5, 15, 30, 60, 120, 240, 360, 720)}, "D": 1440, "W": 10080,
                  "M": 43200}
# A position's TP/SL/TS as the system's conditional orders (trading-stop.mdx): kind -> (order type, stopOrderType)
# enum.mdx cancelType: the other leg of a fired Full TP/SL pair.
_OCO_CANCEL_TYPE = {("take_profit", "stop_loss"): "CancelByOCOTpCanceledBySlTriggered",
                    ("stop_loss", "take_profit"): "CancelByOCOSlCanceledByTpTriggered"}
_TPSL_KINDS = {"stop_loss": ("stop_market", "StopLoss"), "take_profit": ("take_profit_market", "TakeProfit"),
               "trailing_stop": ("trailing_stop_market", "TrailingStop")}


def _require_mark_price_triggers(params: dict[str, Any], *pairs: tuple[str, str]) -> None:
    """The venue core triggers on the mark price only, so a price sent with another trigger type is refused
    (10001), not silently triggered on the mark.  Without its trigger type, **assumed** ``LastPrice``:
    create-order.mdx and trading-stop.mdx name no default; ccxt's docstring says LastPrice."""
    for price_field, trigger_field in pairs:
        if params.get(price_field) not in (None, "", "0", 0) and params.get(trigger_field, "LastPrice") != "MarkPrice":
            raise BybitApiReject(10001, f"params error: only {trigger_field}=MarkPrice is modelled here")


def _max_active_ms(value: str | None) -> int:
    """``max_active_time`` of a private connection ("30s" … "600s", "1m" …, default 10 minutes); a value out of
    that range is clamped into it (assumed: the docs give the range, not the answer to a value outside it)."""
    if not value:
        return MAX_ACTIVE_MS
    number, unit = value[:-1], value[-1:]
    if not number.isdigit() or unit not in ("s", "m"):
        return MAX_ACTIVE_MS
    ms = int(number) * (60_000 if unit == "m" else 1_000)
    return min(max(ms, 30_000), MAX_ACTIVE_MS)


class _PrivateSocket(StreamSocket):
    """A ``/v5/private`` connection and how long it may stay silent (``max_active_time``)."""

    def __init__(self, ws: web.WebSocketResponse, max_active_ms: int) -> None:
        super().__init__(ws, private=True)
        self.max_active_ms = max_active_ms


def num(value: Decimal | int | None, empty: str = "0") -> str:
    """Decimal -> Bybit numeric string without exponent (``None`` -> ``empty``)."""
    if value is None:
        return empty
    text = format(Decimal(value).normalize(), "f")
    return text


class BybitApiReject(WireError):
    """An answer with a non-zero retCode (and the HTTP status Bybit uses for it)."""

    def __init__(self, code: int, message: str, status: int = 200) -> None:
        super().__init__(code, message, status)


def _not_a_number(key: str) -> BybitApiReject:
    return BybitApiReject(10001, f"params error: {key} is not a number")


class BybitEmulator(WireEmulator):
    """Bybit v5 wire façade (see the module docstring and :class:`~framework.venue.wire.WireEmulator`).

    :param venue: the simulated venue.
    :param timeout_hold_s: how long an order creation hit by ``timeout_after_accept_next`` is held before
        its connection is dropped (longer than the client's timeout).
    :param realtime_open_only: ``/v5/order/realtime`` answers open orders only, even queried by id (so a
        client has to fall back to ``/v5/order/history``).
    """

    reject_codes = REJECT_CODES
    unknown_reject = (10001, None)
    reject_status = 200  # Bybit answers a refusal with HTTP 200 and its retCode
    topics_unordered = True  # Bybit documents no order between topics (docs/conformance.md Y6)

    def __init__(
        self,
        venue: Venue,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        timeout_hold_s: float = 30.0,
        realtime_open_only: bool = False,
    ) -> None:
        super().__init__(venue, host, port, accept_timeout_hold_s=timeout_hold_s)
        self.realtime_open_only = realtime_open_only
        self.ws_connections: Counter[str] = Counter()  # sockets opened: public / private
        self.public_args_chars = PUBLIC_ARGS_CHARS
        # The positions' TP / SL / trailing stops as system conditional orders (docs/conformance.md Y1-Y5):
        # every such order by id, the open one per (account, symbol, kind), and their cancelType.
        self._tpsl: dict[str, VenueOrder] = {}
        self._tpsl_open: dict[tuple[str, str, str], str] = {}
        self._tpsl_cancel_type: dict[str, str] = {}
        self._tpsl_fired: set[tuple[str, str, str]] = set()
        self._trigger_children: set[str] = set()
        self._tpsl_alias: dict[str, str] = {}  # market order of a fired TP/SL -> the system order's id
        self._executed: dict[str, Decimal] = {}  # order id -> contracts executed so far, while it executes
        #: the IP's requests per 5 s ("600 requests within a 5-second window per IP"), the ban past it, and each
        #: (account, endpoint)'s requests per second (the "API Rate Limit Table"); tests lower the limits
        self.ip_requests = FixedWindow(5_000, IP_REQUESTS_PER_5S)
        self.ip_ban = Ban()
        self._api_windows: dict[tuple[str, str], FixedWindow] = {}
        self._cursors: dict[str, tuple[list[Any], int]] = {}  # next-page cursor -> (listing, offset)
        self._routes: dict[tuple[str, str], tuple[Callable[..., Awaitable[Any]], bool]] = {
            ("GET", "/v5/market/time"): (self._time, False),
            ("GET", "/v5/market/instruments-info"): (self._instruments, False),
            ("GET", "/v5/market/tickers"): (self._tickers, False),
            ("GET", "/v5/market/kline"): (self._kline, False),
            ("GET", "/v5/market/mark-price-kline"): (self._mark_price_kline, False),
            ("GET", "/v5/market/orderbook"): (self._orderbook, False),
            ("GET", "/v5/user/query-api"): (self._query_api, True),
            ("GET", "/v5/account/info"): (self._account_info, True),
            ("GET", "/v5/asset/coin/query-info"): (self._coin_info, True),
            ("POST", "/v5/order/create"): (self._order_create, True),
            ("GET", "/v5/order/realtime"): (self._order_realtime, True),
            ("GET", "/v5/order/history"): (self._order_history, True),
            ("POST", "/v5/order/cancel"): (self._order_cancel, True),
            ("GET", "/v5/position/list"): (self._position_list, True),
            ("POST", "/v5/position/trading-stop"): (self._trading_stop, True),
            ("GET", "/v5/account/wallet-balance"): (self._wallet_balance, True),
        }

    @property
    def timeout_hold_s(self) -> float:
        """How long an order creation hit by ``timeout_after_accept_next`` is held."""
        return self.accept_timeout_hold_s

    @timeout_hold_s.setter
    def timeout_hold_s(self, value: float) -> None:
        self.accept_timeout_hold_s = value

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v5/private", self._private_ws)
        router.add_get("/v5/public/linear", self._public_ws)
        for method, path in self._routes:
            router.add_route(method, path, self._rest)

    # --- REST plumbing ---------------------------------------------------------------------------------

    def _envelope(self, code: int, message: str, result: Any) -> dict[str, Any]:
        return {"retCode": code, "retMsg": message, "result": result, "retExtInfo": {}, "time": now_ms()}

    def http_fault_response(self, status: int) -> web.StreamResponse:
        if status == 429:  # with the documented limit headers (Bybit v5 "Rate Limit"); the reset is assumed 1 s on
            headers = {"X-Bapi-Limit-Status": "0", "X-Bapi-Limit": "10",
                       "X-Bapi-Limit-Reset-Timestamp": str(now_ms() + 1_000)}
            return self.error_response(BybitApiReject(10006, "Too many visits!", 429), headers)
        return web.Response(status=status, text=f"{status} emulated gateway error")

    def error_response(self, error: WireError, headers: dict[str, str] | None = None) -> web.StreamResponse:
        return web.json_response(self._envelope(error.code, error.message, {}), status=error.status, headers=headers)

    def admit(self, request: web.Request) -> web.StreamResponse | None:
        """Y16: with ``faults.rate_limits``, more than ``ip_requests`` allows from the IP is "403, access too
        frequent" and a 10-minute ban (counted either way)."""
        now = self.venue.now()
        within = self.ip_requests.charge(now)
        if not self.venue.faults.rate_limits:
            return None
        if not within and not self.ip_ban.active(now):
            self.ip_ban.impose(now, IP_BAN_MS)
        if self.ip_ban.active(now):
            return web.Response(status=403, text="403, access too frequent")  # the body is assumed
        return None

    def usage_headers(self, request: web.Request) -> dict[str, str]:
        """Y16: a private answer carries its endpoint's ``X-Bapi-Limit`` / ``-Status`` / ``-Reset-Timestamp``."""
        return request.get(BAPI_LIMIT, {})

    def _charge_api_limit(self, request: web.Request, account: str) -> None:
        """:raises BybitApiReject: 10006 when ``account`` is over the endpoint's limit this second (with
        ``faults.rate_limits``)."""
        now = self.venue.now()
        window = self._api_windows.setdefault((account, request.path),
                                              FixedWindow(1000, API_LIMITS.get(request.path, 10)))
        within = window.charge(now)
        request[BAPI_LIMIT] = {"X-Bapi-Limit": str(window.limit), "X-Bapi-Limit-Status": str(window.remaining()),
                                 "X-Bapi-Limit-Reset-Timestamp": str(now if within else window.reset_at(now))}
        if not within and self.venue.faults.rate_limits:
            raise BybitApiReject(10006, "Too many visits!", 429)

    async def on_clock(self, now_ms: int) -> None:
        """Y17: "if there is no "ping-pong" and no stream data sent from server end, the connection will be cut
        off after 10 minutes" (or ``max_active_time``), on the venue's clock."""
        for sock in [s for s in self.sockets if isinstance(s, _PrivateSocket)]:
            if now_ms - sock.last_active_ms > sock.max_active_ms:
                with contextlib.suppress(Exception):
                    await sock.ws.close(code=1000, message=b"no ping-pong: connection cut")

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        handler, private = self._routes[(request.method, request.path)]
        body = await request.text() if request.method == "POST" else ""
        if request.method == "POST":
            try:
                params = json.loads(body) if body else {}
            except ValueError:
                raise BybitApiReject(10001, "request body is not JSON") from None
            if not isinstance(params, dict):
                raise BybitApiReject(10001, "request body is not a JSON object")
        else:
            params = dict(request.query)
        account = self._authenticate(request, body) if private else None
        if account is not None:
            self._charge_api_limit(request, account)
        result = await handler(params, account, request) if private else await handler(params)
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(self._envelope(0, "OK", result))

    def _authenticate(self, request: web.Request, body: str) -> str:
        headers = request.headers
        api_key = headers.get("X-BAPI-API-KEY", "")
        account = self.venue.account_for_key(api_key) if api_key else None
        if account is None:
            raise BybitApiReject(10003, "API key is invalid.", status=401)
        timestamp, recv_window = headers.get("X-BAPI-TIMESTAMP", ""), headers.get("X-BAPI-RECV-WINDOW", "5000")
        try:
            ts, window = int(timestamp), int(recv_window)
        except ValueError:
            raise BybitApiReject(10002, "invalid request, please check your timestamp and recv_window param") from None
        server = now_ms()
        if not (server - window <= ts < server + 1000):
            raise BybitApiReject(
                10002,
                "invalid request, please check your server timestamp or recv_window param. "
                f"req_timestamp[{ts}],server_timestamp[{server}],recv_window[{window}]",
            )
        payload = timestamp + api_key + recv_window + (body if request.method == "POST" else request.query_string)
        if not signature_ok(self.venue.account_secret(account), payload, headers.get("X-BAPI-SIGN", "")):
            raise BybitApiReject(10004, "error sign! please check your signature generation", status=401)
        return account

    def _instrument(self, params: dict[str, Any]):
        native = params.get("symbol")
        if not native:
            raise BybitApiReject(10001, "params error: symbol is required")
        return self.venue.instrument_by_id(str(native))

    @staticmethod
    def _decimal(params: dict[str, Any], key: str) -> Decimal | None:
        return decimal_param(params, key, _not_a_number)

    @staticmethod
    def _linear_only(params: dict[str, Any]) -> None:
        if params.get("category") != "linear":
            raise BybitApiReject(10001, "params error: this venue serves category=linear only")

    # --- public REST ---------------------------------------------------------------------------------

    async def _time(self, params: dict[str, Any]) -> dict[str, Any]:
        now = now_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    async def _instruments(self, params: dict[str, Any]) -> dict[str, Any]:
        rows = []
        if params.get("category") == "linear" and params.get("status", "Trading") == "Trading":
            for instrument in self.venue.instruments.values():
                if params.get("symbol") and params["symbol"] != instrument.id:
                    continue
                rows.append({
                    "symbol": instrument.id,
                    "contractType": "LinearPerpetual",
                    "status": "Trading",
                    "baseCoin": instrument.base,
                    "quoteCoin": instrument.quote,
                    "launchTime": "1585526400000",
                    "deliveryTime": "0",
                    "deliveryFeeRate": "",
                    "priceScale": str(max(0, -instrument.tick_size.normalize().as_tuple().exponent)),
                    "leverageFilter": {"minLeverage": "1", "maxLeverage": num(instrument.max_leverage),
                                       "leverageStep": "0.01"},
                    "priceFilter": {"minPrice": num(instrument.tick_size), "maxPrice": "1999999",
                                    "tickSize": num(instrument.tick_size)},
                    "lotSizeFilter": {"maxOrderQty": "1000000", "minOrderQty": num(instrument.min_amount),
                                      "qtyStep": num(instrument.step_size), "postOnlyMaxOrderQty": "1000000",
                                      "maxMktOrderQty": "1000000",
                                      "minNotionalValue": num(MIN_NOTIONAL_VALUE)},
                    "unifiedMarginTrade": True,
                    "fundingInterval": 480,
                    "settleCoin": instrument.quote,
                })
        return {"category": params.get("category", ""), "list": rows, "nextPageCursor": None}

    async def _tickers(self, params: dict[str, Any]) -> dict[str, Any]:
        """``/v5/market/tickers`` (bybit docs ``market/tickers.mdx``, the linear shape): prices from the mark;
        the 24 h figures from the mark history; volume / open interest 0 (no trades are simulated)."""
        self._linear_only(params)
        instruments = [self._instrument(params)] if params.get("symbol") else list(self.venue.instruments.values())
        return {"category": "linear", "list": [self._ticker_row(i.symbol) for i in instruments]}

    def _ticker_row(self, symbol: str) -> dict[str, Any]:
        instrument = self.venue.instrument(symbol)
        day, hour = window_stats(self.venue, symbol, 86_400_000), window_stats(self.venue, symbol, 3_600_000)
        mark, now = day.last, self.venue.now()
        (bid, bid_size), (ask, ask_size) = (side[0] for side in synthetic_book(self.venue, symbol, 1))
        return {
            "symbol": instrument.id, "lastPrice": num(mark), "indexPrice": num(mark), "markPrice": num(mark),
            "prevPrice24h": num(day.open), "price24hPcnt": num(round((mark - day.open) / day.open, 6)),
            "highPrice24h": num(day.high), "lowPrice24h": num(day.low),
            "prevPrice1h": num(hour.open), "openInterest": "0", "openInterestValue": "0",
            "turnover24h": "0", "volume24h": "0", "fundingRate": "0.0001",
            "nextFundingTime": str((now // 28_800_000 + 1) * 28_800_000), "predictedDeliveryPrice": "",
            "basisRate": "", "deliveryFeeRate": "", "deliveryTime": "0",
            "ask1Size": num(ask_size), "bid1Price": num(bid), "ask1Price": num(ask), "bid1Size": num(bid_size),
            "basis": "", "preOpenPrice": "", "preQty": "", "curPreListingPhase": "", "fundingIntervalHour": "8",
            "basisRateYear": "", "fundingCap": "0.005",
        }

    def _candles(self, params: dict[str, Any]) -> tuple[Any, list[Candle]]:
        self._linear_only(params)
        instrument = self._instrument(params)
        minutes = _KLINE_MINUTES.get(str(params.get("interval", "")))
        if minutes is None:
            raise BybitApiReject(10001, "Invalid period!")
        try:
            limit = int(params.get("limit") or 200)
            start = int(params["start"]) if params.get("start") else None
            end = int(params["end"]) if params.get("end") else None
        except ValueError:
            raise BybitApiReject(10001, "params error: start / end / limit") from None
        if not 1 <= limit <= 1000:
            raise BybitApiReject(10001, "params error: limit must be 1..1000")
        history = self.venue.mark_history(instrument.symbol)
        return instrument, candles(history, minutes * 60_000, start, end, limit)[::-1]  # newest first

    async def _kline(self, params: dict[str, Any]) -> dict[str, Any]:
        """``/v5/market/kline`` (``market/kline.mdx``): candles of the mark-price path, newest first; volume and
        turnover 0 (no trades are simulated; assumed, docs/conformance.md Y11)."""
        instrument, rows = self._candles(params)
        return {"symbol": instrument.id, "category": "linear", "list": [
            [str(c.open_ms), num(c.open), num(c.high), num(c.low), num(c.close), "0", "0"] for c in rows]}

    async def _mark_price_kline(self, params: dict[str, Any]) -> dict[str, Any]:
        """``/v5/market/mark-price-kline`` (``market/mark-kline.mdx``): the same candles without volume."""
        instrument, rows = self._candles(params)
        return {"symbol": instrument.id, "category": "linear", "list": [
            [str(c.open_ms), num(c.open), num(c.high), num(c.low), num(c.close)] for c in rows]}

    async def _orderbook(self, params: dict[str, Any]) -> dict[str, Any]:
        """``/v5/market/orderbook`` (``market/orderbook.mdx``): ``limit`` (1..200, default 25) levels a tick
        apart either side of the mark, 1000 × the minimum size each (a synthetic book: assumed, Y11)."""
        self._linear_only(params)
        instrument = self._instrument(params)
        try:
            limit = int(params.get("limit") or 25)
        except ValueError:
            raise BybitApiReject(10001, "params error: limit") from None
        if not 1 <= limit <= 200:
            raise BybitApiReject(10001, "params error: limit must be 1..200")
        bids, asks = synthetic_book(self.venue, instrument.symbol, limit)
        now = self.venue.now()
        return {"s": instrument.id, "b": [[num(p), num(q)] for p, q in bids], "a": [[num(p), num(q)] for p, q in asks],
                "ts": now, "u": len(self.venue.mark_history(instrument.symbol)), "seq": now, "cts": now}

    # --- account -------------------------------------------------------------------------------------

    async def _query_api(self, params: dict[str, Any], account: str, request: web.Request) -> dict[str, Any]:
        return {
            "id": "1", "note": "framework emulator", "apiKey": request.headers["X-BAPI-API-KEY"], "readOnly": 0,
            "secret": "", "permissions": {"ContractTrade": ["Order", "Position"], "Wallet": ["AccountTransfer"]},
            "ips": ["*"], "type": 1, "deadlineDay": -1, "expiredAt": "", "createdAt": "2024-01-01T00:00:00Z",
            "unified": 0, "uta": 1, "userID": 1, "inviterID": 0, "vipLevel": "No VIP", "mktMakerLevel": "0",
            "affiliateID": 0, "rsaPublicKey": "", "isMaster": True,
        }

    async def _account_info(self, params: dict[str, Any], account: str, request: web.Request) -> dict[str, Any]:
        return {"marginMode": "REGULAR_MARGIN", "updatedTime": str(now_ms()), "unifiedMarginStatus": 6,
                "dcpStatus": "OFF", "timeWindow": 10, "smpGroup": 0, "isMasterTrader": False,
                "spotHedgingStatus": "OFF"}

    async def _coin_info(self, params: dict[str, Any], account: str, request: web.Request) -> dict[str, Any]:
        coins = sorted({"USDT", *(i.base for i in self.venue.instruments.values())})
        return {"rows": [{"name": c, "coin": c, "remainAmount": "1000000", "chains": []} for c in coins]}

    async def _wallet_balance(self, params: dict[str, Any], account: str, request: web.Request) -> dict[str, Any]:
        return {"list": [self._wallet_row(self.venue.balance(account), rest=True)]}

    @staticmethod
    def _wallet_row(balance: dict[str, Decimal], rest: bool) -> dict[str, Any]:
        total, available, upl = balance["total"], balance["available"], balance["unrealized_pnl"]
        equity = total + upl
        coin = {
            "coin": "USDT", "equity": num(equity), "usdValue": num(equity), "walletBalance": num(total),
            "availableToWithdraw": num(available), "availableToBorrow": "", "borrowAmount": "0",
            "accruedInterest": "0", "totalOrderIM": "0", "totalPositionIM": num(total + upl - available),
            "totalPositionMM": "0", "unrealisedPnl": num(upl), "cumRealisedPnl": "0", "bonus": "0",
            "collateralSwitch": True, "marginCollateral": True, "locked": "0", "spotHedgingQty": "0",
            "spotBorrow": "0",
        }
        row = {
            "accountIMRate": "0", "accountIMRateByMp": "0", "accountMMRate": "0", "accountMMRateByMp": "0",
            "totalEquity": num(equity), "totalWalletBalance": num(total), "totalMarginBalance": num(equity),
            "totalAvailableBalance": num(available), "totalPerpUPL": num(upl),
            "totalInitialMargin": num(total + upl - available), "totalInitialMarginByMp": "0",
            "totalMaintenanceMargin": "0", "totalMaintenanceMarginByMp": "0", "coin": [coin],
            "accountLTV": "0", "accountType": "UNIFIED",
        }
        if rest:
            for key in ("accountIMRateByMp", "accountMMRateByMp", "totalInitialMarginByMp",
                        "totalMaintenanceMarginByMp"):
                row.pop(key)
            coin.pop("spotHedgingQty")
        return row

    # --- orders --------------------------------------------------------------------------------------

    async def _order_create(self, params: dict[str, Any], account: str, request: web.Request) -> Any:
        self._linear_only(params)
        instrument = self._instrument(params)
        side = {"Buy": "buy", "Sell": "sell"}.get(str(params.get("side")))
        if side is None:
            raise BybitApiReject(10001, "params error: side invalid")
        if params.get("orderType") not in ("Market", "Limit"):
            raise BybitApiReject(10001, f"params error: orderType {params.get('orderType')!r} invalid")
        if str(params.get("positionIdx", 0)) != "0":
            raise BybitApiReject(10001, "position idx not match position mode")
        if params.get("tpslMode", "Full") != "Full":
            raise BybitApiReject(10001, "params error: only tpslMode=Full is supported")
        _require_mark_price_triggers(params, ("triggerPrice", "triggerBy"), ("stopLoss", "slTriggerBy"),
                                     ("takeProfit", "tpTriggerBy"))
        trigger = self._decimal(params, "triggerPrice")
        kwargs: dict[str, Any] = {}
        order_type = "market"
        if trigger is not None:
            direction = str(params.get("triggerDirection", ""))
            if direction not in ("1", "2"):
                raise BybitApiReject(10001, "params error: TriggerDirection invalid")
            falls = direction == "2"
            order_type = "stop_market" if falls == (side == "sell") else "take_profit_market"
            kwargs["trigger_price"] = trigger
        if params.get("orderType") == "Limit":  # create-order.mdx: price required, timeInForce default GTC
            if trigger is not None:
                raise BybitApiReject(10001, "params error: conditional Limit orders are not modelled here")
            time_in_force = _TIME_IN_FORCE.get(str(params.get("timeInForce") or "GTC"))
            if time_in_force is None:
                raise BybitApiReject(10001, f"params error: timeInForce {params.get('timeInForce')!r} invalid")
            order_type = "limit"
            kwargs.update(price=self._decimal(params, "price"), time_in_force=time_in_force)
        reduce_only = bool(params.get("reduceOnly")) or bool(params.get("closeOnTrigger"))
        qty = self._decimal(params, "qty")
        reference = kwargs.get("price") or self.venue.mark_price(instrument.symbol)
        if not reduce_only and qty is not None and qty * reference < MIN_NOTIONAL_VALUE:
            raise BybitApiReject(MIN_NOTIONAL_CODE, "Order notional value below the lower limit")
        try:
            order = self.venue.place_order(
                account, instrument.symbol, side, order_type, qty,
                client_order_id=params.get("orderLinkId") or None, reduce_only=reduce_only,
                stop_loss=self._decimal(params, "stopLoss"), take_profit=self._decimal(params, "takeProfit"),
                **kwargs,
            )
        except VenueReject as reject:
            if reject.reason == "would_trigger_immediately":
                raise BybitApiReject(10001, self._crossed_message(params, side, instrument.symbol)) from None
            raise
        await self.hold_if_unanswered(request)
        order_id = "" if self.answer_without_order_id() else order.id
        return {"orderId": order_id, "orderLinkId": order.client_order_id or ""}

    def _crossed_message(self, params: dict[str, Any], side_or_position: str, symbol: str) -> str:
        """Bybit's 10001 text for a stop / take-profit on the wrong side of the base (mark) price."""
        long = side_or_position in ("buy", "long")
        mark = num(self.venue.mark_price(symbol))
        position_side = "Buy" if long else "Sell"
        if params.get("stopLoss") not in (None, "", "0"):
            return (f"StopLoss:{params['stopLoss']} set for {position_side} position should "
                    f"{'lower' if long else 'higher'} than base_price:{mark}??MarkPrice")
        if params.get("takeProfit") not in (None, "", "0"):
            return (f"TakeProfit:{params['takeProfit']} set for {position_side} position should "
                    f"{'higher' if long else 'lower'} than base_price:{mark}??MarkPrice")
        return f"expect Rising/Falling trigger price, but trigger_price:{params.get('triggerPrice')} vs mark {mark}"

    def _find_orders(self, params: dict[str, Any], account: str, open_only: bool = False) -> list[VenueOrder]:
        """Orders matching ``symbol`` / ``orderId`` / ``orderLinkId`` (of any status, or ``open_only``),
        oldest first."""
        symbol = self.venue.instrument_by_id(str(params["symbol"])).symbol if params.get("symbol") else None
        order_id, link_id = params.get("orderId") or None, params.get("orderLinkId") or None
        system = [o for o in self._tpsl.values() if o.account == account and symbol in (None, o.symbol)]
        if order_id in self._tpsl:
            return [o for o in system if o.id == order_id and not link_id]
        if order_id or link_id:
            try:
                return [self.venue.get_order(account, symbol, order_id, link_id)]
            except VenueReject:
                return []
        orders = self.venue.orders(account, symbol, open_only=open_only)
        if self._tpsl_alias:  # a fired TP/SL's market order is shown as the system order
            orders = [o for o in orders if o.id not in self._tpsl_alias]
        system = [o for o in system if o.is_open or not open_only]
        return sorted(orders + system, key=lambda o: o.created_ms) if system else orders

    async def _order_realtime(self, params: dict[str, Any], account: str, request: web.Request) -> dict[str, Any]:
        self._linear_only(params)

        def listing() -> list[VenueOrder]:
            by_id = bool(params.get("orderId") or params.get("orderLinkId"))
            orders = self.visible_orders(self._find_orders(params, account, open_only=not by_id))
            if not by_id or self.realtime_open_only:  # Bybit lists recent closed orders only when asked by id
                orders = [o for o in orders if o.is_open]
            if params.get("orderFilter") == "StopOrder":
                orders = [o for o in orders if o.conditional]
            if self.venue.faults.list_no_stops and not by_id:
                orders = [o for o in orders if not o.conditional]
            return orders[::-1]

        rows, cursor = self._page(listing, self._order_row, params, default=20, maximum=50)
        return {"list": rows, "nextPageCursor": cursor, "category": "linear"}

    async def _order_history(self, params: dict[str, Any], account: str, request: web.Request) -> dict[str, Any]:
        self._linear_only(params)
        orders = [o for o in self.visible_orders(self._find_orders(params, account)) if not o.is_open]
        return {"list": [self._order_row(o) for o in orders[::-1]], "nextPageCursor": "", "category": "linear"}

    async def _order_cancel(self, params: dict[str, Any], account: str, request: web.Request) -> dict[str, Any]:
        self._linear_only(params)
        instrument = self._instrument(params)
        system = self._tpsl.get(str(params.get("orderId") or ""))
        if system is not None:  # a position's TP/SL: cancelling it removes it from the position (Y5)
            if not system.is_open or system.symbol != instrument.symbol or system.account != account:
                raise VenueReject("order_not_found", "order not exists or too late to cancel")
            self.venue.set_trading_stop(account, system.symbol, **{system.origin: Decimal(0)})
            return {"orderId": system.id, "orderLinkId": ""}
        order = self.venue.cancel_order(account, instrument.symbol, params.get("orderId") or None,
                                        params.get("orderLinkId") or None)
        return {"orderId": order.id, "orderLinkId": order.client_order_id or ""}

    def _order_fields(self, order: VenueOrder) -> dict[str, Any]:
        """Every field Bybit puts on an order, REST and stream alike (each picks its own subset)."""
        instrument = self.venue.instrument(order.symbol)
        amount = order.amount if order.amount is not None else Decimal(0)
        leaves = amount - order.filled if order.is_open else Decimal(0)
        status = {
            "new": "Untriggered" if order.conditional else "New",
            "partially_filled": "PartiallyFilled",
            "filled": "Filled",
            "canceled": "Deactivated" if order.conditional else "Cancelled",
            "rejected": "Rejected",
            "expired": "Deactivated" if order.conditional else "Cancelled",
            "triggered": "Triggered",
        }[order.status]
        stop_order_type = _STOP_ORDER_TYPE.get(order.type) or _ORIGIN_STOP_ORDER_TYPE.get(order.origin, "")
        direction = 0
        if order.trigger_price is not None:
            falls = (order.type != "take_profit_market") == (order.side == "sell")
            direction = 2 if falls else 1
        system = order.id in self._tpsl
        if system:
            stop_order_type = _TPSL_KINDS[order.origin][1]
        limit = order.type == "limit"
        cancel_type = "CancelByUser" if order.status == "canceled" else "UNKNOWN"
        reject_reason = "EC_NoError" if order.status != "rejected" else "EC_Others"
        if limit and order.status == "expired":  # a limit order the venue ended: Cancelled (enum.mdx)
            status = "Cancelled"
            if order.created_ms == order.updated_ms and order.time_in_force in _EXPIRED_REJECT_REASON:
                reject_reason = _EXPIRED_REJECT_REASON[order.time_in_force]  # at once: post-only / IOC / FOK
            else:
                cancel_type = "CancelByReduceOnly"  # a reduce-only one with nothing left to reduce
        elif order.type == "market" and order.status == "expired":  # the IOC remainder the book could not take
            reject_reason = "EC_NoEnoughQtyToFill"  # assumed (docs/conformance.md Y14)
        fields = {
            "category": "linear", "symbol": instrument.id, "orderId": order.id,
            "orderLinkId": order.client_order_id or "", "blockTradeId": "", "side": _SIDE[order.side],
            "orderType": "Limit" if limit else "Market", "cancelType": cancel_type,
            "price": num(order.price), "qty": num(amount), "orderIv": "", "isLeverage": "",
            "timeInForce": _NATIVE_TIME_IN_FORCE.get(order.time_in_force or "", "IOC"),
            "orderStatus": status, "lastPriceOnCreated": num(self.venue.mark_price(order.symbol)),
            "reduceOnly": order.reduce_only or order.close_position, "leavesQty": num(leaves),
            "leavesValue": num(leaves * (order.price or order.average or order.trigger_price or Decimal(0))),
            "cumExecQty": num(order.filled), "cumExecValue": num(order.filled * (order.average or 0)),
            "avgPrice": num(order.average, empty=""), "positionIdx": 0, "cumExecFee": num(order.fee),
            "closedPnl": num(order.realized_pnl), "createdTime": str(order.created_ms),
            "updatedTime": str(order.updated_ms),
            "rejectReason": reject_reason,
            "stopOrderType": stop_order_type, "tpslMode": "", "triggerPrice": num(order.trigger_price),
            "takeProfit": "0", "stopLoss": "0", "tpTriggerBy": "", "slTriggerBy": "", "tpLimitPrice": "0",
            "slLimitPrice": "0", "triggerDirection": direction,
            "triggerBy": "MarkPrice" if order.trigger_price is not None else "",
            "closeOnTrigger": order.close_position, "placeType": "", "smpType": "None", "smpGroup": 0,
            "smpOrderId": "", "feeCurrency": "", "cumFeeDetail": {"USDT": num(order.fee)},
            "rpiTakerAccess": False, "rpiMatchedQty": "0", "createType": _CREATE_TYPE.get(order.origin, "CreateByUser"),
        }
        if system:
            fields.update(tpslMode="Full", closeOnTrigger=True, reduceOnly=True,
                          cancelType=self._tpsl_cancel_type[order.id])
        return fields

    _REST_ORDER_KEYS = (
        "orderId", "orderLinkId", "blockTradeId", "symbol", "price", "qty", "side", "isLeverage", "positionIdx",
        "orderStatus", "cancelType", "rejectReason", "avgPrice", "leavesQty", "leavesValue", "cumExecQty",
        "cumExecValue", "cumExecFee", "timeInForce", "orderType", "stopOrderType", "orderIv", "triggerPrice",
        "takeProfit", "stopLoss", "tpTriggerBy", "slTriggerBy", "triggerDirection", "triggerBy",
        "lastPriceOnCreated", "reduceOnly", "closeOnTrigger", "smpType", "smpGroup", "smpOrderId", "tpslMode",
        "tpLimitPrice", "slLimitPrice", "placeType", "createdTime", "updatedTime",
    )
    _STREAM_ORDER_KEYS = (
        "symbol", "orderId", "side", "orderType", "cancelType", "price", "qty", "orderIv", "timeInForce",
        "orderStatus", "orderLinkId", "lastPriceOnCreated", "reduceOnly", "leavesQty", "leavesValue",
        "cumExecQty", "cumExecValue", "avgPrice", "blockTradeId", "positionIdx", "cumExecFee", "closedPnl",
        "createdTime", "updatedTime", "rejectReason", "stopOrderType", "tpslMode", "triggerPrice", "takeProfit",
        "stopLoss", "tpTriggerBy", "slTriggerBy", "tpLimitPrice", "slLimitPrice", "triggerDirection",
        "triggerBy", "closeOnTrigger", "category", "placeType", "smpType", "smpGroup", "smpOrderId",
        "feeCurrency", "cumFeeDetail", "rpiTakerAccess", "rpiMatchedQty", "createType",
    )

    def _order_row(self, order: VenueOrder) -> dict[str, Any]:
        fields = self._order_fields(order)
        return {key: fields[key] for key in self._REST_ORDER_KEYS}

    MAX_CURSORS = 64  # listings kept for their next pages (oldest forgotten first)

    def _page(self, listing: Callable[[], list[Any]], row: Callable[[Any], dict[str, Any]], params: dict[str, Any],
              *, default: int, maximum: int) -> tuple[list[dict[str, Any]], str]:
        """Bybit cursor paging: ``limit`` (1..maximum, default ``default``) rows and the next cursor, or
        ``""`` on the last page.  The first page takes the listing once and keeps it under an opaque cursor,
        so each further page costs only its own rows (and pages do not shift while the venue changes)."""
        try:
            limit = int(params.get("limit") or default)
        except ValueError:
            raise BybitApiReject(10001, "params error: limit") from None
        if not 1 <= limit <= maximum:
            raise BybitApiReject(10001, f"params error: limit must be 1..{maximum}")
        cursor = params.get("cursor")
        if cursor:
            if cursor not in self._cursors:
                raise BybitApiReject(10001, "params error: cursor invalid or expired")
            items, start = self._cursors[cursor]  # kept: a page asked again after a lost answer is the same
        else:
            items, start = listing(), 0
        end = start + limit
        following = ""
        if end < len(items):
            following = uuid.uuid4().hex
            self._cursors[following] = (items, end)
            while len(self._cursors) > self.MAX_CURSORS:
                self._cursors.pop(next(iter(self._cursors)))
        return [row(item) for item in items[start:end]], following

    # --- positions -----------------------------------------------------------------------------------

    def _position_fields(self, position: VenuePosition) -> dict[str, Any]:
        instrument = self.venue.instrument(position.symbol)
        leverage = self.venue.leverage(position.account, position.symbol)
        value = position.contracts * position.entry_price
        margin = value / leverage if leverage else Decimal(0)
        created = position.opened_ms if position.opened_ms is not None else position.updated_ms
        return {
            "category": "linear", "positionIdx": 0, "riskId": 1, "riskLimitValue": "2000000",
            "symbol": instrument.id, "side": _POSITION_SIDE[position.side], "size": num(position.contracts),
            "avgPrice": num(position.entry_price), "entryPrice": num(position.entry_price),
            "positionValue": num(value), "tradeMode": 0, "positionStatus": "Normal", "autoAddMargin": 0,
            "adlRankIndicator": 2 if position.is_open else 0, "leverage": str(leverage),
            "breakEvenPrice": num(position.entry_price), "positionBalance": num(margin),
            "markPrice": num(position.mark_price), "liqPrice": "", "bustPrice": "",
            "positionMM": "0", "positionMMByMp": "0", "positionIM": num(margin), "positionIMByMp": num(margin),
            "tpslMode": "Full", "takeProfit": num(position.take_profit), "stopLoss": num(position.stop_loss),
            "trailingStop": num(position.trailing_stop), "activePrice": num(position.trailing_active_price),
            "unrealisedPnl": num(position.unrealized_pnl), "curRealisedPnl": num(position.realized_pnl),
            "cumRealisedPnl": num(position.realized_pnl), "seq": position.seq, "isReduceOnly": False,
            "mmrSysUpdateTime": "", "mmrSysUpdatedTime": "", "leverageSysUpdatedTime": "",
            "sessionAvgPrice": num(position.entry_price), "createdTime": str(created),
            "updatedTime": str(position.updated_ms),
        }

    _REST_POSITION_KEYS = (
        "positionIdx", "riskId", "riskLimitValue", "symbol", "side", "size", "avgPrice", "positionValue",
        "tradeMode", "positionStatus", "autoAddMargin", "adlRankIndicator", "leverage", "breakEvenPrice",
        "positionBalance", "markPrice", "liqPrice", "bustPrice", "positionMM", "positionMMByMp", "positionIM",
        "positionIMByMp", "tpslMode", "takeProfit", "stopLoss", "trailingStop", "unrealisedPnl",
        "curRealisedPnl", "cumRealisedPnl", "seq", "isReduceOnly", "mmrSysUpdateTime", "leverageSysUpdatedTime",
        "sessionAvgPrice", "createdTime", "updatedTime",
    )
    _STREAM_POSITION_KEYS = (
        "positionIdx", "tradeMode", "riskId", "riskLimitValue", "symbol", "side", "size", "entryPrice",
        "leverage", "breakEvenPrice", "positionValue", "positionBalance", "markPrice", "positionIM",
        "positionIMByMp", "positionMM", "positionMMByMp", "takeProfit", "stopLoss", "trailingStop",
        "unrealisedPnl", "curRealisedPnl", "cumRealisedPnl", "sessionAvgPrice", "createdTime", "updatedTime",
        "tpslMode", "liqPrice", "bustPrice", "category", "positionStatus", "adlRankIndicator", "autoAddMargin",
        "leverageSysUpdatedTime", "mmrSysUpdatedTime", "seq", "isReduceOnly",
    )

    async def _position_list(self, params: dict[str, Any], account: str, request: web.Request) -> dict[str, Any]:
        self._linear_only(params)
        symbol = self._instrument(params).symbol if params.get("symbol") else None
        if symbol is None and not (params.get("settleCoin") or params.get("baseCoin")):
            raise BybitApiReject(10001, "params error: symbol or settleCoin is required")

        def positions() -> list[VenuePosition]:  # taken once per listing: further pages come from the cursor
            visible = {p.symbol: p for p in self.visible_positions(account)}
            if symbol is None:
                return list(visible.values())
            return [visible.get(symbol) or VenuePosition(account=account, symbol=symbol,
                                                         mark_price=self.venue.mark_price(symbol))]

        def row(position: VenuePosition) -> dict[str, Any]:
            fields = self._position_fields(position)
            if self.venue.faults.list_no_stops:
                fields.update(stopLoss="0", takeProfit="0")
            return {key: fields[key] for key in self._REST_POSITION_KEYS}

        rows, cursor = self._page(positions, row, params, default=20, maximum=200)
        return {"list": rows, "nextPageCursor": cursor, "category": "linear"}

    async def _trading_stop(self, params: dict[str, Any], account: str, request: web.Request) -> dict[str, Any]:
        self._linear_only(params)
        instrument = self._instrument(params)
        if params.get("tpslMode", "Full") != "Full":
            raise BybitApiReject(10001, "params error: only tpslMode=Full is supported")
        if str(params.get("positionIdx", 0)) != "0":
            raise BybitApiReject(10001, "position idx not match position mode")
        missing = [name for name in ("tpslMode", "positionIdx") if name not in params]  # required: trading-stop.mdx
        if missing:
            raise BybitApiReject(10001, f"params error: {', '.join(missing)} required")  # wording assumed
        _require_mark_price_triggers(params, ("stopLoss", "slTriggerBy"), ("takeProfit", "tpTriggerBy"))
        opened = self.venue.position(account, instrument.symbol).opened_ms
        lag = self.venue.faults.order_visibility_lag_ms
        if lag > 0 and opened is not None and opened > self.venue.now() - lag:  # not visible yet (assumed, Y8)
            raise BybitApiReject(10001, REJECT_CODES["zero_position"][1] or "")
        try:
            self.venue.set_trading_stop(
                account, instrument.symbol,
                stop_loss=self._decimal(params, "stopLoss"), take_profit=self._decimal(params, "takeProfit"),
                trailing_stop=self._decimal(params, "trailingStop"),
                active_price=self._decimal(params, "activePrice"),
            )
        except VenueReject as reject:
            if reject.reason == "would_trigger_immediately":
                side = self.venue.position(account, instrument.symbol).side or ""
                raise BybitApiReject(10001, self._crossed_message(params, side, instrument.symbol)) from None
            raise
        return {}

    # --- WebSocket ---------------------------------------------------------------------------------------

    async def _private_ws(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve_ws(request, private=True)

    async def _public_ws(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve_ws(request, private=False)

    async def _serve_ws(self, request: web.Request, private: bool) -> web.WebSocketResponse:
        sock = _PrivateSocket(web.WebSocketResponse(), _max_active_ms(request.query.get("max_active_time"))) \
            if private else StreamSocket(web.WebSocketResponse(), private)
        self.ws_connections["private" if private else "public"] += 1
        return await self.serve_socket(request, sock, on_text=self._on_ws_message)

    async def _on_ws_message(self, session: StreamSocket, text: str) -> None:
        try:
            message = json.loads(text)
            op = message.get("op")
        except (ValueError, AttributeError):
            await self.reply(session, {"success": False, "ret_msg": "Invalid request", "conn_id": session.conn_id})
            return
        req_id = message.get("req_id", "")
        self.note_ws_op(str(op))
        if op == "ping":
            if session.private:
                await self.reply(session, {"req_id": req_id, "op": "pong", "args": [str(now_ms())],
                                            "conn_id": session.conn_id})
            else:
                await self.reply(session, {"success": True, "ret_msg": "pong", "conn_id": session.conn_id,
                                            "req_id": req_id, "op": "ping"})
        elif op == "auth" and session.private:
            await self._auth(session, message.get("args") or [])
        elif op == "subscribe":
            await self._subscribe(session, message.get("args") or [], req_id)
        elif op == "unsubscribe":
            await self._unsubscribe_topics(session, message.get("args") or [], req_id)
        else:
            await self.reply(session, {"success": False, "ret_msg": f"Invalid op: {op!r}",
                                        "conn_id": session.conn_id, "req_id": req_id, "op": op})

    async def _auth(self, session: StreamSocket, args: list[Any]) -> None:
        failure: tuple[int, str] | None = None
        account = self.venue.account_for_key(str(args[0])) if len(args) == 3 else None
        if account is None:
            failure = (10003, "Invalid apikey")
        else:
            try:
                expires = int(args[1])
            except (TypeError, ValueError):
                expires = 0
            if expires <= now_ms():
                failure = (10002, "Params Error: request expired")
            elif not signature_ok(self.venue.account_secret(account), f"GET/realtime{args[1]}", str(args[2])):
                failure = (10004, "Invalid sign")
        if failure is not None:
            await self.reply(session, {"op": "auth", "success": False, "retCode": failure[0],
                                        "retMsg": failure[1], "connId": session.conn_id})
            await session.ws.close()
            return
        session.account = account
        await self.reply(session, {"success": True, "ret_msg": "", "op": "auth", "conn_id": session.conn_id})

    async def _subscribe(self, session: StreamSocket, topics: list[Any], req_id: str) -> None:
        if session.private and session.account is None:
            await self.reply(session, {"success": False, "ret_msg": "Request not authorized",
                                        "conn_id": session.conn_id, "op": "subscribe"})
            return
        bad = [t for t in topics if not self._valid_topic(session, str(t))]
        if bad:
            await self.reply(session, {"success": False, "ret_msg": f"Invalid topic: {bad[0]}",
                                        "conn_id": session.conn_id, "req_id": req_id, "op": "subscribe"})
            return
        again = [str(t) for t in topics if str(t) in session.topics]
        if again:  # assumed wording (docs/conformance.md Y20)
            await self.reply(session, {"success": False, "ret_msg": f"error:already subscribed,topic:{again[0]}",
                                        "conn_id": session.conn_id, "req_id": req_id, "op": "subscribe"})
            return
        wanted = session.topics | {str(t) for t in topics}
        if not session.private and len(json.dumps(sorted(wanted), separators=(",", ":"))) > self.public_args_chars:
            await self.reply(session, {"success": False, "conn_id": session.conn_id, "req_id": req_id,
                                        "ret_msg": f"args length over {self.public_args_chars} on this connection",
                                        "op": "subscribe"})  # the limit is documented, the answer's wording assumed
            return
        session.topics.update(str(t) for t in topics)
        await self.reply(session, {"success": True, "ret_msg": "", "conn_id": session.conn_id,
                                    "req_id": req_id, "op": "subscribe"})
        if not session.private:
            for topic in topics:
                instrument = self.venue.instrument_by_id(str(topic).split(".", 1)[1])
                self.send(session, self._ticker_frame(instrument.symbol, snapshot=True))

    async def _unsubscribe_topics(self, session: StreamSocket, topics: list[Any], req_id: str) -> None:
        """``{"op": "unsubscribe", "args": [...]}``: the topics stop; answered like a subscribe (bybit docs
        "WebSocket > Connect", How to Unsubscribe).  A topic this connection does not hold is refused
        (assumed wording)."""
        missing = [str(t) for t in topics if str(t) not in session.topics]
        if missing:
            await self.reply(session, {"success": False, "ret_msg": f"error:not subscribed,topic:{missing[0]}",
                                        "conn_id": session.conn_id, "req_id": req_id, "op": "unsubscribe"})
            return
        session.topics.difference_update(str(t) for t in topics)
        await self.reply(session, {"success": True, "ret_msg": "", "conn_id": session.conn_id,
                                    "req_id": req_id, "op": "unsubscribe"})

    def _valid_topic(self, session: StreamSocket, topic: str) -> bool:
        if session.private:
            return topic in PRIVATE_TOPICS
        if not topic.startswith("tickers."):
            return False
        native = topic.split(".", 1)[1]
        return any(i.id == native for i in self.venue.instruments.values())

    def _ticker_frame(self, symbol: str, snapshot: bool, ts: int | None = None) -> str:
        instrument = self.venue.instrument(symbol)
        mark = num(self.venue.mark_price(symbol))
        ts = ts or now_ms()
        data: dict[str, Any] = {"symbol": instrument.id, "markPrice": mark}
        if snapshot:
            data = {
                "symbol": instrument.id, "tickDirection": "ZeroPlusTick", "price24hPcnt": "0", "lastPrice": mark,
                "prevPrice24h": mark, "highPrice24h": mark, "lowPrice24h": mark, "prevPrice1h": mark,
                "markPrice": mark, "indexPrice": mark, "openInterest": "0", "openInterestValue": "0",
                "turnover24h": "0", "volume24h": "0", "nextFundingTime": str((ts // 28_800_000 + 1) * 28_800_000),
                "fundingRate": "0.0001", "bid1Price": mark, "bid1Size": "1", "ask1Price": mark, "ask1Size": "1",
                "fundingIntervalHour": "8",
            }
        return json.dumps({"topic": f"tickers.{instrument.id}", "type": "snapshot" if snapshot else "delta",
                           "data": data, "cs": ts, "ts": ts})

    # --- venue events -> frames ------------------------------------------------------------------------

    def on_venue_event(self, event: VenueEvent) -> None:
        if isinstance(event, MarkPriceEvent):
            topic = f"tickers.{self.venue.instrument(event.symbol).id}"
            subscribers = [s for s in self.sockets if not s.private and s.wants(topic)]
            if subscribers:
                frame = self._ticker_frame(event.symbol, snapshot=False, ts=event.ts)
                for sock in subscribers:
                    self.send(sock, frame)
            return
        if isinstance(event, PositionEvent):
            fields = self._position_fields(event.position)
            self._publish(event.position.account, "position", {key: fields[key] for key in self._STREAM_POSITION_KEYS},
                          event.ts, closing=not event.position.is_open)
            for order in self._sync_tpsl(event.position, event.ts):
                self._publish_order(order, event.ts)
        elif isinstance(event, OrderEvent):
            self._publish_order(self._note_trigger(event.order), event.ts)
        elif isinstance(event, FillEvent):
            self._publish(event.account, "execution", self._execution_fields(event), event.ts)
        elif isinstance(event, BalanceEvent):
            self._publish(event.account, "wallet", self._wallet_row(event.balance, rest=False), event.ts)

    def _publish_order(self, order: VenueOrder, ts: int) -> None:
        fields = self._order_fields(order)
        self._publish(order.account, "order", {key: fields[key] for key in self._STREAM_ORDER_KEYS}, ts)

    def _publish(self, account: str, topic: str, data: dict[str, Any], ts: int, closing: bool = False) -> None:
        """Queue one private frame.  Default order: the venue's event order (execution, order, position,
        wallet for a fill; assumed, docs/conformance.md Y6); ``faults.shuffle_topics`` shuffles bursts."""
        frame = json.dumps({"id": f"{uuid.uuid4().hex[:12]}-{topic}", "topic": topic,
                            "creationTime": ts, "data": [data]})
        self.publish(account, topic, frame, closing)

    # --- the position's TP / SL / trailing stop as system conditional orders ---------------------------

    def _note_trigger(self, order: VenueOrder) -> VenueOrder:
        """The order to show for ``order``: a position's TP/SL firing (a market order with a stop origin that
        no conditional order of the client spawned) is shown as the system TP/SL order itself, which goes
        ``Triggered`` then ``Filled`` under its own ``orderId`` (a third-party history row of a fired Full
        stop-loss shows it so: docs/conformance.md Y4)."""
        if order.status == "triggered" and order.triggered_order_id:
            self._trigger_children.add(order.triggered_order_id)
            return order
        key = (order.account, order.symbol, order.origin)
        system_id = self._tpsl_alias.get(order.id)
        if system_id is None and order.origin in _TPSL_KINDS and order.id not in self._trigger_children:
            system_id = self._tpsl_open.get(key)
        if system_id is None:
            return order
        self._tpsl_alias[order.id] = system_id
        self._tpsl_fired.add(key)
        system = self._tpsl[system_id]
        system.status = "triggered" if order.status == "new" else order.status
        system.filled, system.average, system.fee = order.filled, order.average, order.fee
        system.realized_pnl, system.updated_ms = order.realized_pnl, order.updated_ms
        return replace(system)

    @staticmethod
    def _tpsl_trigger(position: VenuePosition, kind: str) -> Decimal | None:
        if not position.is_open:
            return None
        if kind != "trailing_stop":
            return position.stop_loss if kind == "stop_loss" else position.take_profit
        distance = position.trailing_stop
        if distance is None:
            return None
        if position.trailing_active_price is not None:  # open-order.mdx: "If TrailingStop, it is activate price"
            return position.trailing_active_price
        base = position.trailing_best or position.mark_price  # assumed: the current stop price
        return base - distance if position.side == "long" else base + distance

    def _sync_tpsl(self, position: VenuePosition, ts: int) -> list[VenueOrder]:
        """Bring the system TP/SL orders of ``position`` in line with its attached stops; returns the
        orders that changed (to push on the ``order`` topic).

        Sources (bybit docs ``position/trading-stop.mdx``): trading-stop "will create conditional orders by
        the system internally", modifies the existing Full-mode orders, and the system "will cancel these
        orders if the position is closed, and adjust the qty according to the size of the open position".
        docs/conformance.md Y3-Y5: no orderLinkId, qty = the position's size; a cancelled one ends
        ``Deactivated`` (assumed); a fired one follows the market order it became (:meth:`_note_trigger`).
        """
        changed = []
        for kind, (order_type, _) in _TPSL_KINDS.items():
            key = (position.account, position.symbol, kind)
            trigger = self._tpsl_trigger(position, kind)
            order = self._tpsl.get(self._tpsl_open.get(key, ""))
            side = "sell" if position.side == "long" else "buy"
            if order is not None and (trigger is None or order.side != side):
                del self._tpsl_open[key]
                fired = key in self._tpsl_fired
                if not fired:  # a fired one follows the market order it became (_note_trigger)
                    order.status = "canceled"
                self._tpsl_cancel_type[order.id] = (
                    "UNKNOWN" if fired else _OCO_CANCEL_TYPE.get((kind, self._fired_kind(position)), "")
                    or ("CancelByTpSlTsClear" if not position.is_open else "CancelByUser")
                )
                order.updated_ms = ts
                changed.append(order)
                order = None
            if trigger is None:
                continue
            if order is None:
                order = VenueOrder(
                    id=str(uuid.uuid4()), client_order_id=None, account=position.account, symbol=position.symbol,
                    side=side, type=order_type, amount=position.contracts, reduce_only=True, close_position=True,
                    trigger_price=trigger, origin=kind, created_ms=ts, updated_ms=ts,
                )
                self._tpsl[order.id] = order
                self._tpsl_open[key] = order.id
                self._tpsl_cancel_type[order.id] = "UNKNOWN"
                changed.append(order)
            elif (order.trigger_price, order.amount) != (trigger, position.contracts):
                order.trigger_price, order.amount, order.updated_ms = trigger, position.contracts, ts
                changed.append(order)
        for kind in _TPSL_KINDS:
            self._tpsl_fired.discard((position.account, position.symbol, kind))
        return [replace(order) for order in changed]

    def _fired_kind(self, position: VenuePosition) -> str | None:
        return next((k for k in _TPSL_KINDS if (position.account, position.symbol, k) in self._tpsl_fired), None)

    def _execution_fields(self, fill: FillEvent) -> dict[str, Any]:
        order = self.venue.get_order(fill.account, fill.symbol, fill.order_id)
        amount = order.amount if order.amount is not None else fill.amount
        # leavesQty as of this execution (an order filled in parts: the venue's order is already final here)
        executed = self._executed[fill.order_id] = self._executed.get(fill.order_id, Decimal(0)) + fill.amount
        leaves = Decimal(0) if order.status == "filled" and executed >= order.filled else amount - executed
        if not order.is_open and executed >= order.filled:
            del self._executed[fill.order_id]  # its last execution
        return {
            "category": "linear", "symbol": self.venue.instrument(fill.symbol).id,
            "closedSize": num(fill.amount) if fill.realized_pnl != 0 or order.reduce_only else "0",
            "execFee": num(fill.fee), "execId": fill.exec_id, "execPrice": num(fill.price),
            "execQty": num(fill.amount), "execType": _EXEC_TYPE.get(fill.origin, "Trade"),
            "execValue": num(fill.amount * fill.price), "feeRate": "0.0002" if fill.maker else "0.0005",
            "tradeIv": "", "markIv": "",
            "blockTradeId": "", "markPrice": num(fill.price), "indexPrice": "", "underlyingPrice": "",
            "leavesQty": num(leaves),
            "orderId": self._tpsl_alias.get(fill.order_id, fill.order_id), "orderLinkId": fill.client_order_id or "",
            "orderPrice": num(order.price or fill.price),
            "orderQty": num(amount), "orderType": "Limit" if order.type == "limit" else "Market",
            "stopOrderType": _ORIGIN_STOP_ORDER_TYPE.get(fill.origin, "UNKNOWN"), "side": _SIDE[fill.side],
            "execTime": str(fill.ts), "isLeverage": "0", "isMaker": fill.maker, "seq": int(fill.exec_id),
            "marketUnit": "", "execPnl": num(fill.realized_pnl),
            "createType": _CREATE_TYPE.get(fill.origin, "CreateByUser"), "extraFees": [],
            "feeCurrency": "USDT",
        }


class BybitHarness(EmulatorHarness):
    """The Bybit emulator on loopback (``venue_harness``); it refuses nothing for rate unless
    ``faults.rate_limits`` (a test's own choice), so ccxt's client-side throttling is off."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(VENUE, BybitEmulator, options)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        assert self.config is not None
        options = {"enable_rate_limit": False, **self.config.options}
        self.config = self.config.model_copy(update={"options": options})
        return self
