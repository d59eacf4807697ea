"""Lifecycle broadcasts go through pluggy (wrappers, call monitoring), one listener at a time, so that a
listener that raises stops no other and becomes an alert."""

from __future__ import annotations

from framework import hookimpl
from framework.engine.broadcast import broadcast
from framework.plugins import new_plugin_manager, register


class Wrapper:
    def __init__(self, seen: list) -> None:
        self.seen = seen

    @hookimpl(wrapper=True)
    def on_stream_state(self, venue, state, detail):
        self.seen.append("wrapped")
        return (yield)


class Raises:
    @hookimpl
    def on_stream_state(self, venue, state, detail):
        raise RuntimeError("boom")


class Plain:
    def __init__(self, seen: list) -> None:
        self.seen = seen

    @hookimpl
    def on_stream_state(self, venue, state, detail):
        self.seen.append(f"plain {venue} {state}")
        return "plain"


class Awaited:
    def __init__(self, seen: list) -> None:
        self.seen = seen

    @hookimpl
    async def on_stream_state(self, venue, state, detail):
        self.seen.append(f"awaited {venue} {state}")
        return "awaited"

    @hookimpl
    def on_alert(self, alert):
        self.seen.append(f"alert {alert.level}: {alert.message}")


async def test_each_listener_is_called_through_pluggy_and_a_raising_one_stops_no_other():
    seen: list[str] = []
    pm = new_plugin_manager()
    for name, plugin in [("awaited", Awaited(seen)), ("raises", Raises()), ("plain", Plain(seen)),
                         ("wrapper", Wrapper(seen))]:
        register(pm, plugin, name)
    monitored: list[str] = []
    undo = pm.add_hookcall_monitoring(lambda name, impls, kwargs: monitored.append(name), lambda *args: None)
    try:
        results = await broadcast(pm, "on_stream_state", venue="bybit", state="connected", detail="")
    finally:
        undo()
    assert results == ["plain", "awaited"]  # pluggy's order: last registered first
    alert = "alert warning: listener 'raises' of on_stream_state raised: RuntimeError('boom')"
    assert seen == ["wrapped", "plain bybit connected", "wrapped", alert, "wrapped", "awaited bybit connected"]
    assert monitored.count("on_stream_state") == 3 and monitored.count("on_alert") == 1
