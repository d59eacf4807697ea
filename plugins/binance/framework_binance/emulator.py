"""Binance USDⓈ-M wire façade over :class:`framework.venue.Venue` (``docs/venue-api.md``).

One aiohttp server on 127.0.0.1 serves the REST paths ccxt's ``binanceusdm`` calls and the WebSocket
streams, with Binance's payload shapes (checked against ``plugins/binance/tests/fixtures/``), HMAC-SHA256
signatures, ``recvWindow`` / ``timestamp`` checks and Binance's error codes with their HTTP statuses.

REST (source: Binance USDⓈ-M futures REST API):

* public: ``GET /fapi/v1/exchangeInfo``, ``/fapi/v1/time``, ``/fapi/v1/ping``; market data from the venue's
  mark-price path (``framework.venue.market``): ``/fapi/v1/ticker/24hr``, ``/ticker/price``,
  ``/ticker/bookTicker``, ``/depth`` (synthetic, a tick either side of the mark), ``/klines``,
  ``/markPriceKlines``, ``/premiumIndex``
* what an unmodified ccxt client loads with keys: ``GET /sapi/v1/capital/config/getall``,
  ``/sapi/v1/margin/allPairs`` (spot wallet; answered with the quote and base coins / no pairs)
* signed: ``GET /fapi/v1/leverageBracket``, ``/fapi/v2|v3/account``, ``/fapi/v2|v3/positionRisk``;
  ``POST|GET|DELETE /fapi/v1/order``, ``GET /fapi/v1/openOrders``; Algo Order API
  ``POST|GET|DELETE /fapi/v1/algoOrder``, ``GET /fapi/v1/openAlgoOrders``
* API key only: ``POST|PUT|DELETE /fapi/v1/listenKey``

WebSocket, split by kind since 2026-04-23 (Binance "Important WebSocket Change Notice — Base URL Split &
Migration"; docs/conformance.md B1-B3):

* user data: ``/private/ws?listenKey=K[&events=A/B/...]`` and (assumed, B3) ``/private/ws/<listenKey>``:
  ``TRADE_LITE``, ``ACCOUNT_UPDATE``, ``ORDER_TRADE_UPDATE``, ``ALGO_UPDATE``, ``listenKeyExpired``.
  ``events`` is an allow list: a socket gets only the event types it names (none given: all of them).
* market data: ``/market/ws[/<symbol>@markPrice[@1s]]`` and ``/market/stream?streams=a/b`` (``markPriceUpdate``);
  ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` method frames on any of them, at most 200 streams
  per connection and 10 incoming messages per second (beyond: disconnected) (docs/conformance.md B26).
* the legacy ``/ws/...`` and ``/stream?...`` complete the handshake and then stay silent for market and
  user data (no error, no close), as the real venue does since the migration.

Limits and lifetimes, on the venue's clock (docs/conformance.md B22-B24): every REST answer carries
``X-MBX-USED-WEIGHT-1M`` (with ``faults.rate_limits``: 429 / 418 past 2400 a minute); a listen key lapses 60
minutes after its last POST / PUT (``listenKeyExpired``); a stream connection is cut at 24 hours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import secrets
import time
from collections import deque
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSCloseCode, web

from framework.models import now_ms
from framework.venue import Candle, Venue, VenueOrder, VenuePosition, VenueReject, candles
from framework.venue.limits import Ban, FixedWindow, Lifetimes
from framework.venue.market import synthetic_book, window_stats
from framework.venue.model import BalanceEvent, FillEvent, MarkPriceEvent, OrderEvent, PositionEvent, VenueEvent
from framework.venue.wire import StreamSocket, WireEmulator, WireError, decimal_param, signature_ok

log = logging.getLogger(__name__)

MAX_RECV_WINDOW_MS = 60_000
#: "A single connection can listen to a maximum of 200 streams"; "WebSocket connections have a limit of 10
#: incoming messages per second" (Binance USDⓈ-M "Websocket Market Streams"; docs/conformance.md B26)
MARKET_STREAMS_PER_CONNECTION = 200
MARKET_MESSAGES_PER_S = 10
DEFAULT_RECV_WINDOW_MS = 5_000
#: how long a ``timeout_after_accept_next`` answer is held before the connection is dropped
ACCEPT_TIMEOUT_HOLD_S = 30.0
RETRY_AFTER_S = 1  # what a 418 / 429 fault asks the client to wait (assumed value; the header is documented)
LISTEN_KEY_TTL_MS = 3_600_000  # "A User Data Stream listenKey is valid for 60 minutes after creation" (B23)
CONNECTION_MAX_MS = 86_400_000  # "A single connection is only valid for 24 hours" (B24)
WEIGHT_LIMIT_1M = 2400  # REQUEST_WEIGHT per minute per IP (exchangeInfo rateLimits)
IP_BAN_MS = 120_000  # "IP bans are tracked and scale in duration for repeat offenders, from 2 minutes to 3 days"
#: request weights from the endpoints' pages ("Request Weight"); any other endpoint: 1 (assumed, B22)
REQUEST_WEIGHTS = {"/fapi/v2/positionRisk": 5, "/fapi/v3/positionRisk": 5, "/fapi/v2/account": 5,
                   "/fapi/v3/account": 5, "/fapi/v1/exchangeInfo": 1}

#: venue reject reason → (Binance code, message); all HTTP 400
REJECT_CODES: dict[str, tuple[int, str | None]] = {
    "would_trigger_immediately": (-2021, "Order would immediately trigger."),
    "reduce_only_rejected": (-2022, "ReduceOnly Order is rejected."),
    "zero_position": (-2022, "ReduceOnly Order is rejected."),
    "order_not_found": (-2013, "Order does not exist."),
    # unique among OPEN orders only: the id of a filled / cancelled order may be reused (conformance B9)
    "duplicate_client_order_id": (-4116, "clientOrderId is duplicated."),
    "invalid_quantity": (-1111, "Precision is over the maximum defined for this asset."),
    "invalid_price": (-4014, "Price not increased by tick size."),
    "insufficient_margin": (-2019, "Margin is insufficient."),
    "rejected": (-2010, "New order rejected."),
    "invalid_order": (-1102, "A mandatory parameter was not sent, was empty/null, or malformed."),
    "unknown_symbol": (-1121, "Invalid symbol."),
    "not_modified": (-1102, "Not modified."),
}
#: the one leverage bracket's maintenance margin ratio (``/fapi/v1/leverageBracket``)
MAINT_MARGIN_RATIO = Decimal("0.005")
#: the MIN_NOTIONAL filter of every symbol (exchangeInfo), quote currency (conformance B10)
MIN_NOTIONAL = Decimal(5)
#: what Binance accepts as ``newClientOrderId`` / ``clientAlgoId``; anything else is -4015 (B9)
CLIENT_ID_PATTERN = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
CONDITIONAL_WIRE_TYPES = {"STOP_MARKET", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET", "STOP", "TAKE_PROFIT"}
VENUE_TYPE = {"MARKET": "market", "STOP_MARKET": "stop_market", "TAKE_PROFIT_MARKET": "take_profit_market",
              "TRAILING_STOP_MARKET": "trailing_stop_market"}
WIRE_TYPE = {v: k for k, v in VENUE_TYPE.items()}
FORCED = ("liquidation", "adl")  # the venue's own closes: order type LIQUIDATION, execution CALCULATED (B21)
ORDER_STATUS = {"new": "NEW", "partially_filled": "PARTIALLY_FILLED", "filled": "FILLED",
                "canceled": "CANCELED", "rejected": "REJECTED", "expired": "EXPIRED", "triggered": "FILLED"}
ALGO_STATUS = {"new": "NEW", "canceled": "CANCELED", "rejected": "REJECTED", "expired": "EXPIRED",
               "triggered": "TRIGGERED", "filled": "FINISHED"}


#: "Kline/Candlestick Data" intervals, in ms (a month is assumed to be 30 days)
KLINE_INTERVALS_MS = {
    f"{n}{unit}": n * ms
    for unit, ms, counts in (("m", 60_000, (1, 3, 5, 15, 30)), ("h", 3_600_000, (1, 2, 4, 6, 8, 12)),
                             ("d", 86_400_000, (1, 3)), ("w", 604_800_000, (1,)), ("M", 2_592_000_000, (1,)))
    for n in counts
}
WIRE_TYPE["limit"] = "LIMIT"
#: LIMIT ``timeInForce`` → the venue's (GTX: "Good Till Crossing (Post Only)")
TIME_IN_FORCE = {"GTC": "gtc", "GTX": "post_only", "IOC": "ioc", "FOK": "fok"}
WIRE_TIME_IN_FORCE = {v: k for k, v in TIME_IN_FORCE.items()}


class BinanceApiError(WireError):
    """An error answer: ``{"code": code, "msg": msg}`` with HTTP ``status``."""

    def __init__(self, status: int, code: int, msg: str, retry_after_s: int | None = None) -> None:
        super().__init__(code, msg, status)
        self.retry_after_s = retry_after_s


def request_weight(request: web.Request) -> int:
    """A request's IP weight: New Order 0 ("0 on IP rate limit"), Current All Open Orders 1 with a symbol and
    40 without, Order Book 2 / 5 / 10 / 20 and klines 1 / 2 / 5 / 10 by ``limit``, 24hr Ticker 1 / 40; others
    from :data:`REQUEST_WEIGHTS`."""
    path, query = request.path, request.query
    if request.method == "POST" and path in ("/fapi/v1/order", "/fapi/v1/algoOrder"):
        return 0  # the algo order's IP weight is assumed like New Order's
    if path in ("/fapi/v1/openOrders", "/fapi/v1/ticker/24hr"):
        return 1 if query.get("symbol") else 40
    limit = int(query.get("limit", "500")) if query.get("limit", "500").isdigit() else 500
    if path == "/fapi/v1/depth":
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    if path in ("/fapi/v1/klines", "/fapi/v1/markPriceKlines"):  # "[1,100) 1, [100,500) 2, [500,1000] 5, >1000 10"
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    return REQUEST_WEIGHTS.get(path, 1)


def _cancel_reject(reject: VenueReject) -> VenueReject | BinanceApiError:
    """A cancel of an order the venue does not know is -2011, not -2013."""
    return BinanceApiError(400, -2011, "Unknown order sent.") if reject.reason == "order_not_found" else reject


def _s(value: Decimal | None) -> str:
    """Binance writes decimals as strings, ``"0"`` for none."""
    return "0" if value is None else format(value.normalize() if value == value.to_integral() else value, "f")


def _bool_param(params: dict[str, str], name: str) -> bool:
    return str(params.get(name, "false")).lower() == "true"


def _missing(name: str) -> BinanceApiError:
    """Binance's answer to a missing or malformed mandatory parameter."""
    return BinanceApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _client_id_param(params: dict[str, str], name: str) -> str | None:
    """``newClientOrderId`` / ``clientAlgoId``: absent → ``None``; not matching the pattern → -4015."""
    value = params.get(name)
    if not value:
        return None
    if not CLIENT_ID_PATTERN.match(value):
        raise BinanceApiError(400, -4015, "Client order id is not valid.")
    return value


