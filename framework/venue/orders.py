"""The venue's orders: placement (validation, market / limit execution, attached stop-loss / take-profit),
cancellation, lookup, the position's attached stops (Bybit trading-stop) and the venue's own closes (manual,
liquidation, ADL).  Built on :class:`~framework.venue.ledger.Ledger`.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from framework.venue.ledger import Ledger
from framework.venue.model import (
    LIMIT,
    MARKET,
    ORDER_TYPES,
    TIME_IN_FORCE,
    Instrument,
    OrderEvent,
    VenueOrder,
    VenuePosition,
    VenueReject,
    as_decimal,
    crossed,
    marketable,
    update_trailing,
    update_trailing_attached,
    venue_record,
)
from framework.venue.truth import OrderRecord


class Orders(Ledger):
    """Order placement, cancellation and lookup, attached stops and forced closes."""

    def place_order(
        self,
        account: str,
        symbol: str,
        side: str,
        type: str = MARKET,
        amount: Decimal | None = None,
        client_order_id: str | None = None,
        reduce_only: bool = False,
        close_position: bool = False,
        trigger_price: Decimal | None = None,
        callback_rate: Decimal | None = None,
        activation_price: Decimal | None = None,
        stop_loss: Decimal | None = None,
        take_profit: Decimal | None = None,
        price: Decimal | None = None,
        time_in_force: str | None = None,
    ) -> VenueOrder:
        """Submit an order (see the order semantics in ``docs/venue-api.md``).

        :param type: ``market``, ``limit``, ``stop_market``, ``take_profit_market`` or ``trailing_stop_market``.
        :param amount: contracts; ``None`` with ``close_position=True``.
        :param price: a ``limit`` order's price; ``time_in_force``: one of :data:`TIME_IN_FORCE` (default
            ``gtc``).  A limit order the mark has reached fills at once at the mark (taker), except
            ``post_only``, which is ``expired`` instead; one it has not reached rests (``ioc`` / ``fok``:
            ``expired``) and fills at its price (maker) when the mark reaches it.
        :param callback_rate: trailing distance in percent (0.1 … 10).
        :param stop_loss / take_profit: on a market entry, attach to the resulting position.
        :returns: a snapshot of the accepted order (``filled`` already for a market order).
        :raises VenueReject: for every refusal; the attempt is still recorded in ``venue.truth.orders``.
        """
        self._account(account)
        instrument = self.instrument(symbol)
        ts = self.tick()
        position = self._position(account, symbol)
        submitted: dict[str, Any] = dict(
            client_order_id=client_order_id,
            account=account,
            symbol=symbol,
            side=side,
            type=type,
            amount=amount,
            reduce_only=reduce_only,
            close_position=close_position,
            position_side_at_submit=position.side,
            position_contracts_at_submit=position.contracts,
            ts=ts,
            trigger_price=trigger_price,
        )
        if type == LIMIT and time_in_force is None:
            time_in_force = "gtc"
        try:
            try:
                amount = as_decimal(amount, "invalid_quantity", "amount")
                price = as_decimal(price, "invalid_price", "price")
                trigger_price = as_decimal(trigger_price, "invalid_price", "trigger_price")
                callback_rate = as_decimal(callback_rate, "invalid_price", "callback_rate")
                activation_price = as_decimal(activation_price, "invalid_price", "activation_price")
                stop_loss = as_decimal(stop_loss, "invalid_price", "stop_loss")
                take_profit = as_decimal(take_profit, "invalid_price", "take_profit")
                self._validate(
                    instrument,
                    account,
                    position,
                    side,
                    type,
                    amount,
                    client_order_id,
                    reduce_only,
                    close_position,
                    trigger_price,
                    callback_rate,
                    activation_price,
                    stop_loss,
                    take_profit,
                    price,
                    time_in_force,
                )
            except VenueReject as reject:
                self.truth.record_order(
                    OrderRecord(
                        order_id=None,
                        origin="order",
                        status="rejected",
                        reject_reason=reject.reason,
                        **submitted,
                    )
                )
                raise
            order = self._new_order(
                account,
                symbol,
                side,
                type,
                amount,
                ts,
                client_order_id=client_order_id,
                reduce_only=reduce_only,
                close_position=close_position,
                trigger_price=trigger_price,
                callback_rate=callback_rate,
                activation_price=activation_price,
                price=price,
                time_in_force=time_in_force,
            )
            if order.type == LIMIT:
                self._place_limit(order, ts)
            if order.type == "trailing_stop_market":
                update_trailing(order, self._marks[symbol])
            if type == MARKET:
                self._execute_market(order, ts)
                position = self._position(account, symbol)
                # an entry that filled nothing (its rest expired) leaves no position for the stop to attach to
                # (Bybit v5 "Place Order": takeProfit / stopLoss are set on the position the order opens)
                if (stop_loss is not None or take_profit is not None) and position.side is not None:
                    self._attach(position, stop_loss, take_profit, None, None, ts)
            self.truth.record_order(
                OrderRecord(order_id=order.id, origin="order", status=order.status, **submitted)
            )
            return dataclasses.replace(order)
        finally:
            self._after_change()

    def cancel_order(
        self,
        account: str,
        symbol: str,
        order_id: str | None = None,
        client_order_id: str | None = None,
        *,
        expire: bool = False,
    ) -> VenueOrder:
        """Cancel an open order; ``expire=True``: the venue itself ends it (status ``expired``), e.g. a
        façade modelling Binance's system cancellation of close-position stops when the position closes.

        :raises VenueReject: ``order_not_found`` when unknown, of another symbol, or no longer open.
        """
        order = self._find_order(account, symbol, order_id, client_order_id)
        if not order.is_open:
            raise VenueReject("order_not_found", f"order {order.id} is {order.status}, not open")
        ts = self.tick()
        order.status = "expired" if expire else "canceled"
        order.updated_ms = ts
        self._outbox.append(OrderEvent(dataclasses.replace(order), ts))
        self._after_change()
        return dataclasses.replace(order)

    def get_order(
        self,
        account: str,
        symbol: str | None = None,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> VenueOrder:
        """One order by id or client order id.  :raises VenueReject: ``order_not_found``."""
        return dataclasses.replace(self._find_order(account, symbol, order_id, client_order_id))

    def orders(
        self, account: str, symbol: str | None = None, open_only: bool = True, conditional: bool | None = None
    ) -> list[VenueOrder]:
        """Orders of ``account`` in id order; ``conditional`` filters by kind when not ``None``."""
        self._account(account)
        return [
            dataclasses.replace(o)
            for o in self._orders.values()
            if o.account == account
            and (symbol is None or o.symbol == symbol)
            and (not open_only or o.is_open)
            and (conditional is None or o.conditional == conditional)
        ]

    def set_trading_stop(
        self,
        account: str,
        symbol: str,
        stop_loss: Decimal | None = None,
        take_profit: Decimal | None = None,
        trailing_stop: Decimal | None = None,
        active_price: Decimal | None = None,
    ) -> VenuePosition:
        """Set, move or remove (``Decimal(0)``) the stops attached to the position (Bybit trading-stop).

        ``None`` leaves a value unchanged.  ``trailing_stop`` is a price distance (quote currency).

        :raises VenueReject: ``zero_position`` when flat; ``not_modified`` when nothing would change;
            ``would_trigger_immediately`` for a stop / take-profit already crossed by the mark price;
            ``invalid_price`` for an off-tick price.
        """
        self._account(account)
        self.instrument(symbol)
        position = self._position(account, symbol)
        if not position.is_open:
            raise VenueReject("zero_position", "can not set tp/sl/ts for zero position")
        ts = self.tick()
        try:
            stop_loss = as_decimal(stop_loss, "invalid_price", "stop_loss")
            take_profit = as_decimal(take_profit, "invalid_price", "take_profit")
            trailing_stop = as_decimal(trailing_stop, "invalid_price", "trailing_stop")
            active_price = as_decimal(active_price, "invalid_price", "active_price")
            changed = self._attach(position, stop_loss, take_profit, trailing_stop, active_price, ts)
            if not changed:
                raise VenueReject("not_modified", "not modified: the values are already set")
            return self._snapshot(position)
        finally:
            self._after_change()

    def manual_close(self, account: str, symbol: str, contracts: Decimal | None = None) -> VenueOrder:
        """Someone closes (part of) the position on the web UI: a market order with origin ``manual``.

        :raises VenueReject: ``zero_position`` when flat; ``invalid_quantity`` for a bad size.
        """
        return self._forced_close(account, symbol, "manual", contracts)

    def liquidate(self, account: str, symbol: str) -> VenueOrder:
        """The venue liquidates the whole position at the mark price.

        :raises VenueReject: ``zero_position``.
        """
        return self._forced_close(account, symbol, "liquidation", None)

    def adl(self, account: str, symbol: str) -> VenueOrder:
        """Auto-deleveraging closes the whole position.  :raises VenueReject: ``zero_position``."""
        return self._forced_close(account, symbol, "adl", None)

    def _find_order(
        self, account: str, symbol: str | None, order_id: str | None, client_order_id: str | None
    ) -> VenueOrder:
        self._account(account)
        if order_id is None and client_order_id is None:
            raise VenueReject("invalid_order", "order_id or client_order_id is required")
        for order in reversed(self._orders.values()):  # a reused client id names its newest order
            if (
                order.account == account
                and (symbol is None or order.symbol == symbol)
                and (order_id is None or order.id == str(order_id))
                and (client_order_id is None or order.client_order_id == client_order_id)
            ):
                return order
        raise VenueReject("order_not_found", f"order {order_id or client_order_id} does not exist")

    def _validate(
        self,
        instrument: Instrument,
        account: str,
        position: VenuePosition,
        side: str,
        type: str,
        amount: Decimal | None,
        client_order_id: str | None,
        reduce_only: bool,
        close_position: bool,
        trigger_price: Decimal | None,
        callback_rate: Decimal | None,
        activation_price: Decimal | None,
        stop_loss: Decimal | None,
        take_profit: Decimal | None,
        price: Decimal | None = None,
        time_in_force: str | None = None,
    ) -> None:
        if self.faults.reject_next_orders > 0:
            self.faults.reject_next_orders -= 1
            raise VenueReject("rejected", "order rejected by the venue (fault injection)")
        if side not in ("buy", "sell"):
            raise VenueReject("invalid_order", f"side must be buy or sell, got {side!r}")
        if type not in ORDER_TYPES:
            raise VenueReject(
                "invalid_order", f"order type {type!r} not supported; use one of {sorted(ORDER_TYPES)}"
            )
        duplicate_refused = not self.faults.accept_duplicate_client_ids
        if duplicate_refused and client_order_id is not None and client_order_id in self._client_ids[account] and (
            self.client_id_scope == "all"
            or any(o.is_open and o.account == account and o.client_order_id == client_order_id
                   for o in self._orders.values())
        ):
            raise VenueReject(
                "duplicate_client_order_id", f"client order id {client_order_id!r} already used"
            )
        mark = self._marks.get(instrument.symbol)
        if mark is None:
            raise VenueReject("invalid_order", f"{instrument.symbol} has no mark price yet")
        if close_position:
            if type not in ("stop_market", "take_profit_market"):
                raise VenueReject(
                    "invalid_order", "close_position is only for stop_market / take_profit_market"
                )
            if amount is not None:
                raise VenueReject("invalid_order", "a close_position order carries no amount")
        else:
            instrument.check_amount(amount)
        if (price is not None or time_in_force is not None) and type != LIMIT:
            raise VenueReject("invalid_order", "price / time_in_force are for a limit order")
        if type in (MARKET, LIMIT):
            if trigger_price is not None or callback_rate is not None or activation_price is not None:
                raise VenueReject("invalid_order", f"a {type} order takes no trigger_price / callback_rate")
            if type == LIMIT:
                if price is None:
                    raise VenueReject("invalid_price", "a limit order needs a price")
                instrument.check_price(price)
                if time_in_force not in TIME_IN_FORCE:
                    raise VenueReject(
                        "invalid_order", f"time_in_force {time_in_force!r} not one of {sorted(TIME_IN_FORCE)}"
                    )
        elif type == "trailing_stop_market":
            if callback_rate is None or not Decimal("0.1") <= callback_rate <= 10:
                raise VenueReject(
                    "invalid_price", f"callback_rate {callback_rate} must be within 0.1 … 10 (%)"
                )
            if activation_price is not None:
                instrument.check_price(activation_price, "activation_price")
                if (side == "sell" and activation_price <= mark) or (
                    side == "buy" and activation_price >= mark
                ):
                    raise VenueReject(
                        "would_trigger_immediately",
                        f"activation_price {activation_price} already reached by mark {mark}",
                    )
        else:
            if trigger_price is None:
                raise VenueReject("invalid_price", f"{type} needs a trigger_price")
            instrument.check_price(trigger_price, "trigger_price")
            if crossed(type, side, trigger_price, mark):
                raise VenueReject(
                    "would_trigger_immediately",
                    f"order would immediately trigger: {side} {type} at {trigger_price}, mark {mark}",
                )
        if stop_loss is not None or take_profit is not None:
            if type != MARKET or reduce_only:
                raise VenueReject("invalid_order", "stop_loss / take_profit attach only to a market entry")
            new_side = "long" if side == "buy" else "short"
            if position.is_open and position.side != new_side:
                raise VenueReject(
                    "invalid_order", "stop_loss / take_profit attach only to an entry, not a reduce"
                )
            self._check_attached(instrument, new_side, mark, stop_loss, take_profit)
        if type in (MARKET, LIMIT):
            opposite = position.is_open and position.side != ("long" if side == "buy" else "short")
            if reduce_only and not opposite:
                raise VenueReject("reduce_only_rejected", "reduce-only order rejected: no position to reduce")
            if not reduce_only:  # a limit order's margin at its own price (assumed: not reserved while it rests)
                cost = mark if type == MARKET or price is None else price
                self._check_margin(account, instrument.symbol, position, side, amount, cost)

    def _check_attached(
        self,
        instrument: Instrument,
        position_side: str,
        mark: Decimal,
        stop_loss: Decimal | None,
        take_profit: Decimal | None,
    ) -> None:
        long = position_side == "long"
        if stop_loss:
            instrument.check_price(stop_loss, "stop_loss")
            if (long and stop_loss >= mark) or (not long and stop_loss <= mark):
                raise VenueReject(
                    "would_trigger_immediately",
                    f"stop_loss {stop_loss} for a {position_side} must be "
                    f"{'below' if long else 'above'} mark {mark}",
                )
        if take_profit:
            instrument.check_price(take_profit, "take_profit")
            if (long and take_profit <= mark) or (not long and take_profit >= mark):
                raise VenueReject(
                    "would_trigger_immediately",
                    f"take_profit {take_profit} for a {position_side} must be "
                    f"{'above' if long else 'below'} mark {mark}",
                )

    def _new_order(
        self,
        account: str,
        symbol: str,
        side: str,
        type: str,
        amount: Decimal | None,
        ts: int,
        client_order_id: str | None = None,
        **fields: object,
    ) -> VenueOrder:
        order = VenueOrder(
            id=str(self._next_order_id),
            client_order_id=client_order_id,
            account=account,
            symbol=symbol,
            side=side,
            type=type,
            amount=amount,
            created_ms=ts,
            updated_ms=ts,
            **fields,  # type: ignore[arg-type]
        )
        self._next_order_id += 1
        self._orders[order.id] = order
        self._orders_by_symbol.setdefault(symbol, []).append(order)
        if order.client_order_id is not None:
            self._client_ids[account].add(order.client_order_id)
        self._outbox.append(OrderEvent(dataclasses.replace(order), ts))
        return order

    def _execute_market(self, order: VenueOrder, ts: int) -> None:
        """Fill a market order at the mark price (capped at the position for reduce-only).

        A client's market order (origin ``order``) meets the book the fault knobs describe: it fills in
        ``faults.market_fill_parts`` executions, and only ``faults.market_fill_ratio`` of it fills, the rest
        ``expired`` (Binance price protection / thin book; Bybit's IOC remainder cancelled).
        """
        position = self._position(order.account, order.symbol)
        amount = order.amount
        assert amount is not None
        if order.reduce_only:
            amount = min(amount, position.contracts)
        parts = [amount]
        if order.origin == "order" and amount > 0:
            step = self.instruments[order.symbol].step_size
            fillable = amount if self.faults.market_fill_ratio >= 1 else (
                amount * Decimal(str(self.faults.market_fill_ratio)) // step * step)
            count = self.faults.market_fill_parts
            share = fillable / count // step * step
            parts = [p for p in [share] * (count - 1) + [fillable - share * (count - 1)] if p > 0]
        for i, part in enumerate(parts):
            self._fill(order, part, self._marks[order.symbol], ts, final=i == len(parts) - 1 and sum(parts) == amount)
        if sum(parts) < amount:
            self._end(order, "expired", ts)

    def _place_limit(self, order: VenueOrder, ts: int) -> None:
        """A new limit order: take at the mark when it is marketable (post-only: expire instead), else rest
        (IOC / FOK: expire)."""
        if marketable(order, self._marks[order.symbol]):
            if order.time_in_force == "post_only":
                self._end(order, "expired", ts)  # it would take liquidity
            else:
                self._execute_limit(order, self._marks[order.symbol], maker=False, ts=ts)
        elif order.time_in_force in ("ioc", "fok"):
            self._end(order, "expired", ts)

    def _execute_limit(self, order: VenueOrder, price: Decimal, maker: bool, ts: int) -> None:
        """Fill a limit order whole at ``price``; a reduce-only one is capped at the position and expires
        when there is nothing (left) on its closing side to reduce."""
        position = self._position(order.account, order.symbol)
        amount = order.amount
        assert amount is not None
        if order.reduce_only:
            closing_side = {"long": "sell", "short": "buy"}.get(position.side or "")
            if order.side != closing_side:
                self._end(order, "expired", ts)
                return
            amount = min(amount, position.contracts)
        self._fill(order, amount, price, ts, maker=maker)

    def _end(self, order: VenueOrder, status: str, ts: int) -> None:
        order.status = status
        order.updated_ms = ts
        self._outbox.append(OrderEvent(dataclasses.replace(order), ts))

    def _attach(
        self,
        position: VenuePosition,
        stop_loss: Decimal | None,
        take_profit: Decimal | None,
        trailing_stop: Decimal | None,
        active_price: Decimal | None,
        ts: int,
    ) -> bool:
        """Apply attached-stop changes (``0`` removes); returns whether anything changed."""
        instrument = self.instrument(position.symbol)
        mark = self._marks[position.symbol]
        assert position.side is not None
        self._check_attached(instrument, position.side, mark, stop_loss, take_profit)
        if trailing_stop:
            if trailing_stop < 0 or trailing_stop % instrument.tick_size != 0:
                raise VenueReject(
                    "invalid_price", f"trailing_stop {trailing_stop} must be a multiple of the tick"
                )
            if active_price:
                instrument.check_price(active_price, "active_price")

        def value(given: Decimal | None, current: Decimal | None) -> Decimal | None:
            if given is None:
                return current
            return None if given == 0 else Decimal(given)

        new_sl = value(stop_loss, position.stop_loss)
        new_tp = value(take_profit, position.take_profit)
        new_ts = value(trailing_stop, position.trailing_stop)
        new_active = value(active_price, position.trailing_active_price) if new_ts is not None else None
        if (new_sl, new_tp, new_ts, new_active) == (
            position.stop_loss,
            position.take_profit,
            position.trailing_stop,
            position.trailing_active_price,
        ):
            return False
        if (new_ts, new_active) != (position.trailing_stop, position.trailing_active_price):
            position.trailing_best = None
        position.stop_loss, position.take_profit = new_sl, new_tp
        position.trailing_stop, position.trailing_active_price = new_ts, new_active
        if new_ts is not None:
            update_trailing_attached(position, mark)
        self._position_changed(position, ts)
        return True

    def _close_market(
        self, account: str, symbol: str, origin: str, contracts: Decimal | None, ts: int
    ) -> VenueOrder:
        position = self._position(account, symbol)
        assert position.side is not None
        amount = position.contracts if contracts is None else min(contracts, position.contracts)
        side = "sell" if position.side == "long" else "buy"
        order = self._new_order(account, symbol, side, MARKET, amount, ts, reduce_only=True, origin=origin)
        at_submit = position.side, position.contracts
        self._execute_market(order, ts)
        self.truth.record_order(venue_record(order, *at_submit, ts))
        return order

    def _forced_close(self, account: str, symbol: str, origin: str, contracts: Decimal | None) -> VenueOrder:
        self._account(account)
        instrument = self.instrument(symbol)
        position = self._position(account, symbol)
        if not position.is_open:
            raise VenueReject("zero_position", f"no {symbol} position to close")
        contracts = as_decimal(contracts, "invalid_quantity", "contracts")
        if contracts is not None:
            instrument.check_amount(contracts)
        try:
            return dataclasses.replace(self._close_market(account, symbol, origin, contracts, self.tick()))
        finally:
            self._after_change()
