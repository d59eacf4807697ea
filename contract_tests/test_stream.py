"""Contract 8: the private stream survives disconnects, listen-key expiry, bad credentials and malformed
frames — each is reported (``on_stream_state`` / ``sink.on_malformed``), recovered, and nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import pytest
from pydantic import SecretStr

from contract_tests.support import CLOSE_BOUND_S, CONNECT_BOUND_S, Journal
from framework.driver import Driver
from framework.errors import StreamError, VenueError
from framework.marksockets import WatchedSymbols
from framework.models import MarkPrice

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.hooks("venue_harness", "connect", "disconnect", "run_stream", "on_stream_state")
async def test_stream_connects_and_reports_it(contract):
    connected = contract.journal.stream_states("connected")
    if not connected or connected[0][0] != contract.driver.venue:
        contract.fail(f"private stream connected but on_stream_state('connected') was not fired for venue "
                      f"{contract.driver.venue!r}: {contract.journal.stream_states()!r}")
    await contract.barrier()


@pytest.mark.hooks("run_stream", "on_stream_state", "on_position_closed")
async def test_disconnect_is_reported_recovered_and_loses_nothing(contract):
    disconnect_streams = contract.require_emulator("disconnect_streams")
    await contract.open("long")
    await disconnect_streams()
    # The position closes while the socket is down: its frame goes nowhere; the reconnect must catch up.
    contract.require_venue().manual_close(contract.account, contract.symbol)
    reported = await contract.journal.wait_for(
        lambda: bool(contract.journal.stream_states("disconnected")) and True in contract.journal.connects,
        CONNECT_BOUND_S,
    )
    if not reported:
        contract.fail(f"private stream dropped by the venue at {contract.t()}; within {CONNECT_BOUND_S} s "
                      f"sink.on_disconnected called: {bool(contract.journal.disconnects)}, "
                      f"sink.on_connected(reconnect=True) called: {True in contract.journal.connects}")
    await contract.expect_one_closure("manual close while the stream was down", require_flat_frame=False)


@pytest.mark.hooks("run_stream", "on_stream_state", "on_position_closed")
async def test_listen_key_expiry_is_recovered(contract):
    expire_listen_keys = contract.require_emulator("expire_listen_keys")
    await contract.open("long")
    expire_listen_keys()
    recovered = await contract.journal.wait_for(lambda: True in contract.journal.connects, CONNECT_BOUND_S)
    if not recovered:
        contract.fail(f"the venue expired the listen key at {contract.t()}; run_stream did not renew it and "
                      f"reconnect (sink.on_connected(reconnect=True)) within {CONNECT_BOUND_S} s")
    contract.require_venue().manual_close(contract.account, contract.symbol)
    await contract.expect_one_closure("manual close after the listen key expired")


class _JournalSink:
    """A sink that only records (the bad-credential stream must deliver nothing to a book)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def on_event(self, event):
        self.journal.events.append(event)
        self.journal.note()

    async def on_connected(self, reconnect):
        self.journal.connects.append(reconnect)
        self.journal.note()

    async def on_disconnected(self, detail):
        self.journal.disconnects.append(detail)
        self.journal.note()

    def on_malformed(self, raw, error):
        self.journal.malformed.append((raw, error))
        self.journal.note()


@pytest.mark.hooks("connect", "run_stream")
async def test_bad_credentials_are_reported_without_the_secret(contract):
    wrong_secret = "wrong-" + "9" * 40
    config = contract.harness.config.model_copy(update={"api_secret": SecretStr(wrong_secret)})
    driver = Driver(contract.pm, contract.plugin)
    journal = Journal()
    stream = None
    try:
        try:
            await driver.connect(config)
        except VenueError as exc:
            if wrong_secret in str(exc) or wrong_secret in repr(exc):
                contract.fail("connect with a wrong secret raised an error that contains the secret")
            return  # refused at connect: reported
        stream = asyncio.ensure_future(driver.run_stream(_JournalSink(journal)))
        done = await journal.wait_for(lambda: bool(journal.disconnects) or stream.done(), CONNECT_BOUND_S)
        if journal.connects:
            contract.fail("run_stream with a wrong API secret called sink.on_connected: the venue's auth "
                          "refusal was not noticed")
        if not done:
            contract.fail(f"run_stream with a wrong API secret neither raised nor called sink.on_disconnected "
                          f"within {CONNECT_BOUND_S} s: an auth failure must be reported")
        if stream.done() and not stream.cancelled():
            error = stream.exception()
            if error is not None and not isinstance(error, (StreamError, VenueError)):
                contract.fail(f"run_stream with a wrong API secret raised {error!r}; expected a StreamError")
            if error is not None and wrong_secret in f"{error} {error!r}":
                contract.fail("run_stream's auth error contains the secret")
        if any(wrong_secret in detail for detail in journal.disconnects):
            contract.fail("sink.on_disconnected detail contains the API secret")
    finally:
        if stream is not None:
            stream.cancel()
            with contextlib.suppress(BaseException):
                await stream
        await driver.disconnect()


