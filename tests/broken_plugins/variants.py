"""Broken variants of a real driver plugin, one known bug (docs/incidents.md) each.

``variants.<base>_broken_<bug>`` (e.g. ``bybit_broken_closure``) is a plugin object: every hookimpl of the
installed plugin ``<base>``, with one hook or one operation of the session its ``connect`` returns replaced
by a buggy version.  The entry point
``<base>-broken-<bug> = broken_plugins.variants:<base>_broken_<bug>`` makes it loadable by name, so the
contract suite runs against it exactly as it runs against a real plugin.
"""

from __future__ import annotations

import types
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt_async

from framework import hookimpl
from framework.driver import OPERATIONS
from framework.errors import PositionGone
from framework.hookspecs import PROJECT
from framework.models import Order, PositionUpdate
from framework.plugins import installed_plugins


def _closure_dropped(base: Any) -> dict[str, Any]:
    """I-1: the stream handler deletes a closed position from its cache and emits nothing."""

    def is_flat(event: Any) -> bool:
        return isinstance(event, PositionUpdate) and event.contracts == 0

    class DroppingSink:
        def __init__(self, sink: Any) -> None:
            self._sink = sink

        async def on_event(self, event):
            if not is_flat(event):
                await self._sink.on_event(event)

        def __getattr__(self, name):
            return getattr(self._sink, name)

    class DroppingDecoder:
        def __init__(self, decoder: Any) -> None:
            self._decoder = decoder

        def decode(self, raw):
            return [e for e in self._decoder.decode(raw) if not is_flat(e)]

    async def run_stream(session, sink):
        await type(session).run_stream(session, DroppingSink(sink))

    def make_decoder():
        return DroppingDecoder(base.make_decoder())

    return {"run_stream": run_stream, "make_decoder": make_decoder}


def _guessed_side(base: Any) -> dict[str, Any]:
    """I-3: a minimal response normalised without asking the venue: what the answer lacks is guessed (Bybit's
    ids-only answer), what it says is taken as final (Binance's ACK: status NEW, nothing executed)."""
    venue = base.driver_info().venue

    async def normalize_order(session, raw, intent=None):
        side = raw.get("side") or (intent.order_side if intent is not None else "buy")
        amount = Decimal(str(raw.get("amount") or (intent.contracts if intent is not None else 0)))
        filled = amount if raw.get("filled") is None else Decimal(str(raw["filled"]))
        return Order(venue=venue, symbol=raw.get("symbol") or intent.symbol, id=str(raw.get("id")),
                     client_order_id=raw.get("clientOrderId"), side=side, amount=amount, filled=filled,
                     status=raw.get("status") or "closed")

    return {"normalize_order": normalize_order}


def _ccxt_client(conn: Any) -> Any:
    for value in vars(conn).values():
        if isinstance(value, ccxt_async.Exchange):
            return value
    raise AttributeError(f"no ccxt client on {type(conn).__name__}")


def _rest_lookup_stop(base: Any) -> dict[str, Any]:
    """I-4: the stop placement first looks the position up over (lagging) REST."""

    async def set_stop_loss(session, symbol, side, contracts, trigger_price):
        positions = await _ccxt_client(session).fetch_positions([symbol])
        if not any(p.get("symbol") == symbol and p.get("contracts") for p in positions):
            raise PositionGone("No open position found", symbol=symbol)
        return await type(session).set_stop_loss(session, symbol, side, contracts, trigger_price)

    return {"set_stop_loss": set_stop_loss}


def _cancel_then_create(base: Any) -> dict[str, Any]:
    """I-5: a stop move that cancels the old stop, then creates the new one (a naked window)."""

    async def move_stop_loss(session, stop, trigger_price):
        await type(session).cancel_stop_loss(session, stop)
        return await type(session).set_stop_loss(
            session, stop.symbol, stop.side, stop.contracts or Decimal(0), trigger_price
        )

    return {"move_stop_loss": move_stop_loss}


def _unvalidated_close_side(base: Any) -> dict[str, Any]:
    """I-3: the close direction derived by comparing an unvalidated field with an order-side word."""

    async def close_position(session, symbol, side, contracts, client_order_id):
        position_side = "long" if side == "buy" else "short"  # 'long' is not 'buy': every long closes as a short
        return await type(session).close_position(session, symbol, position_side, contracts, client_order_id)

    return {"close_position": close_position}


BUGS = {
    "closure": _closure_dropped,
    "guessed_side": _guessed_side,
    "rest_lookup": _rest_lookup_stop,
    "cancel_then_create": _cancel_then_create,
    "close_side": _unvalidated_close_side,
}


def build(base_name: str, bug: str) -> types.ModuleType:
    """A plugin module: every hookimpl of ``base_name`` with ``bug``'s replacements: hooks replaced as
    hooks, session operations on each session ``connect`` returns (an instance attribute over the
    class's method, which the buggy version calls for the real work)."""
    base = installed_plugins()[base_name].load()
    plugin = types.ModuleType(f"broken_plugins.{base_name}_broken_{bug}")
    for name in dir(base):
        if hasattr(getattr(base, name), f"{PROJECT}_impl"):
            setattr(plugin, name, getattr(base, name))
    replacements = BUGS[bug](base)
    operations = {name: function for name, function in replacements.items() if name in OPERATIONS}
    if operations:

        async def connect(config):
            session = await base.connect(config)
            for name, function in operations.items():
                setattr(session, name, types.MethodType(function, session))
            return session

        replacements = {**replacements, "connect": connect}
    for name, function in replacements.items():
        if name not in OPERATIONS:
            function.__name__ = name
            setattr(plugin, name, hookimpl(function))
    return plugin


def entry_point_names(base_name: str) -> dict[str, str]:
    """``{plugin name: entry point value}`` of every variant of ``base_name``."""
    return {
        f"{base_name}-broken-{bug.replace('_', '-')}": f"broken_plugins.variants:{base_name}_broken_{bug}"
        for bug in BUGS
    }


def __getattr__(name: str) -> types.ModuleType:
    base_name, sep, bug = name.partition("_broken_")
    if not sep or bug not in BUGS:
        raise AttributeError(name)
    plugin = build(base_name, bug)
    globals()[name] = plugin
    return plugin
