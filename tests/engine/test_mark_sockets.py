"""One mark-price socket per venue (issue 17 item 5): positions that come and go are subscribed and
unsubscribed on the socket already open, never by reconnecting; past the venue's per-connection limit a
second socket opens; the venue refuses nothing.  Both venues, the emulators enforcing the same limits."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from framework.engine.broadcast import client_order_id
from framework.marksockets import WatchedSymbols, args_chars
from framework.models import MarkPrice, OrderIntent, TrailingSpec
from framework.venue import Instrument
from tests.engine.conftest import FAST, until

BTC = "BTC/USDT:USDT"


def trailing_intent(env, symbol: str, side: str = "long") -> OrderIntent:
    instrument = env.venue.instrument(symbol)
    mark = env.venue.mark_price(symbol)
    factor = Decimal("0.98") if side == "long" else Decimal("1.02")
    contracts = max(instrument.min_amount, (Decimal(20) / mark).quantize(instrument.step_size) + instrument.step_size)
    return OrderIntent(venue=env.venue_name, symbol=symbol, side=side, contracts=contracts,
                       stop_loss=(mark * factor).quantize(instrument.tick_size),
                       trailing=TrailingSpec(callback_rate=Decimal(1)), client_order_id=client_order_id("o"))


def limit_to_one_symbol(env) -> dict[str, int]:
    """Per-connection limits that hold one symbol, in the emulator and in the driver's options alike."""
    if env.venue_name == "binance":
        env.harness.emulator.market_streams_per_connection = 1
        return {"mark_streams_per_connection": 1}
    env.harness.emulator.public_args_chars = len('["tickers.XRPUSDT"]')
    return {"mark_args_chars_per_connection": len('["tickers.XRPUSDT"]')}


def venue_connections(env) -> int:
    emulator = env.harness.emulator
    return emulator.market_connections if env.venue_name == "binance" else emulator.ws_connections["public"]


def held_by_the_venue(env) -> list[set[str]]:
    """The symbols each open mark socket holds, as the emulator sees them."""
    public = [s for s in env.harness.emulator.sockets if not s.private]
    if env.venue_name == "binance":
        return [set(s.topics) for s in public if hasattr(s, "combined")]
    return [{t.split(".", 1)[1] for t in s.topics} for s in public]


def native(env, symbol: str) -> str:
    return env.venue.instrument(symbol).id if env.venue_name == "bybit" else symbol


async def test_positions_that_come_and_go_never_reconnect_the_mark_socket(env):
    await env.start(FAST)
    parts = env.parts
    await env.engine.open(trailing_intent(env, env.symbol))
    session = env.driver.session
    await until(lambda: session.mark_pool is not None and session.mark_pool.counters["connects"] == 1)
    pool = env.driver.session.mark_pool
    await env.engine.open(trailing_intent(env, BTC, "short"))
    await until(lambda: {native(env, env.symbol), native(env, BTC)} in held_by_the_venue(env))
    await env.engine.close(env.venue_name, env.symbol)
    await until(lambda: held_by_the_venue(env) == [{native(env, BTC)}])
    await env.engine.open(trailing_intent(env, env.symbol, "short"))
    await until(lambda: held_by_the_venue(env) == [{native(env, env.symbol), native(env, BTC)}])
    assert pool.counters["connects"] == 1 and venue_connections(env) == 1, pool.counters
    assert pool.counters["refused"] == 0 and pool.counters["unsubscribe_frames"] == 1
    assert parts.watched_marks is not None and parts.watched_marks.current() == {env.symbol, BTC}


async def test_past_the_per_connection_limit_a_second_socket_opens_and_nothing_is_refused(env):
    await env.start(FAST, **limit_to_one_symbol(env))
    await env.engine.open(trailing_intent(env, env.symbol))
    await until(lambda: held_by_the_venue(env) == [{native(env, env.symbol)}])
    await env.engine.open(trailing_intent(env, BTC))
    await until(lambda: sorted(map(sorted, held_by_the_venue(env))) == [[native(env, BTC)], [native(env, env.symbol)]])
    pool = env.driver.session.mark_pool
    assert pool.counters["connects"] == 2 and venue_connections(env) == 2 and pool.counters["refused"] == 0
    # both sockets deliver: the first tick of each symbol moves its stop (1 % behind, the stop was 2 %)
    await until(lambda: env.parts.trailing.moves[env.symbol] >= 1 and env.parts.trailing.moves[BTC] >= 1)


