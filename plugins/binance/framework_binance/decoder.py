"""Binance USDⓈ-M user-data and mark-price frames → framework stream events, without a socket.

Source: Binance USDⓈ-M futures "User Data Streams" (``ACCOUNT_UPDATE``, ``ORDER_TRADE_UPDATE``,
``ALGO_UPDATE``, ``TRADE_LITE``, ``listenKeyExpired``) and "Mark Price Stream" (``markPriceUpdate``);
payload shapes as in ``plugins/binance/tests/fixtures/`` (Binance's documented examples and real captures).

* ``ACCOUNT_UPDATE`` → one :class:`PositionUpdate` per symbol of ``P`` (none for a balance-only update:
  ``FUNDING_FEE`` on a cross position, a deposit, a transfer).  ``"pa":"0"`` is a *flat* update
  (``contracts=0``, ``side=None``), never dropped (docs/incidents.md I-1, I-2) — unless another entry of
  the same frame shows that symbol open (a zero ``LONG`` / ``SHORT`` entry beside the ``BOTH`` one).
  ``sequence`` is the transaction time ``T`` (strictly increasing per account on the venue).
* ``ORDER_TRADE_UPDATE`` / ``ALGO_UPDATE`` → :class:`OrderUpdate` with the fill's ``origin``.
* ``markPriceUpdate`` → :class:`MarkPrice`.
* ``TRADE_LITE`` (duplicates ``ORDER_TRADE_UPDATE``), ``listenKeyExpired`` and other events → no event.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from framework.errors import StreamError
from framework.models import MarkPrice, Order, OrderUpdate, PositionUpdate, StreamEvent

VENUE = "binance"
#: frame parser: orjson (numbers as json.loads gives them: ints int, fractions float, Decimal(str(x)) exact;
#: NaN / Infinity are malformed frames, ints past 64 bits become floats); tests swap in ``json.loads`` and
#: check both give the same events on every fixture
loads = orjson.loads

#: Binance order statuses (REST and stream) → ccxt unified status
ORDER_STATUS = {
    "NEW": "open",
    "PARTIALLY_FILLED": "open",
    "FILLED": "closed",
    "CANCELED": "canceled",
    "EXPIRED": "expired",
    "EXPIRED_IN_MATCH": "expired",
    "REJECTED": "rejected",
}
#: Algo Order API statuses (``ALGO_UPDATE`` ``X``, REST ``algoStatus``) → ccxt unified status
ALGO_STATUS = {
    "NEW": "open",
    "TRIGGERING": "open",
    "TRIGGERED": "closed",
    "FINISHED": "closed",
    "CANCELED": "canceled",
    "REJECTED": "rejected",
    "EXPIRED": "expired",
}
#: order type (``o`` / ``ot``) → what a fill of it means for the position
ORIGIN_BY_TYPE = {
    "STOP_MARKET": "stop_loss",
    "STOP": "stop_loss",
    "TAKE_PROFIT_MARKET": "take_profit",
    "TAKE_PROFIT": "take_profit",
    "TRAILING_STOP_MARKET": "trailing_stop",
}

_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "USD")
_DELIVERY = re.compile(r"^([A-Z0-9]+?)(USDT|USDC|USD)_(\d{6})$")


def unified_symbol(market_id: str, symbols: dict[str, str] | None = None) -> str:
    """The ccxt symbol of a Binance futures id: ``XRPUSDT`` → ``XRP/USDT:USDT``.

    :param symbols: ccxt's ``markets_by_id``-style map ``{id: symbol}``, used first when given.
    :raises StreamError: the id fits no known pattern.
    """
    if symbols and market_id in symbols:
        return symbols[market_id]
    delivery = _DELIVERY.match(market_id)
    if delivery:
        base, quote, expiry = delivery.groups()
        settle = base if quote == "USD" else quote  # COIN-M delivery contracts settle in the base coin
        return f"{base}/{quote}:{settle}-{expiry}"
    for quote in _QUOTES:
        if market_id.endswith(quote) and len(market_id) > len(quote):
            return f"{market_id[: -len(quote)]}/{quote}:{quote}"
    raise StreamError(f"unknown Binance market id {market_id!r}", venue=VENUE)


def _decimal(value: Any, field: str) -> Decimal:
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise StreamError(f"field {field!r} is not a number: {value!r}", venue=VENUE) from exc
    if not result.is_finite():
        raise StreamError(f"field {field!r} is not finite: {value!r}", venue=VENUE)
    return result


def _price(value: Any, field: str) -> Decimal | None:
    """A price where Binance writes ``"0"`` for "none"."""
    if value in (None, ""):
        return None
    result = _decimal(value, field)
    return result if result > 0 else None


class BinanceDecoder:
    """Decodes one frame at a time; holds which order ids were spawned by a triggered algo order, so the
    fill of that order is attributed to the stop / take-profit / trailing stop (``ALGO_UPDATE`` ``ai``).

    :param symbols: optional ``{market id: unified symbol}`` (from ccxt's markets); a pattern otherwise.
    """

    def __init__(self, symbols: dict[str, str] | None = None) -> None:
        self.symbols = dict(symbols or {})
        self._origin_by_order_id: dict[str, str] = {}

    def decode(self, raw: str | bytes) -> list[StreamEvent]:
        """Decode one frame exactly as the socket delivered it.

        :returns: the events it carries (empty for events of no interest).
        :raises StreamError: not JSON, not an object, or a required field missing / not a number.
        """
        try:
            message = loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StreamError(f"frame is not JSON: {exc}", venue=VENUE) from exc
        return self.decode_message(message)

    def decode_message(self, message: Any) -> list[StreamEvent]:
        """Decode an already parsed frame (a combined-stream ``{"stream","data"}`` wrapper is unwrapped)."""
        if not isinstance(message, dict):
            raise StreamError(f"frame is not a JSON object: {type(message).__name__}", venue=VENUE)
        if "stream" in message and isinstance(message.get("data"), dict):
            message = message["data"]
        kind = message.get("e")
        try:
            if kind == "ACCOUNT_UPDATE":
                return self._account_update(message)
            if kind == "ORDER_TRADE_UPDATE":
                return [self._order_trade_update(message)]
            if kind == "ALGO_UPDATE":
                return [self._algo_update(message)]
            if kind == "markPriceUpdate":
                return [self._mark_price(message)]
        except StreamError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise StreamError(f"malformed {kind} frame: {exc!r}", venue=VENUE) from exc
        if kind is None and "result" in message and "id" in message:
            return []  # answer to a SUBSCRIBE request
        if not isinstance(kind, str):
            raise StreamError("frame has no event type 'e'", venue=VENUE)
        return []  # TRADE_LITE, listenKeyExpired, MARGIN_CALL, ... carry no position or order state we use

    # --- event types ---------------------------------------------------------------------------------

    def _account_update(self, message: dict[str, Any]) -> list[StreamEvent]:
        transaction_time = int(message["T"])
        updates: list[PositionUpdate] = []
        # A cross-margin FUNDING_FEE update carries the balance only: no "P" at all per the docs, "P": [] in a
        # real capture (docs/conformance.md B19); neither is a position change.
        for entry in message["a"].get("P") or []:
            amount = _decimal(entry["pa"], "pa")
            hedge_side = entry.get("ps", "BOTH")
            if amount == 0:
                side = None
            elif hedge_side == "LONG":
                side = "long"
            elif hedge_side == "SHORT":
                side = "short"
            else:  # one-way mode: the sign of the amount is the side
                side = "long" if amount > 0 else "short"
            updates.append(
                PositionUpdate(
                    venue=VENUE,
                    symbol=unified_symbol(entry["s"], self.symbols),
                    side=side,
                    contracts=abs(amount),
                    entry_price=_price(entry.get("ep"), "ep") if amount != 0 else None,
                    sequence=transaction_time,
                    timestamp=transaction_time,
                )
            )
        return _one_state_per_symbol(updates)

    def _order_trade_update(self, message: dict[str, Any]) -> OrderUpdate:
        o = message["o"]
        order_id = str(o["i"])
        status_code = o["X"]
        amount = _decimal(o["q"], "q")
        filled = _decimal(o["z"], "z")
        if status_code in ("NEW_INSURANCE", "NEW_ADL"):  # liquidation / ADL executions
            status = "closed" if filled >= amount else "open"
        elif status_code in ORDER_STATUS:
            status = ORDER_STATUS[status_code]
        else:
            raise StreamError(f"unknown order status {status_code!r}", venue=VENUE, order_id=order_id)
        order = Order(
            venue=VENUE,
            symbol=unified_symbol(o["s"], self.symbols),
            id=order_id,
            client_order_id=o.get("c") or None,
            side=_side(o["S"]),
            type=str(o.get("ot") or o["o"]).lower(),
            amount=max(amount, filled),
            filled=filled,
            average=_price(o.get("ap"), "ap"),
            status=status,
            reduce_only=bool(o.get("R", False)) or bool(o.get("cp", False)),
            trigger_price=_price(o.get("sp"), "sp"),
            timestamp=int(o.get("T", message["T"])),
        )
        rp = o.get("rp")
        return OrderUpdate(
            order=order,
            origin=self._order_origin(o, order_id),
            last_fill_price=_price(o.get("L"), "L"),
            last_fill_amount=_decimal(o.get("l", "0"), "l"),
            realized_pnl=_decimal(rp, "rp") if rp not in (None, "") else None,
            timestamp=int(message["T"]),
        )

    def _order_origin(self, o: dict[str, Any], order_id: str) -> str:
        client_id = str(o.get("c") or "")
        if o.get("X") == "NEW_ADL" or client_id.startswith("adl_autoclose"):
            return "adl"
        if o.get("X") == "NEW_INSURANCE" or o.get("x") == "CALCULATED" or client_id.startswith("autoclose-"):
            return "liquidation"
        by_type = ORIGIN_BY_TYPE.get(str(o.get("ot") or o.get("o")))
        if by_type is not None:
            return by_type
        # Settlement / delivery closes ("settlement_autoclose-", "delivery_autoclose-") are plain fills.
        return self._origin_by_order_id.get(order_id, "order")

    def _algo_update(self, message: dict[str, Any]) -> OrderUpdate:
        o = message["o"]
        algo_id = str(o["aid"])
        status_code = o["X"]
        if status_code not in ALGO_STATUS:
            raise StreamError(f"unknown algo status {status_code!r}", venue=VENUE, order_id=algo_id)
        origin = ORIGIN_BY_TYPE.get(o["o"], "order")
        spawned = str(o.get("ai") or "")
        if spawned:  # TRIGGERED: the market order it spawned fills as this stop / take-profit
            self._origin_by_order_id[spawned] = origin
        filled = _decimal(o.get("aq") or "0", "aq")
        order = Order(
            venue=VENUE,
            symbol=unified_symbol(o["s"], self.symbols),
            id=algo_id,
            client_order_id=o.get("caid") or None,
            side=_side(o["S"]),
            type=str(o["o"]).lower(),
            amount=max(_decimal(o.get("q") or "0", "q"), filled),  # closePosition orders carry no quantity
            filled=filled,
            average=_price(o.get("ap"), "ap"),
            status=ALGO_STATUS[status_code],
            reduce_only=bool(o.get("R", False)) or bool(o.get("cp", False)),
            trigger_price=_price(o.get("tp"), "tp"),
            timestamp=int(message["T"]),
        )
        return OrderUpdate(order=order, origin=origin, timestamp=int(message["T"]))

    def _mark_price(self, message: dict[str, Any]) -> MarkPrice:
        price = _price(message["p"], "p")
        if price is None:
            raise StreamError(f"mark price is not positive: {message['p']!r}", venue=VENUE)
        return MarkPrice(
            venue=VENUE, symbol=unified_symbol(message["s"], self.symbols), price=price, timestamp=int(message["E"])
        )


def _one_state_per_symbol(updates: list[PositionUpdate]) -> list[StreamEvent]:
    """A real frame can list one symbol several times: the one-way (``BOTH``) entry and zero ``LONG`` /
    ``SHORT`` entries (JKorf/Binance.Net issue #546, fixture ``fill_capture_account_update.json``).  A zero
    entry then only says that side is empty, not that the position closed: when any entry of a symbol is
    open, its zero entries are dropped; when all are zero, one flat update remains (I-1: never dropped)."""
    open_symbols = {u.symbol for u in updates if u.contracts > 0}
    kept: list[StreamEvent] = []
    flat_seen: set[str] = set()
    for update in updates:
        if update.contracts > 0:
            kept.append(update)
        elif update.symbol not in open_symbols and update.symbol not in flat_seen:
            flat_seen.add(update.symbol)
            kept.append(update)
    return kept


def _side(value: Any) -> str:
    side = str(value).lower()
    if side not in ("buy", "sell"):
        raise StreamError(f"unknown order side {value!r}", venue=VENUE)
    return side
