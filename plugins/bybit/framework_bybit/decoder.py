"""Pure decoder of Bybit v5 stream frames (private ``position`` / ``order`` / ``execution``, public
``tickers.<SYMBOL>``) into :data:`framework.models.StreamEvent`.

Works without a socket (``framework replay``, tests).  Only linear contracts are decoded; items of
another ``category`` (spot, option, inverse) and topics of no interest (wallet, trades, acks, pongs)
yield nothing.  Source: Bybit v5 docs, "WebSocket Stream > Private" (position, order, execution) and
"Public > Ticker".
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from pydantic import ValidationError

from framework.errors import StreamError
from framework.models import MarkPrice, Order, OrderUpdate, PositionUpdate, StreamEvent

VENUE = "bybit"
#: frame parser: orjson (numbers as json.loads gives them: ints int, fractions float, Decimal(str(x)) exact;
#: NaN / Infinity are malformed frames, ints past 64 bits become floats); tests swap in ``json.loads`` and
#: check both give the same events on every fixture
loads = orjson.loads

_POSITION_SIDES = {"Buy": "long", "Sell": "short"}
_ORDER_SIDES = {"Buy": "buy", "Sell": "sell"}

#: Bybit ``orderStatus`` -> ccxt unified status (as ccxt's ``bybit.parse_order_status``).
ORDER_STATUSES = {
    "Created": "open",
    "New": "open",
    "PartiallyFilled": "open",
    "Untriggered": "open",
    "Triggered": "open",
    "Active": "open",
    "PendingCancel": "open",
    "Filled": "closed",
    "PartiallyFilledCanceled": "closed",
    "Cancelled": "canceled",
    "Deactivated": "canceled",
    "Rejected": "rejected",
    "Expired": "expired",
}

# What created an order / execution, most specific first: createType, then execType, then stopOrderType.
_ORIGIN_BY_CREATE_TYPE = {
    "CreateByLiq": "liquidation",
    "CreateByTakeOver_PassThrough": "liquidation",
    "CreateByAdl_PassThrough": "adl",
    "CreateByStopLoss": "stop_loss",
    "CreateByPartialStopLoss": "stop_loss",
    "CreateByTakeProfit": "take_profit",
    "CreateByPartialTakeProfit": "take_profit",
    "CreateByTrailingStop": "trailing_stop",
}
_ORIGIN_BY_EXEC_TYPE = {"BustTrade": "liquidation", "AdlTrade": "adl"}
_ORIGIN_BY_STOP_ORDER_TYPE = {
    "StopLoss": "stop_loss",
    "PartialStopLoss": "stop_loss",
    "TakeProfit": "take_profit",
    "PartialTakeProfit": "take_profit",
    "TrailingStop": "trailing_stop",
}


def unified_symbol(native: str, symbols: Mapping[str, str] | None = None) -> str:
    """``XRPUSDT`` -> ``XRP/USDT:USDT`` (from ``symbols``, else by Bybit's linear naming: ``*USDT`` is
    USDT-settled, ``*PERP`` / ``*USDC`` USDC-settled).

    :raises StreamError: the id is not a linear perpetual id.
    """
    if symbols and native in symbols:
        return symbols[native]
    for suffix, quote in (("USDT", "USDT"), ("PERP", "USDC"), ("USDC", "USDC")):
        if native.endswith(suffix) and len(native) > len(suffix) and native.isalnum():
            return f"{native[: -len(suffix)]}/{quote}:{quote}"
    raise StreamError(f"not a linear perpetual symbol: {native!r}", venue=VENUE)


def decimal_or_none(value: Any) -> Decimal | None:
    """Bybit's numeric strings: ``""`` / ``None`` -> ``None``; ``"0"`` stays ``Decimal(0)``.

    :raises StreamError: a non-numeric value.
    """
    if value is None or value == "":
        return None
    try:
        return Decimal(value if type(value) is str else str(value))  # str(float): its shortest repr, exact
    except InvalidOperation as exc:
        raise StreamError(f"not a number: {value!r}", venue=VENUE) from exc


def positive_or_none(value: Any) -> Decimal | None:
    """A price field: ``None`` unless strictly positive (Bybit writes ``"0"`` for "not set")."""
    if value == "0" or value == "":  # the common "not set": no Decimal to build
        return None
    number = decimal_or_none(value)
    return number if number is not None and number > 0 else None


def order_origin(item: Mapping[str, Any]) -> str:
    """Attribute an order / execution payload: ``stop_loss``, ``take_profit``, ``trailing_stop``,
    ``liquidation``, ``adl`` or ``order``."""
    for table, key in (
        (_ORIGIN_BY_CREATE_TYPE, "createType"),
        (_ORIGIN_BY_EXEC_TYPE, "execType"),
        (_ORIGIN_BY_STOP_ORDER_TYPE, "stopOrderType"),
    ):
        origin = table.get(str(item.get(key) or ""))
        if origin:
            return origin
    return "order"


def _required(item: Mapping[str, Any], key: str) -> Any:
    if key not in item or item[key] is None:
        raise StreamError(f"missing field {key!r}", venue=VENUE)
    return item[key]


def _ms(value: Any, fallback: int | None = None) -> int:
    if value in (None, "") and fallback is not None:
        return fallback
    try:
        result = int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StreamError(f"not a timestamp: {value!r}", venue=VENUE) from exc
    if not -(2**63) <= result < 2**63:  # Bybit's are int64; past 64 bits a JSON parser may round (orjson: float)
        raise StreamError(f"not a timestamp: {value!r}", venue=VENUE)
    return result


class BybitDecoder:
    """Decode one Bybit v5 frame exactly as the socket delivered it.

    :param symbols: native id -> unified symbol (from ccxt's markets); Bybit's linear naming otherwise.
    """

    def __init__(self, symbols: Mapping[str, str] | None = None) -> None:
        self.symbols = dict(symbols or {})
        self._derived: dict[str, str] = {}  # ids named by the linear naming rule, once each

    def _symbol(self, item: Mapping[str, Any]) -> str:
        native = str(_required(item, "symbol"))
        symbol = self.symbols.get(native) or self._derived.get(native)
        if symbol is None:
            symbol = unified_symbol(native)
            if len(self._derived) < 10_000:  # bounded: a hostile stream of made-up ids cannot grow it
                self._derived[native] = symbol
        return symbol

    def decode(self, raw: str | bytes) -> list[StreamEvent]:
        """:returns: the events the frame carries (empty for acks, pongs, wallet and other topics).
        :raises StreamError: not JSON, not an object, or a position/order/ticker item that cannot be
            read without guessing (missing side on an open position, missing ``seq``…).
        """
        try:
            message = loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StreamError(f"frame is not JSON: {exc}", venue=VENUE) from exc
        if not isinstance(message, dict):
            raise StreamError("frame is not a JSON object", venue=VENUE)
        if "op" in message or "success" in message:  # auth / subscribe / ping answers: the client's business
            return []
        topic = message.get("topic")
        if not isinstance(topic, str):
            raise StreamError("frame has neither 'op' nor 'topic'", venue=VENUE)
        try:
            if topic == "position":
                return [self._position(item, message) for item in self._items(message)]
            if topic == "order":
                return [self._order(item, message) for item in self._items(message)]
            if topic == "execution":
                return [
                    self._execution(item, message)
                    for item in self._items(message)
                    if item.get("execType", "Trade") in ("Trade", "BustTrade", "AdlTrade")
                ]
            if topic.startswith("tickers."):
                return self._ticker(message)
        except ValidationError as exc:
            raise StreamError(f"{topic} frame is inconsistent: {exc.errors()[0]['msg']}", venue=VENUE) from exc
        return []

    # --- topics --------------------------------------------------------------------------------------

    @staticmethod
    def _items(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        data = message.get("data")
        if isinstance(data, list):
            linear = []
            for item in data:  # one pass: every item must be an object, whatever its category
                if not isinstance(item, dict):
                    break
                if item.get("category", "linear") == "linear":
                    linear.append(item)
            else:
                return linear
        raise StreamError(f"{message.get('topic')} frame: 'data' is not a list of objects", venue=VENUE)

    def _position(self, item: Mapping[str, Any], message: Mapping[str, Any]) -> PositionUpdate:
        size = decimal_or_none(_required(item, "size"))
        if size is None or size < 0:
            raise StreamError(f"position size {item.get('size')!r} is not a size", venue=VENUE)
        raw_side = item.get("side", "")
        if size == 0:
            side = None  # flat: Bybit sends "side": "" (ws_position_1.json); never dropped (I-1)
        elif raw_side in _POSITION_SIDES:
            side = _POSITION_SIDES[raw_side]
        else:
            raise StreamError(f"open position of size {size} has side {raw_side!r}", venue=VENUE)
        return PositionUpdate(
            venue=VENUE,
            symbol=self._symbol(item),
            side=side,
            contracts=size,
            entry_price=positive_or_none(item.get("entryPrice", item.get("avgPrice"))),
            mark_price=positive_or_none(item.get("markPrice")),
            realized_pnl=decimal_or_none(item.get("curRealisedPnl")),
            sequence=_ms(_required(item, "seq")),
            timestamp=_ms(item.get("updatedTime"), _ms(message.get("creationTime"), 0)),
        )

    # The stream's OrderUpdate is validated in one call with its order as a dict (not Order(...) first, then
    # OrderUpdate(order=...)): the same checks, one validator entry instead of two per item (issue 17).

    def _order(self, item: Mapping[str, Any], message: Mapping[str, Any]) -> OrderUpdate:
        return OrderUpdate.model_validate({
            "order": self._order_fields(item),
            "origin": order_origin(item),
            "timestamp": _ms(item.get("updatedTime"), _ms(message.get("creationTime"), 0)),
        })

    def _execution(self, item: Mapping[str, Any], message: Mapping[str, Any]) -> OrderUpdate:
        amount = decimal_or_none(_required(item, "orderQty"))
        leaves = decimal_or_none(_required(item, "leavesQty"))
        if amount is None or leaves is None:
            raise StreamError("execution without orderQty / leavesQty", venue=VENUE)
        order = {
            "venue": VENUE,
            "symbol": self._symbol(item),
            "id": str(_required(item, "orderId")),
            "client_order_id": item.get("orderLinkId") or None,
            "side": self._order_side(item),
            "type": str(item.get("orderType") or "Market").lower(),
            "amount": amount,
            "filled": amount - leaves,
            "status": "closed" if leaves == 0 else "open",
        }
        return OrderUpdate.model_validate({
            "order": order,
            "origin": order_origin(item),
            "last_fill_price": positive_or_none(item.get("execPrice")),
            "last_fill_amount": decimal_or_none(item.get("execQty")) or Decimal(0),
            "realized_pnl": decimal_or_none(item.get("execPnl")),
            "timestamp": _ms(item.get("execTime"), _ms(message.get("creationTime"), 0)),
        })

    def _ticker(self, message: Mapping[str, Any]) -> list[StreamEvent]:
        data = message.get("data")
        if not isinstance(data, dict):
            raise StreamError("tickers frame: 'data' is not an object", venue=VENUE)
        price = positive_or_none(data.get("markPrice"))
        if price is None:  # a delta that did not change the mark price
            return []
        native = str(data.get("symbol") or str(message["topic"]).split(".", 1)[1])
        return [
            MarkPrice(
                venue=VENUE,
                symbol=unified_symbol(native, self.symbols),
                price=price,
                timestamp=_ms(message.get("ts"), 0),
            )
        ]

    # --- shared with rest.py --------------------------------------------------------------------------

    @staticmethod
    def _order_side(item: Mapping[str, Any]) -> str:
        side = item.get("side")
        if side not in _ORDER_SIDES:
            raise StreamError(f"order side {side!r} is neither Buy nor Sell", venue=VENUE)
        return _ORDER_SIDES[side]

    def order_from_payload(self, item: Mapping[str, Any]) -> Order:
        """A complete :class:`Order` from a Bybit order object (stream ``order`` item, or a row of
        ``/v5/order/realtime`` / ``/v5/order/history``).

        :raises StreamError: side, qty or status missing or unknown (never guessed).
        :raises pydantic.ValidationError: a value out of the model's bounds.
        """
        return Order.model_validate(self._order_fields(item))

    def _order_fields(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`order_from_payload`'s fields, not yet validated."""
        status = ORDER_STATUSES.get(str(item.get("orderStatus")))
        if status is None:
            raise StreamError(f"unknown orderStatus {item.get('orderStatus')!r}", venue=VENUE)
        amount = decimal_or_none(_required(item, "qty"))
        if amount is None:
            raise StreamError("order without qty", venue=VENUE)
        return {
            "venue": VENUE,
            "symbol": self._symbol(item),
            "id": str(_required(item, "orderId")),
            "client_order_id": item.get("orderLinkId") or None,
            "side": self._order_side(item),
            "type": str(item.get("orderType") or "").lower() or "market",
            "amount": amount,
            "filled": decimal_or_none(item.get("cumExecQty")) or Decimal(0),
            "average": positive_or_none(item.get("avgPrice")),
            "status": status,
            "reduce_only": bool(item.get("reduceOnly", False)),
            "trigger_price": positive_or_none(item.get("triggerPrice")),
            "timestamp": _ms(item.get("createdTime")) if item.get("createdTime") else None,
        }
