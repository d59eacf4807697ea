"""The venue's triggers: a mark price move fires the conditional orders and attached stops it crosses (their
market orders filled at once) and fills the resting limit orders it reaches.  Built on
:class:`~framework.venue.orders.Orders`.
"""

from __future__ import annotations

import collections
import dataclasses
from decimal import Decimal

from framework.venue.model import (
    LIMIT,
    MARK_HISTORY_KEEP,
    MARKET,
    ORIGIN_BY_TYPE,
    MarkPriceEvent,
    OrderEvent,
    VenueOrder,
    VenuePosition,
    VenueReject,
    crossed,
    marketable,
    update_trailing,
    update_trailing_attached,
    venue_record,
)
from framework.venue.orders import Orders
from framework.venue.prices import PricePoint


class Triggers(Orders):
    """Mark prices and what they fire."""

    def set_mark_price(self, symbol: str, price: Decimal) -> None:
        """Move the mark price; fire every conditional order and attached stop it crosses and fill every
        resting limit order it reaches (at the limit price, as maker).

        :raises ValueError: ``price`` ≤ 0.
        """
        self.instrument(symbol)
        price = Decimal(price)
        if price <= 0:
            raise ValueError(f"mark price must be > 0, got {price}")
        ts = self.tick()
        self._marks[symbol] = price
        history = self._mark_history.setdefault(symbol, collections.deque(maxlen=MARK_HISTORY_KEEP))
        history.append(PricePoint(ts, price))
        for key in self._position_keys_by_symbol.get(symbol, ()):
            self._rebook(self._positions[key])
        self._outbox.append(MarkPriceEvent(symbol, price, ts))
        try:
            resting = [o for o in self._orders_by_symbol.get(symbol, ()) if o.is_open]
            for order in [o for o in resting if o.conditional]:
                if order.is_open and self._order_fires(order, price):
                    self._trigger(order)
            for order in [o for o in resting if o.type == LIMIT]:
                if order.is_open and marketable(order, price):
                    assert order.price is not None
                    self._execute_limit(order, order.price, maker=True, ts=self.tick())
            keys = self._position_keys_by_symbol.get(symbol, ())
            for position in [self._positions[key] for key in keys if self._positions[key].is_open]:
                origin = self._attached_fires(position, price)
                if origin is not None:
                    self._close_market(position.account, symbol, origin, None, self.tick())
        finally:
            self._after_change()

    def _order_fires(self, order: VenueOrder, mark: Decimal) -> bool:
        if order.type == "trailing_stop_market":
            update_trailing(order, mark)
            stop = order.trailing_stop_price
            return stop is not None and (mark <= stop if order.side == "sell" else mark >= stop)
        assert order.trigger_price is not None
        return crossed(order.type, order.side, order.trigger_price, mark)

    def _attached_fires(self, position: VenuePosition, mark: Decimal) -> str | None:
        long = position.side == "long"
        if position.stop_loss is not None and (
            mark <= position.stop_loss if long else mark >= position.stop_loss
        ):
            return "stop_loss"
        if position.take_profit is not None and (
            mark >= position.take_profit if long else mark <= position.take_profit
        ):
            return "take_profit"
        if position.trailing_stop is not None:
            update_trailing_attached(position, mark)
            best = position.trailing_best
            if best is not None and (
                mark <= best - position.trailing_stop if long else mark >= best + position.trailing_stop
            ):
                return "trailing_stop"
        return None

    def _trigger(self, order: VenueOrder) -> None:
        """A conditional order's trigger was crossed: spawn and fill its market order, or expire it."""
        ts = self.tick()
        position = self._position(order.account, order.symbol)
        reducing = order.reduce_only or order.close_position
        closing_side = {"long": "sell", "short": "buy"}.get(position.side or "")
        order.updated_ms = ts
        if reducing and order.side != closing_side:
            order.status = "expired"  # nothing (left) to reduce
            self._outbox.append(OrderEvent(dataclasses.replace(order), ts))
            return
        if reducing and self.faults.reject_triggered_stops > 0:
            self.faults.reject_triggered_stops -= 1
            order.status = "rejected"  # denied at trigger, e.g. a margin or reduce-only check (B27)
            self._outbox.append(OrderEvent(dataclasses.replace(order), ts))
            return
        amount = position.contracts if order.close_position else order.amount
        assert amount is not None
        if reducing:
            amount = min(amount, position.contracts)
        else:
            try:
                self._check_margin(
                    order.account, order.symbol, position, order.side, amount, self._marks[order.symbol]
                )
            except VenueReject:
                order.status = "expired"
                self._outbox.append(OrderEvent(dataclasses.replace(order), ts))
                return
        order.status = "triggered"
        parent_event_at = len(self._outbox)
        child = self._new_order(
            order.account,
            order.symbol,
            order.side,
            MARKET,
            amount,
            ts,
            reduce_only=reducing,
            origin=ORIGIN_BY_TYPE[order.type],
        )
        order.triggered_order_id = child.id
        self._outbox.insert(parent_event_at, OrderEvent(dataclasses.replace(order), ts))
        at_submit = position.side, position.contracts
        self._execute_market(child, ts)
        self.truth.record_order(venue_record(child, *at_submit, ts))