class MarkSink:
    """A StreamSink keeping the symbols whose mark price arrived."""

    def __init__(self) -> None:
        self.symbols: set[str] = set()

    async def on_event(self, event) -> None:
        if isinstance(event, MarkPrice):
            self.symbols.add(event.symbol)

    async def on_connected(self, reconnect: bool) -> None:
        return None

    async def on_disconnected(self, detail: str) -> None:
        return None

    def on_malformed(self, raw, error) -> None:
        raise AssertionError(f"malformed mark frame {raw!r}: {error}")


async def test_symbols_added_one_at_a_time_stay_within_the_venue_s_limits(env):
    """30 symbols added one after another, each waited for: 30 subscribe frames on two sockets of 15 streams.
    Binance disconnects a socket past 10 incoming messages a second (B26): the driver paces its frames;
    Bybit's limit is the characters of one connection's topics (Y20)."""
    symbols = []
    for i in range(30):
        symbol = f"M{i:03d}/USDT:USDT"
        env.venue.instruments[symbol] = Instrument(symbol, f"M{i:03d}USDT", Decimal("0.0001"), Decimal(1),
                                                   Decimal(1), 50)
        env.venue.set_mark_price(symbol, Decimal("1.0000"))
        symbols.append(symbol)
    if env.venue_name == "binance":
        env.harness.emulator.market_streams_per_connection = 15
        options = {"mark_streams_per_connection": 15}
    else:
        limit = args_chars(f"tickers.M{i:03d}USDT" for i in range(15))
        env.harness.emulator.public_args_chars = limit
        options = {"mark_args_chars_per_connection": limit}
    config = env.harness.config
    await env.driver.connect(config.model_copy(update={"options": {**config.options, **options}}))
    sink, watched = MarkSink(), WatchedSymbols()
    watcher = asyncio.create_task(env.driver.watch_mark_prices(watched, sink))
    try:
        for n, symbol in enumerate(symbols, 1):
            watched.set(symbols[:n])
            await until(lambda s=symbol: s in sink.symbols)
        pool = env.driver.session.mark_pool
        assert pool.counters["subscribe_frames"] == 30 and len(pool.connections) == 2
        assert (pool.counters["connects"], pool.counters["disconnects"], pool.counters["refused"]) == (2, 0, 0)
        assert sorted(len(t) for t in held_by_the_venue(env)) == [15, 15]
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await env.driver.disconnect()


async def test_a_dropped_mark_socket_comes_back_with_its_share_and_an_emptied_one_closes(env):
    await env.start(FAST, **limit_to_one_symbol(env))
    await env.engine.open(trailing_intent(env, env.symbol))
    await env.engine.open(trailing_intent(env, BTC, "short"))
    await until(lambda: sorted(map(sorted, held_by_the_venue(env))) == [[native(env, BTC)], [native(env, env.symbol)]])
    pool = env.driver.session.mark_pool
    for sock in [s for s in env.harness.emulator.sockets if not s.private]:
        await sock.ws.close()  # the venue drops both mark sockets
    await until(lambda: pool.counters["connects"] == 4 and
                sorted(map(sorted, held_by_the_venue(env))) == [[native(env, BTC)], [native(env, env.symbol)]])
    moves = env.parts.trailing.moves[BTC]
    mark = env.venue.mark_price(BTC)
    env.venue.set_mark_price(BTC, (mark * Decimal("0.99")).quantize(Decimal("0.1")))  # 1 % better for the short
    await until(lambda: env.parts.trailing.moves[BTC] > moves)  # its ticks flow again on the new socket
    await env.engine.close(env.venue_name, BTC)
    await until(lambda: len(pool.connections) == 1 and held_by_the_venue(env) == [{native(env, env.symbol)}])
    assert pool.counters["refused"] == 0