@pytest.mark.hooks("run_stream", "on_stream_state")
async def test_malformed_frame_is_reported_and_the_stream_goes_on(contract):
    inject = contract.require_emulator("inject_private_frame")
    await contract.open("long")
    await inject('{"topic": "position", "data": [{"symbol": ')
    reported = await contract.journal.wait_for(lambda: bool(contract.journal.malformed), CLOSE_BOUND_S)
    if not reported:
        contract.fail(f"a malformed private frame was sent at {contract.t()}; sink.on_malformed not called within "
                      f"{CLOSE_BOUND_S} s")
    fired = await contract.journal.wait_for(lambda: bool(contract.journal.stream_states("malformed_frame")),
                                            CLOSE_BOUND_S)
    if not fired:
        contract.fail("sink.on_malformed was called but on_stream_state('malformed_frame') never fired")
    contract.require_venue().manual_close(contract.account, contract.symbol, Decimal(5))
    delivered = await contract.wait_stream_position(Decimal(15))
    if not delivered:
        contract.fail("after a malformed frame the stream stopped delivering updates (20 -> 15 contracts lost)")


@pytest.mark.hooks("make_decoder")
@pytest.mark.parametrize("frame", ["{not json", b"\xff\xfe\x00", "[1, 2, 3]", '{"e": "ACCOUNT_UPDATE", "a": 7}',
                                   '{"topic": "position", "data": "nope"}'])
async def test_decoder_raises_stream_error_on_malformed_frames(contract, frame):
    decoder = contract.driver.make_decoder()
    try:
        events = decoder.decode(frame)
    except StreamError:
        return
    except Exception as exc:
        contract.fail(f"make_decoder().decode({frame!r}) raised {exc!r}; a malformed frame must raise StreamError")
    if events:
        contract.fail(f"make_decoder().decode({frame!r}) invented events from a malformed frame: {events!r}")


@pytest.mark.hooks("watch_mark_prices")
async def test_mark_prices_are_streamed(contract):
    journal = Journal()
    watch = asyncio.ensure_future(contract.driver.watch_mark_prices([contract.symbol], _JournalSink(journal)))
    try:
        # The venue moves the mark until a tick arrives with the price it set (subscription may lag the first).
        for step in range(1, 6):
            target = contract.price_at(Decimal(step) / 10, up=True)
            contract.move_mark(target)
            seen = await journal.wait_for(
                lambda t=target: any(isinstance(e, MarkPrice) and e.symbol == contract.symbol and e.price == t
                                     for e in journal.events) or watch.done(), CLOSE_BOUND_S / 2)
            if watch.done():
                contract.fail(f"watch_mark_prices ended: {watch.exception() if not watch.cancelled() else 'cancelled'}")
            if seen:
                return
        contract.fail(f"the venue moved the mark price 5 times; watch_mark_prices delivered no matching MarkPrice "
                      f"(got {[e for e in journal.events][-3:]!r})")
    finally:
        watch.cancel()
        with contextlib.suppress(BaseException):
            await watch


@pytest.mark.hooks("watch_mark_prices")
async def test_mark_prices_follow_a_changing_symbol_set(contract):
    """``symbols`` may be a :class:`~framework.marksockets.WatchedSymbols` that changes while the watch runs (the
    engine adds and removes symbols as trailing positions come and go): a symbol added gets ticks without the
    watch being restarted, and a symbol removed gets none after it."""
    venue = contract.require_venue()
    other = next((s for s in venue.instruments if s != contract.symbol), None)
    if other is None:
        pytest.skip("the harness venue lists one symbol only")
    journal = Journal()
    watched = WatchedSymbols([contract.symbol])
    watch = asyncio.ensure_future(contract.driver.watch_mark_prices(watched, _JournalSink(journal)))

    async def tick_of(symbol: str) -> bool:
        for step in range(1, 6):  # the venue moves the mark until a tick of that price arrives
            target = contract.price_at(Decimal(step) / 10, symbol, up=True)
            contract.move_mark(target, symbol)
            if await journal.wait_for(
                lambda t=target: any(isinstance(e, MarkPrice) and e.symbol == symbol and e.price == t
                                     for e in journal.events) or watch.done(), CLOSE_BOUND_S / 2):
                break
        if watch.done():
            contract.fail(f"watch_mark_prices ended: {watch.exception() if not watch.cancelled() else 'cancelled'}")
        return any(isinstance(e, MarkPrice) and e.symbol == symbol for e in journal.events)

    try:
        if not await tick_of(contract.symbol):
            contract.fail("watch_mark_prices delivered no tick of the one symbol watched")
        watched.set([contract.symbol, other])
        if not await tick_of(other):
            contract.fail(f"{other} was added to the watched symbols; watch_mark_prices delivered none of its ticks")
        watched.set([other])
        if not await tick_of(other):
            contract.fail(f"after {contract.symbol} was removed, {other}'s ticks stopped")
        late: list[MarkPrice] = []
        for _ in range(5):  # the unsubscription may take a moment: one round in five must pass quiet
            barrier = len(journal.events)
            contract.move_mark(contract.price_at(1, up=False))
            await tick_of(other)  # a later tick of the symbol still watched: the removed one had its chance
            late = [e for e in journal.events[barrier:] if isinstance(e, MarkPrice) and e.symbol == contract.symbol]
            if not late:
                break
        if late:
            contract.fail(f"{contract.symbol} was removed from the watched symbols, yet its ticks kept coming: "
                          f"{late[:3]!r}")
    finally:
        watch.cancel()
        with contextlib.suppress(BaseException):
            await watch