def _illegal(name: str) -> BinanceApiError:
    return BinanceApiError(400, -1100, f"Illegal characters found in parameter '{name}'.")


def _decimal_param(params: dict[str, str], name: str, required: bool = False) -> Decimal | None:
    value = decimal_param(params, name, _illegal)
    if value is None and required:
        raise _missing(name)
    return value


class _MarkSocket(StreamSocket):
    """A ``/market`` socket: the symbols of its streams, and whether frames come wrapped (``/market/stream``)."""

    def __init__(self, ws: web.WebSocketResponse, symbols: set[str], combined: bool) -> None:
        super().__init__(ws, private=False, topics=symbols)
        self.combined = combined
        self.received: deque[float] = deque()  # when its last messages came (the 10 per second limit, B26)


class BinanceEmulator(WireEmulator):
    """Serves Binance USDⓈ-M REST + WebSocket for ``venue`` on ``host:port`` (0 = a free port); see
    :class:`~framework.venue.wire.WireEmulator` for ``rest_calls``, ``shaper`` and the controls."""

    reject_codes = REJECT_CODES
    unknown_reject = (-1000, "An unknown error occurred while processing the request.")

    def __init__(self, venue: Venue, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(venue, host, port, accept_timeout_hold_s=ACCEPT_TIMEOUT_HOLD_S)
        venue.client_id_scope = "open"  # Binance: a client order id is unique among open orders only (B9)
        self._listen_keys: dict[str, str] = {}  # valid key -> account
        self.market_connections = 0  # market sockets opened
        self.market_streams_per_connection = MARKET_STREAMS_PER_CONNECTION
        self.market_messages_per_s = MARKET_MESSAGES_PER_S
        #: a listen key lapses unless kept alive (POST / PUT extend it by ``listen_key_ttl_ms``), a connection is
        #: cut ``connection_max_ms`` after it opened: on the venue's clock (B23, B24); tests may change both
        self.listen_key_ttl_ms = LISTEN_KEY_TTL_MS
        self.connection_max_ms = CONNECTION_MAX_MS
        self._key_lifetimes: Lifetimes[str] = Lifetimes()
        #: the IP's REQUEST_WEIGHT this minute (limit 2400, tests lower it), the 418 ban, and the end of the
        #: minute in which a 429 was answered (B22)
        self.request_weight = FixedWindow(60_000, WEIGHT_LIMIT_1M)
        self.ip_ban = Ban()
        self._warned_until = 0
        self._last_fill: dict[str, FillEvent] = {}
        self._held: dict[str, list[tuple[VenueOrder, int]]] = {}  # account -> fills' order events (B4)
        self._parent_of: dict[str, VenueOrder] = {}  # spawned market order id -> its conditional parent
        self._last_transaction_ms: dict[str, int] = {}

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/fapi/v1/ping", self._ping)
        r.add_get("/fapi/v1/time", self._time)
        r.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        for path, market_handler in self._market_routes().items():
            r.add_get(path, market_handler)
        r.add_get("/fapi/v1/leverageBracket", self._leverage_bracket)
        r.add_get("/fapi/v2/account", self._account)
        r.add_get("/fapi/v3/account", self._account)
        r.add_get("/fapi/v2/positionRisk", self._position_risk)
        r.add_get("/fapi/v3/positionRisk", self._position_risk_v3)
        r.add_post("/fapi/v1/order", self._create_order)
        r.add_get("/fapi/v1/order", self._get_order)
        r.add_delete("/fapi/v1/order", self._cancel_order)
        r.add_get("/fapi/v1/openOrders", self._open_orders)
        r.add_post("/fapi/v1/algoOrder", self._create_algo_order)
        r.add_get("/fapi/v1/algoOrder", self._get_algo_order)
        r.add_delete("/fapi/v1/algoOrder", self._cancel_algo_order)
        r.add_get("/fapi/v1/openAlgoOrders", self._open_algo_orders)
        r.add_post("/fapi/v1/listenKey", self._listen_key_create)
        r.add_put("/fapi/v1/listenKey", self._listen_key_keepalive)
        r.add_delete("/fapi/v1/listenKey", self._listen_key_delete)
        r.add_get("/private/ws", self._ws_private)
        r.add_get("/private/ws/{key}", self._ws_private)
        r.add_get("/market/ws", self._ws_market)
        r.add_get("/market/ws/{stream}", self._ws_market)
        r.add_get("/market/stream", self._ws_combined)
        r.add_get("/ws/{stream}", self._ws_legacy)
        r.add_get("/stream", self._ws_legacy)

    def expire_listen_keys(self, keys: list[str] | None = None) -> None:
        """Send ``listenKeyExpired`` on the private sockets of ``keys`` (default: every key) and invalidate them."""
        for key in list(self._listen_keys) if keys is None else keys:
            self._key_lifetimes.discard(key)
            frame = json.dumps({"e": "listenKeyExpired", "E": str(self.venue.now()), "listenKey": key})
            for sock in self._key_sockets(key):
                if sock.wants("listenKeyExpired"):
                    self.send(sock, frame)
            log.info("listen key of account %s expired", self._forget_key(key))

    async def on_clock(self, now_ms: int) -> None:
        """A listen key not kept alive expires (``listenKeyExpired``); a connection 24 h old is cut (B23, B24)."""
        lapsed = [key for key in self._key_lifetimes.lapsed(now_ms) if key in self._listen_keys]
        if lapsed:
            self.expire_listen_keys(lapsed)
        for sock in [s for s in self.sockets if s.key is not None or isinstance(s, _MarkSocket)]:
            if now_ms - sock.opened_ms >= self.connection_max_ms:
                with contextlib.suppress(Exception):
                    await sock.ws.close(code=1000, message=b"24 hour connection limit")

    def _key_sockets(self, key: str) -> list[StreamSocket]:
        return [sock for sock in self.sockets if sock.key == key]

    def _forget_key(self, key: str) -> str:
        """Invalidate ``key``: its sockets stay open but get no account data any more; returns its account."""
        for sock in self._key_sockets(key):
            sock.account = None
        return self._listen_keys.pop(key)

    # --- HTTP plumbing -------------------------------------------------------------------------------

    def http_fault_response(self, status: int) -> web.StreamResponse:
        if status in (418, 429):
            error = BinanceApiError(status, -1003, "Too many requests; current limit is 2400 requests per minute.")
        elif status >= 500:
            error = BinanceApiError(status, -1001, "Internal error; unable to process your request. Please try again.")
        else:
            error = BinanceApiError(status, -1000, "An unknown error occurred while processing the request.")
        return self.error_response(error)

    def error_response(self, error: WireError) -> web.StreamResponse:
        # Binance sends Retry-After (seconds) with every 418 / 429 ("General Info: Limits")
        wait = getattr(error, "retry_after_s", None) or RETRY_AFTER_S
        headers = {"Retry-After": str(wait)} if error.status in (418, 429) else None
        return web.json_response({"code": error.code, "msg": error.message}, status=error.status, headers=headers)

    def usage_headers(self, request: web.Request) -> dict[str, str]:
        # "Every request will contain X-MBX-USED-WEIGHT-(intervalNum)(intervalLetter)" (B22)
        return {"X-MBX-USED-WEIGHT-1M": str(self.request_weight.used)}

    def admit(self, request: web.Request) -> web.StreamResponse | None:
        """Charge the request's weight to the IP's minute (B22).  With ``faults.rate_limits``: over the limit
        is 429 ``-1003`` with ``Retry-After`` (seconds to the minute's end); another request in that minute, or
        any during a ban, is 418 and a ban of ``IP_BAN_MS`` ("Repeatedly violating rate limits and/or failing
        to back off after receiving 429s will result in an automated IP ban (HTTP status 418)")."""
        now = self.venue.now()
        within = self.request_weight.charge(now, request_weight(request))
        if not self.venue.faults.rate_limits:
            return None
        window = self.request_weight.reset_at(now)
        if not self.ip_ban.active(now) and not within and self._warned_until == window:
            self.ip_ban.impose(now, IP_BAN_MS)
        if self.ip_ban.active(now):
            raise BinanceApiError(418, -1003, f"Way too many requests; IP banned until {self.ip_ban.until_ms}. "
                                  "Please use the websocket for live updates to avoid bans.",
                                  self.ip_ban.remaining_s(now))
        if not within:
            self._warned_until = window
            raise BinanceApiError(429, -1003, f"Too many requests; current limit of IP is {self.request_weight.limit} "
                                  "requests per minute. Please use the websocket for live updates to avoid polling "
                                  "the API.", max(1, -(-(window - now) // 1000)))
        return None

    async def _signed(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """Check API key, timestamp, recvWindow and HMAC-SHA256 signature; returns (account, params)."""
        account = self._api_key_account(request)
        body = await request.text() if request.can_read_body else ""
        raw_query = request.rel_url.raw_query_string
        signature = None
        unsigned_parts = []
        for raw in (raw_query, body):
            if not raw:
                continue
            kept = []
            for part in raw.split("&"):
                if part.startswith("signature="):
                    signature = part[len("signature="):]
                else:
                    kept.append(part)
            unsigned_parts.append("&".join(kept))
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        params.pop("signature", None)
        if signature is None:
            raise _missing("signature")
        if not signature_ok(self.venue.account_secret(account), "".join(unsigned_parts), signature.lower()):
            raise BinanceApiError(400, -1022, "Signature for this request is not valid.")
        try:
            timestamp = int(params["timestamp"])
            recv_window = int(params.get("recvWindow", DEFAULT_RECV_WINDOW_MS))
        except (KeyError, ValueError):
            raise _missing("timestamp") from None
        if not 0 < recv_window <= MAX_RECV_WINDOW_MS:
            raise BinanceApiError(400, -1131, "recvWindow must be less than 60000")
        server_time = now_ms()
        if timestamp >= server_time + 1000 or server_time - timestamp > recv_window:
            raise BinanceApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return account, params

    def _api_key_account(self, request: web.Request) -> str:
        api_key = request.headers.get("X-MBX-APIKEY", "")
        account = self.venue.account_for_key(api_key) if api_key else None
        if account is None:
            raise BinanceApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return account

    def _symbol(self, params: dict[str, str], required: bool = True) -> str | None:
        native = params.get("symbol")
        if not native:
            if required:
                raise _missing("symbol")
            return None
        return self.venue.instrument_by_id(native).symbol

    # --- public --------------------------------------------------------------------------------------

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": now_ms()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        symbols = []
        for instrument in self.venue.instruments.values():
            tick, step = instrument.tick_size, instrument.step_size
            symbols.append({
                "symbol": instrument.id, "pair": instrument.id, "contractType": "PERPETUAL",
                "deliveryDate": 4133404802000, "onboardDate": 1569398400000, "status": "TRADING",
                "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
                "baseAsset": instrument.base, "quoteAsset": instrument.quote, "marginAsset": instrument.quote,
                "pricePrecision": max(0, -tick.normalize().as_tuple().exponent),
                "quantityPrecision": max(0, -step.normalize().as_tuple().exponent),
                "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
                "settlePlan": 0, "triggerProtect": "0.0500", "liquidationFee": "0.012000", "marketTakeBound": "0.30",
                "filters": [
                    {"minPrice": _s(tick), "maxPrice": "1000000", "filterType": "PRICE_FILTER", "tickSize": _s(tick)},
                    {"stepSize": _s(step), "filterType": "LOT_SIZE", "maxQty": "10000000",
                     "minQty": _s(instrument.min_amount)},
                    {"stepSize": _s(step), "filterType": "MARKET_LOT_SIZE", "maxQty": "10000000",
                     "minQty": _s(instrument.min_amount)},
                    {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
                    {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
                    {"notional": _s(MIN_NOTIONAL), "filterType": "MIN_NOTIONAL"},
                    {"multiplierDown": "0.5000", "multiplierUp": "1.5000", "multiplierDecimal": "4",
                     "filterType": "PERCENT_PRICE"},
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                               "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            })
        return web.json_response({
            "timezone": "UTC", "serverTime": now_ms(), "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-100"}],
            "symbols": symbols,
        })

    # --- market data (the venue's mark path; docs/conformance.md B-M rows) ------------------------------

    def _market_routes(self) -> dict[str, Any]:
        return {
            "/fapi/v1/ticker/24hr": self._ticker_24hr, "/fapi/v1/ticker/price": self._ticker_price,
            "/fapi/v1/ticker/bookTicker": self._book_ticker, "/fapi/v1/depth": self._depth,
            "/fapi/v1/klines": self._klines, "/fapi/v1/markPriceKlines": self._klines,
            "/fapi/v1/premiumIndex": self._premium_index,
            "/sapi/v1/capital/config/getall": self._coins, "/sapi/v1/margin/allPairs": self._margin_pairs,
        }

    def _market_symbols(self, request: web.Request) -> tuple[list[str], bool]:
        """The symbols asked for (``symbol``, else all) and whether the answer is a single object."""
        native = request.query.get("symbol")
        if native:
            return [self.venue.instrument_by_id(native).symbol], True
        return list(self.venue.instruments), False

    @staticmethod
    def _one_or_all(rows: list[dict[str, Any]], single: bool) -> web.Response:
        return web.json_response(rows[0] if single else rows)

    async def _ticker_24hr(self, request: web.Request) -> web.Response:
        """"24hr Ticker Price Change Statistics": the mark path's last 24 h; volumes and trades 0 (no trades
        are simulated)."""
        symbols, single = self._market_symbols(request)
        now, rows = self.venue.now(), []
        for symbol in symbols:
            day = window_stats(self.venue, symbol, 86_400_000)
            change = day.last - day.open
            rows.append({
                "symbol": self.venue.instrument(symbol).id, "priceChange": _s(change),
                "priceChangePercent": _s(round(change / day.open * 100, 3)), "weightedAvgPrice": _s(day.last),
                "lastPrice": _s(day.last), "lastQty": "0", "openPrice": _s(day.open), "highPrice": _s(day.high),
                "lowPrice": _s(day.low), "volume": "0", "quoteVolume": "0", "openTime": day.start_ms,
                "closeTime": now, "firstId": 0, "lastId": 0, "count": 0,
            })
        return self._one_or_all(rows, single)

    async def _ticker_price(self, request: web.Request) -> web.Response:
        symbols, single = self._market_symbols(request)
        return self._one_or_all([{"symbol": self.venue.instrument(s).id, "price": _s(self.venue.mark_price(s)),
                                  "time": self.venue.now()} for s in symbols], single)

    async def _book_ticker(self, request: web.Request) -> web.Response:
        symbols, single = self._market_symbols(request)
        rows = []
        for symbol in symbols:
            (bid, bid_qty), (ask, ask_qty) = (side[0] for side in synthetic_book(self.venue, symbol, 1))
            rows.append({"lastUpdateId": len(self.venue.mark_history(symbol)),
                         "symbol": self.venue.instrument(symbol).id, "bidPrice": _s(bid), "bidQty": _s(bid_qty),
                         "askPrice": _s(ask), "askQty": _s(ask_qty), "time": self.venue.now()})
        return self._one_or_all(rows, single)

    async def _depth(self, request: web.Request) -> web.Response:
        """"Order Book": ``limit`` 5, 10, 20, 50, 100, 500 (default) or 1000 synthetic levels a side."""
        symbol = self._symbol(dict(request.query))
        assert symbol is not None
        limit = request.query.get("limit", "500")
        if limit not in ("5", "10", "20", "50", "100", "500", "1000"):
            raise BinanceApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        bids, asks = synthetic_book(self.venue, symbol, int(limit))
        now = self.venue.now()
        return web.json_response({
            "lastUpdateId": len(self.venue.mark_history(symbol)), "E": now, "T": now,
            "bids": [[_s(p), _s(q)] for p, q in bids], "asks": [[_s(p), _s(q)] for p, q in asks],
        })

    async def _klines(self, request: web.Request) -> web.Response:
        """"Kline/Candlestick Data" and "Mark Price Kline/Candlestick Data", oldest first: both from the mark
        path; volumes 0, the trade count is the number of mark prices in the candle."""
        params = dict(request.query)
        symbol = self._symbol(params)
        assert symbol is not None
        interval_ms = KLINE_INTERVALS_MS.get(params.get("interval", ""))
        if interval_ms is None:
            raise BinanceApiError(400, -1120, "Invalid interval.")
        try:
            limit = int(params.get("limit") or 500)
            start = int(params["startTime"]) if params.get("startTime") else None
            end = int(params["endTime"]) if params.get("endTime") else None
        except ValueError:
            raise BinanceApiError(400, -1100, "Illegal characters found in a parameter.") from None
        if not 1 <= limit <= 1500:
            raise BinanceApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        if end is not None:  # a candle is in range when it opens at or before endTime
            end -= end % interval_ms
        rows: list[Candle] = candles(self.venue.mark_history(symbol), interval_ms, start, end, limit)
        return web.json_response([
            [c.open_ms, _s(c.open), _s(c.high), _s(c.low), _s(c.close), "0", c.open_ms + interval_ms - 1, "0",
             c.count, "0", "0", "0"] for c in rows])

    async def _premium_index(self, request: web.Request) -> web.Response:
        """"Mark Price": mark = index = the venue's mark; funding 0.01 % every 8 h (assumed)."""
        symbols, single = self._market_symbols(request)
        now = self.venue.now()
        rows = []
        for symbol in symbols:
            mark = _s(self.venue.mark_price(symbol))
            rows.append({"symbol": self.venue.instrument(symbol).id, "markPrice": mark, "indexPrice": mark,
                         "estimatedSettlePrice": mark, "lastFundingRate": "0.00010000", "interestRate": "0.00010000",
                         "nextFundingTime": (now // 28_800_000 + 1) * 28_800_000, "time": now})
        return self._one_or_all(rows, single)

    async def _coins(self, request: web.Request) -> web.Response:
        """``/sapi/v1/capital/config/getall`` (spot wallet, signed): what ccxt's ``load_markets`` reads for
        currencies; answered with the quote and base coins, nothing held (assumed)."""
        await self._signed(request)
        coins = sorted({"USDT", *(i.base for i in self.venue.instruments.values())})
        return web.json_response([{
            "coin": c, "name": c, "depositAllEnable": True, "withdrawAllEnable": True, "free": "0", "locked": "0",
            "freeze": "0", "withdrawing": "0", "ipoing": "0", "ipoable": "0", "storage": "0", "isLegalMoney": False,
            "trading": True, "networkList": [],
        } for c in coins])

    async def _margin_pairs(self, request: web.Request) -> web.Response:
        """``/sapi/v1/margin/allPairs``: no spot margin pairs (a futures-only venue)."""
        return web.json_response([])

    # --- account and positions -----------------------------------------------------------------------

    async def _leverage_bracket(self, request: web.Request) -> web.Response:
        await self._signed(request)
        return web.json_response([
            {"symbol": i.id, "brackets": [{
                "bracket": 1, "initialLeverage": i.max_leverage, "notionalCap": 5_000_000, "notionalFloor": 0,
                "maintMarginRatio": float(MAINT_MARGIN_RATIO), "cum": 0.0,
            }]}
            for i in self.venue.instruments.values()
        ])

    def _position_json(self, account: str, position: VenuePosition) -> dict[str, Any]:
        instrument = self.venue.instrument(position.symbol)
        signed = position.contracts if position.side == "long" else -position.contracts
        mark = position.mark_price
        notional = signed * mark
        return {
            "symbol": instrument.id, "positionAmt": _s(signed), "entryPrice": _s(position.entry_price),
            "markPrice": _s(mark), "unRealizedProfit": _s(position.unrealized_pnl), "liquidationPrice": "0",
            "leverage": str(self.venue.leverage(account, position.symbol)), "maxNotionalValue": "5000000",
            "marginType": "cross", "isolatedMargin": "0.00000000", "isAutoAddMargin": "false",
            "positionSide": "BOTH", "notional": _s(notional), "isolatedWallet": "0",
            "updateTime": position.updated_ms, "breakEvenPrice": _s(position.entry_price),
        }

    def _position_json_v3(self, account: str, position: VenuePosition) -> dict[str, Any]:
        """``/fapi/v3/positionRisk`` ("Position Information V3"; fixture ``http_json/position_risk_v3.json``):
        no ``leverage`` / ``marginType`` / ``maxNotionalValue``; margins, ``adl`` and notionals instead."""
        instrument = self.venue.instrument(position.symbol)
        signed = position.contracts if position.side == "long" else -position.contracts
        notional = signed * position.mark_price
        initial = abs(notional) / self.venue.leverage(account, position.symbol)
        return {
            "symbol": instrument.id, "positionSide": "BOTH", "positionAmt": _s(signed),
            "entryPrice": _s(position.entry_price), "breakEvenPrice": _s(position.entry_price),
            "markPrice": _s(position.mark_price), "unRealizedProfit": _s(position.unrealized_pnl),
            "liquidationPrice": "0", "isolatedMargin": "0", "notional": _s(notional),
            "marginAsset": instrument.quote, "isolatedWallet": "0", "initialMargin": _s(initial),
            "maintMargin": _s(abs(notional) * MAINT_MARGIN_RATIO), "positionInitialMargin": _s(initial),
            "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0", "askNotional": "0",
            "updateTime": position.updated_ms,
        }

    async def _position_risk(self, request: web.Request) -> web.Response:
        """``/fapi/v2/positionRisk`` (with ``leverage`` and ``marginType``)."""
        account, params = await self._signed(request)
        symbol = self._symbol(params, required=False)
        positions = [p for p in self.visible_positions(account) if symbol is None or p.symbol == symbol]
        return web.json_response([self._position_json(account, p) for p in positions])

    async def _position_risk_v3(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        symbol = self._symbol(params, required=False)
        positions = [p for p in self.visible_positions(account) if symbol is None or p.symbol == symbol]
        return web.json_response([self._position_json_v3(account, p) for p in positions])

    async def _account(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        balance = self.venue.balance(account)
        total, available, upnl = _s(balance["total"]), _s(balance["available"]), _s(balance["unrealized_pnl"])
        positions = []
        for p in self.visible_positions(account):
            signed = p.contracts if p.side == "long" else -p.contracts
            positions.append({
                "symbol": self.venue.instrument(p.symbol).id, "initialMargin": "0", "maintMargin": "0",
                "unrealizedProfit": _s(p.unrealized_pnl), "positionInitialMargin": "0",
                "openOrderInitialMargin": "0", "leverage": str(self.venue.leverage(account, p.symbol)),
                "isolated": False, "entryPrice": _s(p.entry_price), "maxNotional": "5000000",
                "bidNotional": "0", "askNotional": "0", "positionSide": "BOTH", "positionAmt": _s(signed),
                "updateTime": p.updated_ms,
            })
        return web.json_response({
            "feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True, "updateTime": 0,
            "multiAssetsMargin": False, "tradeGroupId": -1, "totalInitialMargin": "0", "totalMaintMargin": "0",
            "totalWalletBalance": total, "totalUnrealizedProfit": upnl, "totalMarginBalance": total,
            "totalPositionInitialMargin": "0", "totalOpenOrderInitialMargin": "0",
            "totalCrossWalletBalance": total, "totalCrossUnPnl": upnl, "availableBalance": available,
            "maxWithdrawAmount": available,
            "assets": [{
                "asset": "USDT", "walletBalance": total, "unrealizedProfit": upnl, "marginBalance": total,
                "maintMargin": "0", "initialMargin": "0", "positionInitialMargin": "0",
                "openOrderInitialMargin": "0", "crossWalletBalance": total, "crossUnPnl": upnl,
                "availableBalance": available, "maxWithdrawAmount": available, "marginAvailable": True,
                "updateTime": now_ms(),
            }],
            "positions": positions,
        })

    # --- orders (/fapi/v1/order) ---------------------------------------------------------------------

    def _client_id(self, order: VenueOrder) -> str:
        if order.client_order_id:
            return order.client_order_id
        # "Event: Order Update": "starts with "autoclose-": liquidation order", ""adl_autoclose": ADL auto close
        # order" (B21)
        if order.origin == "liquidation":
            return f"autoclose-{order.created_ms}"
        if order.origin == "adl":
            return "adl_autoclose"
        parent = self._parent_of.get(order.id)
        if parent is not None:
            return f"algo-{parent.id}"
        return f"web_{order.id}"

    def _orig_type(self, order: VenueOrder) -> str:
        parent = self._parent_of.get(order.id)
        return WIRE_TYPE[parent.type] if parent is not None else self._wire_type(order)

    @staticmethod
    def _wire_type(order: VenueOrder) -> str:
        """Order type ``LIQUIDATION`` for the venue's forced closes (B21), the order's own otherwise."""
        return "LIQUIDATION" if order.origin in FORCED else WIRE_TYPE[order.type]

    def _order_json(self, order: VenueOrder) -> dict[str, Any]:
        instrument = self.venue.instrument(order.symbol)
        parent = self._parent_of.get(order.id)
        amount = order.amount if order.amount is not None else order.filled
        return {
            "orderId": int(order.id), "symbol": instrument.id, "status": ORDER_STATUS[order.status],
            "clientOrderId": self._client_id(order), "price": _s(order.price), "avgPrice": _s(order.average),
            "origQty": _s(amount), "executedQty": _s(order.filled),
            "cumQuote": _s((order.average or Decimal(0)) * order.filled),
            "timeInForce": WIRE_TIME_IN_FORCE.get(order.time_in_force or "", "GTC"),
            "type": self._wire_type(order), "reduceOnly": order.reduce_only, "closePosition": order.close_position,
            "side": order.side.upper(), "positionSide": "BOTH",
            "stopPrice": _s(parent.trigger_price if parent is not None else order.trigger_price),
            "workingType": "MARK_PRICE" if parent is not None else "CONTRACT_PRICE", "priceProtect": False,
            "origType": self._orig_type(order), "priceMatch": "NONE", "selfTradePreventionMode": "NONE",
            "goodTillDate": 0, "time": order.created_ms, "updateTime": order.updated_ms,
        }

    async def _create_order(self, request: web.Request) -> web.StreamResponse:
        account, params = await self._signed(request)
        symbol = self._symbol(params)
        wire_type = params.get("type", "").upper()
        if wire_type in CONDITIONAL_WIRE_TYPES:
            raise BinanceApiError(
                400, -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
            )
        if wire_type == "LIMIT":
            return await self._create_limit_order(request, account, symbol, params)
        if wire_type != "MARKET":
            raise BinanceApiError(400, -1116, "Invalid orderType.")
        amount = _decimal_param(params, "quantity", required=True)
        reduce_only = _bool_param(params, "reduceOnly")
        with contextlib.suppress(LookupError):  # no mark yet: the venue refuses the order itself
            self._check_notional(amount, self.venue.mark_price(symbol), reduce_only)
        order = self.venue.place_order(
            account, symbol, params.get("side", "").lower(), "market", amount=amount,
            client_order_id=_client_id_param(params, "newClientOrderId"), reduce_only=reduce_only,
        )
        if self.venue.faults.minimal_order_response or params.get("newOrderRespType", "ACK").upper() == "ACK":
            body = self._order_ack_json(order)
        else:
            body = self._order_json(order)
        return await self._answer_order(request, body)

    async def _create_limit_order(
        self, request: web.Request, account: str, symbol: str | None, params: dict[str, str]
    ) -> web.StreamResponse:
        """``type=LIMIT``: ``timeInForce`` GTC / GTX / IOC / FOK (mandatory), ``price``, ``quantity``.  A GTX
        order that would take liquidity is refused with -5022 and an FOK order that cannot fill at once with
        -5021, neither recorded (error codes "-5021 FOK_ORDER_REJECT" / "-5022 GTX_ORDER_REJECT")."""
        assert symbol is not None
        time_in_force = TIME_IN_FORCE.get(params.get("timeInForce", "").upper())
        if time_in_force is None:
            raise _missing("timeInForce")
        price = _decimal_param(params, "price", required=True)
        assert price is not None
        side = params.get("side", "").lower()
        with contextlib.suppress(LookupError):  # no mark yet: the venue refuses the order itself
            mark = self.venue.mark_price(symbol)
            crosses = price >= mark if side == "buy" else price <= mark
            if time_in_force == "post_only" and crosses:
                raise BinanceApiError(400, -5022, "Due to the order could not be executed as maker, the Post Only "
                                                  "order will be rejected. The order will not be recorded in the "
                                                  "order history")
            if time_in_force == "fok" and not crosses:
                raise BinanceApiError(400, -5021, "Due to the order could not be filled immediately, the FOK order "
                                                  "has been rejected. The order will not be recorded in the order "
                                                  "history")
        amount = _decimal_param(params, "quantity", required=True)
        reduce_only = _bool_param(params, "reduceOnly")
        self._check_notional(amount, price, reduce_only)  # valued at its limit price (assumed, B-M4)
        order = self.venue.place_order(
            account, symbol, side, "limit", amount=amount,
            client_order_id=_client_id_param(params, "newClientOrderId"), reduce_only=reduce_only,
            price=price, time_in_force=time_in_force,
        )
        if self.venue.faults.minimal_order_response or params.get("newOrderRespType", "ACK").upper() == "ACK":
            body = self._order_ack_json(order)
        else:
            body = self._order_json(order)
        return await self._answer_order(request, body)

    @staticmethod
    def _check_notional(amount: Decimal | None, price: Decimal | None, reduce_only: bool) -> None:
        """-4164: an order that may add exposure must be worth at least MIN_NOTIONAL (reduce-only is exempt)."""
        if reduce_only or amount is None or price is None or amount <= 0:
            return  # nothing to value here; the venue refuses a bad size or a missing mark itself
        if amount * price < MIN_NOTIONAL:
            raise BinanceApiError(400, -4164, f"Order's notional must be no smaller than {_s(MIN_NOTIONAL)} "
                                              "(unless you choose reduce only).")

    def _order_ack_json(self, order: VenueOrder) -> dict[str, Any]:
        """The ACK answer (``newOrderRespType=ACK``, and the ``minimal_order_response`` fault): the full
        order as the venue accepted it, before any fill: status NEW, executedQty 0 (conformance B11)."""
        accepted = dataclasses.replace(order, status="new", filled=Decimal(0), average=None,
                                       updated_ms=order.created_ms)
        return self._order_json(accepted)

    async def _answer_order(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """Answer an accepted order, or (``timeout_after_accept_next``) never answer and drop the socket;
        ``answer_without_order_id_next``: without its ``orderId`` / ``algoId``."""
        await self.hold_if_unanswered(request)
        if self.answer_without_order_id():
            body = {key: value for key, value in body.items() if key not in ("orderId", "algoId")}
        return web.json_response(body)

    async def _get_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        symbol = self._symbol(params)
        order = self.venue.get_order(
            account, symbol, order_id=params.get("orderId") or None,
            client_order_id=params.get("origClientOrderId") or None,
        )
        if order.conditional:
            raise BinanceApiError(400, -2013, "Order does not exist.")
        return web.json_response(self._order_json(order))

    async def _cancel_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        symbol = self._symbol(params)
        try:
            order = self.venue.get_order(
                account, symbol, order_id=params.get("orderId") or None,
                client_order_id=params.get("origClientOrderId") or None,
            )
            if order.conditional:
                raise VenueReject("order_not_found", "conditional orders live in the Algo Order API")
            order = self.venue.cancel_order(account, symbol, order_id=order.id)
        except VenueReject as reject:
            raise _cancel_reject(reject) from None
        return web.json_response(self._order_json(order))

    async def _open_orders(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        symbol = self._symbol(params, required=False)
        orders = self.venue.orders(account, symbol, open_only=True, conditional=False)
        return web.json_response([self._order_json(o) for o in orders])

    # --- Algo Order API (/fapi/v1/algoOrder) ---------------------------------------------------------

    def _algo_status(self, order: VenueOrder) -> str:
        if order.status == "triggered" and order.triggered_order_id is not None:
            child = self.venue.get_order(order.account, order.symbol, order_id=order.triggered_order_id)
            return "FINISHED" if child.status == "filled" else "TRIGGERED"
        return ALGO_STATUS[order.status]

    def _algo_json(self, order: VenueOrder) -> dict[str, Any]:
        return {
            "algoId": int(order.id), "clientAlgoId": order.client_order_id or f"web_{order.id}",
            "algoType": "CONDITIONAL", "orderType": WIRE_TYPE[order.type], "type": WIRE_TYPE[order.type],
            "symbol": self.venue.instrument(order.symbol).id, "side": order.side.upper(), "positionSide": "BOTH",
            "timeInForce": "GTC", "quantity": _s(order.amount), "algoStatus": self._algo_status(order),
            "actualOrderId": order.triggered_order_id or "",
            "triggerPrice": _s(order.trigger_price), "price": "0", "workingType": "MARK_PRICE",
            "priceMatch": "NONE", "closePosition": order.close_position, "priceProtect": False,
            "reduceOnly": order.reduce_only,
            "activatePrice": _s(order.activation_price) if order.activation_price else "",
            "callbackRate": _s(order.callback_rate) if order.callback_rate else "",
            "createTime": order.created_ms, "updateTime": order.updated_ms, "triggerTime": 0, "goodTillDate": 0,
        }

    async def _create_algo_order(self, request: web.Request) -> web.StreamResponse:
        account, params = await self._signed(request)
        symbol = self._symbol(params)
        if params.get("algoType", "").upper() != "CONDITIONAL":
            raise _missing("algoType")
        wire_type = params.get("type", "").upper()
        if wire_type not in VENUE_TYPE or wire_type == "MARKET":
            raise BinanceApiError(400, -1116, "Invalid orderType.")
        side = params.get("side", "").lower()
        close_position = _bool_param(params, "closePosition")
        if close_position and any(
            o.close_position and o.side == side and o.type == VENUE_TYPE[wire_type]
            for o in self.venue.orders(account, symbol, open_only=True, conditional=True)
        ):
            raise BinanceApiError(
                400, -4130, "An open stop or take profit order with GTE and closePosition in the direction is existing."
            )
        if close_position and _bool_param(params, "reduceOnly"):
            raise BinanceApiError(400, -1106, "Parameter 'reduceonly' sent when not required.")
        position = self.venue.position(account, symbol)
        if close_position and position.contracts == 0:  # docs/conformance.md B7
            raise BinanceApiError(400, -4509, "Time in Force (TIF) GTE can only be used with open positions. "
                                              "Please ensure that positions are available.")
        if _bool_param(params, "reduceOnly") and side != {"long": "sell", "short": "buy"}.get(position.side or ""):
            raise BinanceApiError(400, -2022, "ReduceOnly Order is rejected.")  # B8 (assumed for algo orders)
        amount = None if close_position else _decimal_param(params, "quantity", required=True)
        trigger = _decimal_param(params, "triggerPrice")
        if amount is not None and trigger is not None:  # assumed: valued at the trigger price (B10)
            self._check_notional(amount, trigger, _bool_param(params, "reduceOnly"))
        order = self.venue.place_order(
            account, symbol, side, VENUE_TYPE[wire_type],
            amount=amount,
            client_order_id=_client_id_param(params, "clientAlgoId"),
            reduce_only=_bool_param(params, "reduceOnly"), close_position=close_position,
            trigger_price=trigger,
            callback_rate=_decimal_param(params, "callbackRate"),
            activation_price=_decimal_param(params, "activatePrice"),
        )
        # An algo order rests when accepted: its full answer (algoStatus NEW) is already the ACK form.
        return await self._answer_order(request, self._algo_json(order))

    def _find_algo(self, account: str, params: dict[str, str]) -> VenueOrder:
        order = self.venue.get_order(
            account, None, order_id=params.get("algoId") or None, client_order_id=params.get("clientAlgoId") or None
        )
        if not order.conditional:
            raise VenueReject("order_not_found", "not an algo order")
        return order

    async def _get_algo_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        return web.json_response(self._algo_json(self._find_algo(account, params)))

    async def _cancel_algo_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        try:
            order = self._find_algo(account, params)
            order = self.venue.cancel_order(account, order.symbol, order_id=order.id)
        except VenueReject as reject:
            raise _cancel_reject(reject) from None
        return web.json_response(
            {"algoId": int(order.id), "clientAlgoId": order.client_order_id or f"web_{order.id}",
             "code": "200", "msg": "success"}
        )

    async def _open_algo_orders(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        symbol = self._symbol(params, required=False)
        orders = self.venue.orders(account, symbol, open_only=True, conditional=True)
        if self.venue.faults.list_no_stops:
            orders = []
        return web.json_response([self._algo_json(o) for o in orders])

    # --- listen keys ---------------------------------------------------------------------------------

    async def _listen_key_create(self, request: web.Request) -> web.Response:
        account = self._api_key_account(request)
        key = next((k for k, a in self._listen_keys.items() if a == account), None)
        if key is None:  # Binance hands back the still-valid key of the account, its validity extended
            key = secrets.token_urlsafe(48)
            self._listen_keys[key] = account
        self._key_lifetimes.start(key, self.venue.now(), self.listen_key_ttl_ms)
        return web.json_response({"listenKey": key})

    async def _listen_key_keepalive(self, request: web.Request) -> web.Response:
        account = self._api_key_account(request)
        key = next((k for k, a in self._listen_keys.items() if a == account), None)
        if key is None or not self._key_lifetimes.extend(key, self.venue.now(), self.listen_key_ttl_ms):
            raise BinanceApiError(400, -1125, "This listenKey does not exist.")
        return web.json_response({"listenKey": key})

    async def _listen_key_delete(self, request: web.Request) -> web.Response:
        account = self._api_key_account(request)
        for key in [k for k, a in self._listen_keys.items() if a == account]:
            self._forget_key(key)
            self._key_lifetimes.discard(key)
        return web.json_response({})

    # --- WebSocket -----------------------------------------------------------------------------------

    async def _ws_private(self, request: web.Request) -> web.StreamResponse:
        """``/private/ws?listenKey=K&events=A/B`` or ``/private/ws/<K>``: the user data stream."""
        key = request.match_info.get("key") or request.query.get("listenKey", "")
        if key not in self._listen_keys:
            return web.json_response({"code": -1125, "msg": "This listenKey does not exist."}, status=400)
        events = request.query.get("events")  # an allow list of event types (none given: every event)
        sock = StreamSocket(web.WebSocketResponse(), private=True, account=self._listen_keys[key], key=key,
                            topics=(events or "").split("/"), all_topics=events is None)
        return await self.serve_socket(request, sock)

    async def _ws_market(self, request: web.Request) -> web.StreamResponse:
        stream = request.match_info.get("stream")
        return await self._serve_marks(request, [stream] if stream else [], combined=False)

    async def _ws_legacy(self, request: web.Request) -> web.StreamResponse:
        """The retired ``/ws/...`` and ``/stream?...``: the handshake completes, then nothing (B2)."""
        return await self.serve_socket(request)

    async def _ws_combined(self, request: web.Request) -> web.StreamResponse:
        streams = [s for s in request.query.get("streams", "").split("/") if s]
        return await self._serve_marks(request, streams, combined=True)

    def _mark_symbol(self, stream: str) -> str:
        """The unified symbol of a ``<symbol>@markPrice[@1s]`` stream name.  :raises ValueError: another
        stream or an unknown symbol."""
        native, _, topic = str(stream).partition("@")
        if not topic.startswith("markPrice"):
            raise ValueError(f"unsupported stream {stream}")
        try:
            return self.venue.instrument_by_id(native.upper()).symbol
        except VenueReject:
            raise ValueError("Invalid symbol.") from None

    async def _serve_marks(self, request: web.Request, streams: list[str], combined: bool) -> web.StreamResponse:
        try:
            symbols = {self._mark_symbol(stream) for stream in streams}
        except ValueError as exc:
            return web.json_response({"code": -1121 if "symbol" in str(exc) else -1100, "msg": str(exc)}, status=400)
        if len(symbols) > self.market_streams_per_connection:
            return web.json_response({"code": -1100, "msg": "too many streams"}, status=400)  # assumed (B26)
        sock = _MarkSocket(web.WebSocketResponse(), symbols, combined)
        self.market_connections += 1
        for symbol in sorted(symbols):  # the first tick right away, like the 1 s stream would soon
            with contextlib.suppress(LookupError):
                self.send(sock, self._mark_frame(symbol, self.venue.mark_price(symbol), now_ms(), combined))
        return await self.serve_socket(request, sock, on_text=self._market_request)

    async def _market_request(self, sock: StreamSocket, text: str) -> None:
        """One ``{"method": ..., "params": [...], "id": N}`` frame ("Live Subscribing/Unsubscribing to
        streams"): ``{"result": null, "id": N}`` (``LIST_SUBSCRIPTIONS``: the stream names), or an error
        ``{"code": C, "msg": M, "id": N}`` ("Error Messages").  More than ``market_messages_per_s`` messages
        within a second close the socket (B26)."""
        assert isinstance(sock, _MarkSocket)
        now = time.monotonic()
        sock.received.append(now)
        while now - sock.received[0] >= 1.0:
            sock.received.popleft()
        if len(sock.received) > self.market_messages_per_s:
            await sock.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"Too many requests")
            return
        try:
            request = json.loads(text)
            method, params, request_id = request["method"], request.get("params") or [], request["id"]
            if not isinstance(params, list):
                raise TypeError("params")
        except (ValueError, KeyError, TypeError):
            await self.reply(sock, {"code": 3, "msg": "Invalid JSON: expected a request object", "id": None})
            return
        self.note_ws_op(str(method))
        try:
            wanted = {self._mark_symbol(stream) for stream in params}
        except ValueError as exc:
            await self.reply(sock, {"code": 2, "msg": f"Invalid request: {exc}", "id": request_id})
            return
        reply: dict[str, Any] = {"result": None, "id": request_id}
        if method == "SUBSCRIBE":
            if len(sock.topics | wanted) > self.market_streams_per_connection:
                await self.reply(sock, {"code": 2, "id": request_id, "msg": "Invalid request: too many streams "
                                        f"(max {self.market_streams_per_connection})"})  # wording assumed (B26)
                return
            sock.topics |= wanted
            await self.reply(sock, reply)
            for symbol in sorted(wanted):
                with contextlib.suppress(LookupError):
                    self.send(sock, self._mark_frame(symbol, self.venue.mark_price(symbol), now_ms(), sock.combined))
            return
        if method == "UNSUBSCRIBE":
            sock.topics -= wanted
        elif method == "LIST_SUBSCRIPTIONS":
            reply["result"] = sorted(f"{self.venue.instrument(s).id.lower()}@markPrice@1s" for s in sock.topics)
        else:
            reply = {"code": 2, "msg": f"Invalid request: unknown variant {method}", "id": request_id}
        await self.reply(sock, reply)

    def _mark_frame(self, symbol: str, price: Decimal, ts: int, combined: bool) -> str:
        native = self.venue.instrument(symbol).id
        data = {"e": "markPriceUpdate", "E": ts, "s": native, "p": _s(price), "i": _s(price), "P": _s(price),
                "r": "0.00010000", "T": (ts // 28_800_000 + 1) * 28_800_000, "st": 1}
        if combined:
            return json.dumps({"stream": f"{native.lower()}@markPrice@1s", "data": data})
        return json.dumps(data)

    # --- venue events → frames -----------------------------------------------------------------------

    def on_venue_event(self, event: VenueEvent) -> None:
        if isinstance(event, MarkPriceEvent):
            for sock in list(self.sockets):
                if isinstance(sock, _MarkSocket) and sock.wants(event.symbol):
                    self.send(sock, self._mark_frame(event.symbol, event.price, event.ts, sock.combined))
            return
        # A fill goes out as TRADE_LITE, ACCOUNT_UPDATE, then ORDER_TRADE_UPDATE, the last two with one T
        # (docs/conformance.md B4): the venue's order event is held until its position event has been sent.
        if isinstance(event, FillEvent):
            self._last_fill[event.order_id] = event
            if event.origin not in FORCED:  # TRADE_LITE: TRADE executions only
                self._send(event.account, self._trade_lite(event))
            return
        if isinstance(event, OrderEvent):
            order, fill = event.order, self._last_fill.get(event.order.id)
            if (not order.conditional and order.status in ("filled", "partially_filled") and fill is not None
                    and fill.ts == event.ts):
                self._held.setdefault(order.account, []).append((order, event.ts))
                return
            for frame in self._order_frames(order, event.ts):
                self._send(order.account, frame)
        elif isinstance(event, PositionEvent):
            frame, closing, t = self._account_update(event.position, event.ts)
            self._send(event.position.account, frame, closing)
            self._release_held(event.position.account, t)
            if closing:
                self._expire_close_position_orders(event.position.account, event.position.symbol)
        elif isinstance(event, BalanceEvent):  # a fill always moves a position first; never hold past it
            self._release_held(event.account, None)
            if event.reason == "funding":
                self._send(event.account, self._funding_update(event))

    def _expire_close_position_orders(self, account: str, symbol: str) -> None:
        """The position closed: Binance's system expires its close-position (GTE_GTC) algo orders (B7)."""
        for order in self.venue.orders(account, symbol, open_only=True, conditional=True):
            if order.close_position:
                self.venue.cancel_order(account, symbol, order_id=order.id, expire=True)

    def _send(self, account: str, frame: str, closing: bool = False) -> None:
        self.publish(account, json.loads(frame)["e"], frame, closing)

    def _release_held(self, account: str, t: int | None) -> None:
        for order, ts in self._held.pop(account, []):
            for frame in self._order_frames(order, ts, t):
                self._send(account, frame)

    def _trade_lite(self, fill: FillEvent) -> str:
        """``TRADE_LITE`` (Binance "Event: Trade Lite"; fixture ``user_data_json/trade_lite.json``)."""
        order = self.venue.get_order(fill.account, fill.symbol, order_id=fill.order_id)
        return json.dumps({
            "e": "TRADE_LITE", "E": fill.ts, "T": fill.ts, "s": self.venue.instrument(fill.symbol).id,
            "c": self._client_id(order), "S": fill.side.upper(), "q": _s(order.amount), "p": _s(order.price),
            "i": int(fill.order_id), "l": _s(fill.amount), "L": _s(fill.price), "t": int(fill.exec_id),
            "m": fill.maker,
        })

    def _transaction_time(self, account: str, ts: int) -> int:
        """``T`` strictly increasing per account (the decoder's ordering key)."""
        t = max(ts, self._last_transaction_ms.get(account, 0) + 1)
        self._last_transaction_ms[account] = t
        return t

    def _account_update(self, position: VenuePosition, ts: int) -> tuple[str, bool, int]:
        """The frame, whether it reports flat, and its ``T``."""
        t = self._transaction_time(position.account, ts)
        wallet = _s(self.venue.wallet(position.account))  # the frame carries only the wallet balance
        signed = position.contracts if position.side == "long" else -position.contracts
        frame = {
            "e": "ACCOUNT_UPDATE", "T": t, "E": t,
            "a": {
                "m": "ORDER",
                "B": [{"a": "USDT", "wb": wallet, "cw": wallet, "bc": "0"}],
                "P": [{
                    "s": self.venue.instrument(position.symbol).id, "pa": _s(signed),
                    "ep": _s(position.entry_price), "bep": _s(position.entry_price),
                    "cr": _s(position.realized_pnl), "up": _s(position.unrealized_pnl), "mt": "cross",
                    "iw": "0", "ps": "BOTH",
                }],
            },
        }
        return json.dumps(frame), position.contracts == 0, t

    def _funding_update(self, event: BalanceEvent) -> str:
        """``ACCOUNT_UPDATE`` ``m`` ``FUNDING_FEE`` of a cross position: the balance only ("Event: Balance and
        Position Update"; ``"P": []`` as in a real 2026 capture, docs/conformance.md B19)."""
        t = self._transaction_time(event.account, event.ts)
        wallet = _s(self.venue.wallet(event.account))
        return json.dumps({"e": "ACCOUNT_UPDATE", "T": t, "E": t, "a": {
            "B": [{"a": "USDT", "wb": wallet, "cw": wallet, "bc": _s(event.change)}], "P": [], "m": "FUNDING_FEE"}})

    def _order_frames(self, order: VenueOrder, ts: int, t: int | None = None) -> list[str]:
        """``ORDER_TRADE_UPDATE`` (and the parent's ``ALGO_UPDATE`` FINISHED) at ``T = t`` (default ``ts``)."""
        ts = ts if t is None else t
        if order.conditional:
            return self._algo_frames(order, ts)
        frames = []
        parent = self._parent_of.get(order.id)
        traded = order.status in ("filled", "partially_filled")
        fill = self._last_fill.get(order.id) if traded else None
        if order.status == "new":
            execution = "NEW"
        elif traded:  # CALCULATED: "Liquidation Execution" (B21)
            execution = "CALCULATED" if order.origin in FORCED else "TRADE"
        else:
            execution = ORDER_STATUS[order.status]
        status = ORDER_STATUS[order.status]
        # "Expire Reason" 9: "Market order could not be filled completely, remaining quantity is canceled" (B20)
        expire_reason = "9" if order.status == "expired" and order.type == "market" else "0"
        frames.append(json.dumps({
            "e": "ORDER_TRADE_UPDATE", "T": ts, "E": ts,
            "o": {
                "s": self.venue.instrument(order.symbol).id, "c": self._client_id(order), "S": order.side.upper(),
                "o": self._wire_type(order),
                "f": "IOC" if order.origin in FORCED else WIRE_TIME_IN_FORCE.get(order.time_in_force or "", "GTC"),
                "q": _s(order.amount), "p": _s(order.price), "ap": _s(order.average),
                "sp": _s(parent.trigger_price if parent is not None else None), "x": execution, "X": status,
                "i": int(order.id), "l": _s(fill.amount if fill else None), "z": _s(order.filled),
                "L": _s(fill.price if fill else None), "N": "USDT", "n": _s(fill.fee if fill else None),
                "T": ts, "t": int(fill.exec_id) if fill else 0, "b": "0", "a": "0", "m": bool(fill and fill.maker),
                "R": order.reduce_only, "wt": "MARK_PRICE" if parent is not None else "CONTRACT_PRICE",
                # the key set of a real /private/ws capture (fixture order_update_new_private_ws_capture.json):
                # AP / cr only on trailing orders, pm / gtd / er always
                "ot": self._orig_type(order), "ps": "BOTH", "cp": False, "rp": _s(fill.realized_pnl if fill else None),
                "pP": False, "si": 0, "ss": 0, "V": "NONE", "pm": "NONE", "gtd": 0, "er": expire_reason,
            },
        }))
        if parent is not None and order.status == "filled":  # the algo order's market order is done
            finished = dataclasses.replace(
                parent, filled=order.filled, average=order.average, status="filled", updated_ms=ts
            )
            frames.append(self._algo_frame(finished, ts, "FINISHED"))
        return frames

    def _algo_frames(self, order: VenueOrder, ts: int) -> list[str]:
        if order.status == "triggered":
            if order.triggered_order_id is not None:
                self._parent_of[order.triggered_order_id] = order
            return [self._algo_frame(order, ts, "TRIGGERING"), self._algo_frame(order, ts, "TRIGGERED")]
        status = ALGO_STATUS.get(order.status)
        return [] if status is None else [self._algo_frame(order, ts, status)]

    def _algo_frame(self, order: VenueOrder, ts: int, status: str) -> str:
        return json.dumps({
            "e": "ALGO_UPDATE", "T": ts, "E": ts,
            "o": {
                "caid": order.client_order_id or f"web_{order.id}", "aid": int(order.id), "at": "CONDITIONAL",
                "o": WIRE_TYPE[order.type], "s": self.venue.instrument(order.symbol).id, "S": order.side.upper(),
                "ps": "BOTH", "f": "GTC", "q": _s(order.amount), "X": status,
                "ai": (order.triggered_order_id or "") if status in ("TRIGGERED", "FINISHED") else "",
                "ap": _s(order.average), "aq": _s(order.filled), "act": "0", "tp": _s(order.trigger_price),
                "p": "0", "V": "NONE", "wt": "MARK_PRICE", "pm": "NONE", "cp": order.close_position, "pP": False,
                "R": order.reduce_only, "tt": 0, "gtd": 0,
                "rm": "Reduce Only reject" if status in ("EXPIRED", "REJECTED") else "",  # the doc example's reason
            },
        })
