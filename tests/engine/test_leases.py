"""Leases (issue 19): one owner per (venue, account), a standby that takes over, fencing by epoch.

Two engines on one database and one emulated venue stand for two instances; "killing" the owner is
cancelling its heartbeat and letting its lease run out in the database, exactly what a standby sees of a
``kill -9`` (the multi-process test with real SIGKILL / SIGSTOP is tests/app/test_takeover.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal
from urllib.parse import parse_qsl

import aiohttp
import pytest

from framework.driver import Driver
from framework.driverkit import fence_requests
from framework.engine import Engine
from framework.engine.closing import close_on_venue
from framework.engine.lease import ACTING_METHODS, READING_METHODS, LeaseKeeper
from framework.errors import LeaseLost, OrderRejected, PositionGone, RequestExpired, RequestFenced
from framework.models import PositionEvent, TrailingSpec
from framework.store import Store
from framework.store import leases as rows
from framework.store.leases import is_fenced
from tests.engine.conftest import FAST

LEASE_S = 5.0


def opened(venue: str, account: str = "default", symbol: str = "XRP/USDT:USDT") -> PositionEvent:
    return PositionEvent(event="opened", account=account, venue=venue, symbol=symbol, side="short",
                         contracts=Decimal(5), entry_price=Decimal("0.5"), reason="engine", timestamp=1,
                         source="engine")


async def let_go(*stores: Store) -> None:
    """Give back the hot-path connections of Store objects sharing the fixture's pool (in a real deployment
    each instance has a pool of its own), so the fixture can close the pool."""
    for store in stores:
        await store._drop_hot()


async def expire(store: Store, venue: str, account: str = "default") -> None:
    """What the database sees when the owner is gone: nobody renews, the lease runs out."""
    await store.pool.execute("UPDATE leases SET expires_at = now() WHERE venue = $1 AND account = $2", venue, account)


def test_every_driver_method_is_either_acting_or_reading():
    """A new driver method must be classified: an acting one unchecked would let a stale owner act."""
    public = {name for name in dir(Driver) if not name.startswith("_")}
    assert public <= ACTING_METHODS | READING_METHODS, public - ACTING_METHODS - READING_METHODS
    assert not ACTING_METHODS & READING_METHODS


async def test_one_of_several_instances_acquiring_at_once_gets_the_lease(store):
    epochs = await asyncio.gather(*(rows.acquire(store.pool, "bybit", "default", f"i{n}", LEASE_S) for n in range(6)))
    assert sorted(e for e in epochs if e is not None) == [1]
    assert await rows.acquire(store.pool, "bybit", "other", "i0", LEASE_S) == 1  # another account: its own lease


async def test_the_epoch_grows_at_each_change_of_owner_and_only_then(store):
    assert await rows.acquire(store.pool, "binance", "default", "a", LEASE_S) == 1
    assert await rows.acquire(store.pool, "binance", "default", "a", LEASE_S) == 1  # repeated: same epoch
    assert await rows.acquire(store.pool, "binance", "default", "b", LEASE_S) is None  # held by a
    assert await rows.renew(store.pool, "binance", "default", "a", 1, LEASE_S)
    await expire(store, "binance")
    assert not await rows.renew(store.pool, "binance", "default", "a", 1, LEASE_S)  # expired: not renewable
    assert await rows.acquire(store.pool, "binance", "default", "b", LEASE_S) == 2
    assert not await rows.renew(store.pool, "binance", "default", "a", 1, LEASE_S)
    assert await rows.release(store.pool, "binance", "default", "b", 2)
    assert await rows.acquire(store.pool, "binance", "default", "a", LEASE_S) == 3  # a restart: a new epoch


async def test_the_database_refuses_every_write_of_a_stale_epoch(store):
    old, new = Store(store.pool), Store(store.pool)  # two instances on one database
    try:
        await refused_writes(store, old, new)
    finally:
        await let_go(old, new)


async def refused_writes(store: Store, old: Store, new: Store) -> None:
    old.fence("default", "bybit", await rows.acquire(store.pool, "bybit", "default", "old", LEASE_S))
    await old.open_position(opened("bybit"))
    await expire(store, "bybit")
    new.fence("default", "bybit", await rows.acquire(store.pool, "bybit", "default", "new", LEASE_S))
    writes = {
        "journal": old.append_event("default", "bybit", "note", {"x": 1}),
        "update": old.update_position("default", "bybit", "XRP/USDT:USDT", contracts=Decimal(3)),
        "close": old.close_position(opened("bybit").model_copy(update={"event": "closed", "timestamp": 2})),
        "open elsewhere": old.open_position(opened("bybit", symbol="BTC/USDT:USDT")),
    }
    for what, write in writes.items():
        with pytest.raises(Exception) as refused:
            await write
        assert is_fenced(refused.value), (what, refused.value)
    [row] = await store.open_positions("default", "bybit")
    assert row.contracts == 5 and row.epoch == 1  # nothing of the old owner's got through
    assert [e.kind for e in await store.events()] == ["opened"]
    assert await new.update_position("default", "bybit", "XRP/USDT:USDT", contracts=Decimal(3))  # the owner writes
    assert (await store.position(row.id)).epoch == 2
    await store.append_event("default", "binance", "note", {})  # an account nobody leases is not fenced


async def test_a_lease_keeper_may_act_only_while_its_lease_is_locally_valid(store):
    now = [100.0]
    keeper = LeaseKeeper(store, "bybit", "default", "me", LEASE_S, clock=lambda: now[0])
    with pytest.raises(LeaseLost, match="standby"):
        keeper.check()
    assert await keeper.try_acquire() and keeper.epoch == 1 and store.epoch("default", "bybit") == 1
    keeper.check()
    now[0] += LEASE_S - keeper.margin_s  # a paused process resumes: its clock has moved on, the lease has not
    with pytest.raises(LeaseLost):
        keeper.check()


async def test_a_request_is_admitted_only_if_its_receive_window_ends_before_the_lease_does(store):
    """The transport's fence: signed now, a request stays acceptable to the venue for the receive window
    plus the clock skew allowed (``margin_s``); it is sent only if that ends before the lease's local end."""
    now = [100.0]
    keeper = LeaseKeeper(store, "binance", "default", "me", LEASE_S, clock=lambda: now[0])
    assert keeper.margin_s == 2.0 and keeper.skew_s == 1.0 and keeper.recv_window_ms == 1000  # of a 5 s lease
    with pytest.raises(RequestFenced, match="standby"):
        keeper.admit()
    assert await keeper.try_acquire()
    keeper.admit()
    now[0] = keeper.valid_until - keeper.margin_s - 0.001  # the window + skew ends 1 ms before the lease
    keeper.admit()
    now[0] += 0.002  # it would end 1 ms after
    with pytest.raises(RequestFenced) as fenced:
        keeper.admit()
    # not sent: "did nothing" (a refusal, never "position gone"), and the lease is the reason
    assert isinstance(fenced.value, OrderRejected) and isinstance(fenced.value, LeaseLost)
    assert not isinstance(fenced.value, PositionGone)
    with pytest.raises(ValueError, match="receive window"):
        LeaseKeeper(store, "binance", "default", "me", 3.0)  # 1.2 s of margin less 1 s of skew: too little


@contextlib.asynccontextmanager
async def two_instances(env):
    """Engines A (started first: owner) and B (standby) on one venue account, each with its own driver
    connection and its own Store object (its own epoch) over the test's database."""
    config = env.harness.config
    engines = []
    try:
        for owner, driver in (("A", env.driver), ("B", Driver(env.pm, env.venue_name))):
            engine = Engine(env.pm, Store(env.store.pool), {env.venue_name: driver}, {env.venue_name: config},
                            FAST, owner=owner, lease_s=LEASE_S)
            engines.append(engine)
            await engine.start()
        yield engines
    finally:
        for engine in engines:
            await engine.stop()
        await let_go(*(engine.store for engine in engines))


def alerts(env, words: str) -> list:
    return [a for a in env.recorder.seen["on_alert"] if words in a.message]


@pytest.mark.parametrize("side", ["long", "short"])
async def test_a_standby_takes_over_a_dead_owner_at_once_and_the_old_owner_cannot_act(env, side):
    async with two_instances(env) as (a, b):
        assert env.venue_name in a.venues and env.venue_name not in b.venues
        assert a.lease_state(env.venue_name)["state"] == "owner"
        assert b.lease_state(env.venue_name)["state"] == "standby"
        assert alerts(env, "standby for account default (owner A, epoch 1)")
        with pytest.raises(LeaseLost, match="standby"):
            b.venue(env.venue_name)
        intent = env.intent(side=side, trailing=TrailingSpec(callback_rate=Decimal("0.5")))
        await a.open(intent)
        # A dies: its heartbeat stops (kill -9); the database lets the lease run out.
        a._holders.pop(env.venue_name).cancel()
        await expire(env.store, env.venue_name)
        await env.recorder.wait_for(lambda r: alerts(env, "took over account default (epoch 2)"), 15)
        parts = b.venue(env.venue_name)
        held = parts.book.get(env.symbol)
        assert held is not None and held.side == side and held.contracts == intent.contracts
        assert held.trailing == intent.trailing  # trailing resumes from the persisted spec and stop
        assert held.stop is not None and env.venue.is_protected("default", env.symbol)
        assert b.takeovers[env.venue_name] == 1
        assert len(env.recorder.opened(env.symbol)) == 1  # the takeover adopted A's row: no second open
        # A, resumed after its lease expired: no venue action, no database write.
        a.leases[env.venue_name].clock = lambda: float("inf")
        a_parts = a.venue(env.venue_name)
        orders_before = len(env.venue.truth.orders)
        with pytest.raises(Exception) as refused:  # its close order's intent is refused first, by the database
            await close_on_venue(a_parts.book, a_parts.driver, a.store, a.pm, env.symbol)
        assert is_fenced(refused.value) or isinstance(refused.value, LeaseLost), refused.value
        with pytest.raises(LeaseLost):
            await a_parts.protector.driver.move_stop_loss(held.stop, held.stop.trigger_price)
        assert len(env.venue.truth.orders) == orders_before
        with pytest.raises(Exception) as refused:
            await a.store.append_event("default", env.venue_name, "note", {})
        assert is_fenced(refused.value)
        writes = a_parts.book.writes  # through the write-behind queue: dropped, counted, never replayed
        assert not await writes.write("note", lambda: a.store.append_event("default", env.venue_name, "note", {}))
        assert writes.pending == 0 and writes.fenced == 1
        assert alerts(env, "database refused a write from a stale lease epoch")
        assert env.venue.position("default", env.symbol).contracts == intent.contracts
        # B acts: its close goes through, once.
        assert await b.close(env.venue_name, env.symbol)
        assert env.venue.position("default", env.symbol).contracts == 0
        assert await env.store.open_positions("default", env.venue_name) == []


async def test_an_owner_that_loses_its_lease_stops_acting_and_says_so(env):
    async with two_instances(env) as (a, b):
        intent = env.intent(side="short")
        await a.open(intent)
        # Another instance holds the lease now (B's heartbeat-less twin, say): A's next renewal fails.
        b._holders.pop(env.venue_name).cancel()
        await env.store.pool.execute("UPDATE leases SET owner = 'C', epoch = epoch + 1, expires_at = now() + "
                                     "interval '1 hour' WHERE venue = $1", env.venue_name)
        await env.recorder.wait_for(lambda r: alerts(env, "lease of account default lost"), 15)
        assert env.venue_name not in a.venues and a.lease_state(env.venue_name)["state"] == "standby"
        [lost] = alerts(env, "lease of account default lost")
        assert lost.level == "critical" and "venue-side stops" in lost.message
        assert env.venue.is_protected("default", env.symbol)  # the position keeps its venue-side stop


async def test_a_new_emulators_previous_rows_are_closed_at_start_not_adopted(env):
    """A killed emulated run left a row open; the next run's emulator starts empty: the row is closed at
    once (reason reconcile), not held in the book until the orphan grace runs out."""
    await env.store.open_position(opened(env.venue_name, symbol=env.symbol))
    engine = env.engine = Engine(env.pm, env.store, {env.venue_name: env.driver},
                                 {env.venue_name: env.harness.config}, FAST, lease_s=LEASE_S,
                                 empty_at_start={env.venue_name})
    await engine.start()
    assert engine.venue(env.venue_name).book.positions() == {}
    assert await env.store.open_positions("default", env.venue_name) == []
    [row] = await env.store.pool.fetch("SELECT close_reason, epoch FROM positions")
    assert row["close_reason"] == "reconcile" and row["epoch"] == 1  # closed by the lease holder


async def test_fence_requests_bounds_the_receive_window_and_checks_every_request_that_can_change_the_account():
    """The driverkit helper a plugin applies to its ccxt client: the window it signs with is at most the
    fence's, and every request but a read asks the fence after signing (the fetch that follows sign)."""

    class Client:  # the two things of a ccxt client the helper uses
        def __init__(self, window: int | None) -> None:
            self.options = {} if window is None else {"recvWindow": window}
            self.sent: list[str] = []

        async def fetch(self, url, method="GET", headers=None, body=None):
            self.sent.append(method)
            return {}

    class Fence:
        recv_window_ms = 1000
        holds = True

        def admit(self) -> None:
            if not self.holds:
                raise RequestFenced("not sent", venue="x")

    fence = Fence()
    client = Client(5000)
    fence_requests(client, fence)
    assert client.options["recvWindow"] == 1000
    await client.fetch("https://venue/order", "POST")
    fence.holds = False
    await client.fetch("https://venue/order", "GET")  # a read: never fenced
    for method in ("POST", "PUT", "DELETE"):
        with pytest.raises(RequestFenced):
            await client.fetch("https://venue/order", method)
    assert client.sent == ["POST", "GET"]  # nothing else reached the transport
    narrower, unset, free = Client(500), Client(None), Client(5000)
    fence_requests(narrower, fence)
    fence_requests(unset, fence)
    fence_requests(free, None)  # no lease: nothing changes
    windows = [c.options["recvWindow"] for c in (narrower, unset, free)]
    assert windows == [500, 1000, 5000]
    await free.fetch("https://venue/order", "POST")


class HeldRequests:
    """An aiohttp client middleware on one ccxt client: holds the next request that can change the account
    after it was signed and admitted by the lease's fence, until released — what a process paused between
    its check and its bytes leaving looks like to the venue.  ``signed``: the request's (timestamp,
    receive window) in ms as it was signed."""

    def __init__(self) -> None:
        self.armed = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.signed: tuple[int, int] | None = None
        self.answer: str | None = None  # the venue's answer to the held request

    async def __call__(self, request: aiohttp.ClientRequest, handler):
        if not (self.armed and request.method != "GET"):
            return await handler(request)
        self.armed = False
        self.signed = await signed_window(request)
        self.held.set()
        await self.release.wait()
        response = await handler(request)
        self.answer = (await response.read()).decode()
        return response

    async def install(self, client) -> None:
        """Put this middleware on ``client``'s session (a fresh one; ccxt closes it on disconnect)."""
        old, client.session = client.session, aiohttp.ClientSession(middlewares=(self,))
        if old is not None:
            await old.close()


async def signed_window(request: aiohttp.ClientRequest) -> tuple[int, int]:
    """(timestamp, receive window) of a signed request: Bybit's ``X-BAPI-TIMESTAMP`` / ``X-BAPI-RECV-WINDOW``
    headers, Binance's ``timestamp`` / ``recvWindow`` parameters (query or form body)."""
    if "X-BAPI-TIMESTAMP" in request.headers:
        return int(request.headers["X-BAPI-TIMESTAMP"]), int(request.headers["X-BAPI-RECV-WINDOW"])
    body = (await request.body.as_bytes()).decode() if isinstance(request.body, aiohttp.payload.Payload) else ""
    params = dict(parse_qsl(f"{request.url.query_string}&{body}"))
    return int(params["timestamp"]), int(params["recvWindow"])


@pytest.mark.parametrize("action", ["open", "close"])
async def test_a_request_signed_before_the_takeover_and_delivered_after_is_refused_and_did_nothing(env, action):
    """Owner A signs an order while it holds the lease; the request is held between A's transport and the
    venue (A paused) while A's lease runs out and B takes over; delivered after its receive window, the venue
    refuses it (Binance -1021, Bybit 10002) and A takes that as "did nothing": no success, no "position gone"."""
    async with two_instances(env) as (a, b):
        lease = a.leases[env.venue_name]
        a_parts = a.venue(env.venue_name)
        session = env.driver.session
        client = getattr(session, "exchange", None) or session.client
        assert client.options["recvWindow"] == lease.recv_window_ms == 1000  # the lease's window, not 5 000
        position = None
        if action == "close":
            position = await a.open(env.intent(side="short"))
        held = HeldRequests()
        await held.install(client)
        held.armed = True
        orders_before = len(env.venue.truth.orders)
        if action == "open":
            acting = asyncio.create_task(a.open(env.intent(side="long")))
        else:
            acting = asyncio.create_task(a.close(env.venue_name, env.symbol))
        await asyncio.wait_for(held.held.wait(), 15)  # signed and admitted: A had the lease
        # A is paused: its heartbeat stops, the database lets the lease run out, B takes over.
        a._holders.pop(env.venue_name).cancel()
        await expire(env.store, env.venue_name)
        await env.recorder.wait_for(lambda r: alerts(env, "took over account default (epoch 2)"), 15)
        timestamp_ms, window_ms = held.signed
        assert window_ms == lease.recv_window_ms
        # the request reaches the venue after its window (the premise of the case, on the venue's clock)
        await asyncio.sleep(max(0.0, (timestamp_ms + window_ms + 5) / 1000 - time.time()))
        held.release.set()
        with pytest.raises(Exception) as failed:
            await asyncio.wait_for(acting, 15)
        # the venue refused it: outside the receive window (Binance -1021, Bybit 10002)
        assert ('"code":-1021' if env.venue_name == "binance" else '"retCode":10002') in held.answer.replace(" ", "")
        assert len(env.venue.truth.orders) == orders_before  # nothing reached the venue's books
        # A saw a refusal (or, journaling it, the database's refusal of its stale epoch): never a success
        assert isinstance(failed.value, RequestExpired) or is_fenced(failed.value), failed.value
        assert not isinstance(failed.value, (RequestFenced, PositionGone)), failed.value
        if action == "open":
            assert isinstance(failed.value, RequestExpired)  # the opener's "refused, nothing filled"
            assert env.venue.position("default", env.symbol).contracts == 0
            assert not a_parts.book.holds(env.symbol)
        else:
            assert position is not None and env.venue.position("default", env.symbol).contracts == position.contracts
            assert a_parts.book.holds(env.symbol)  # never "position gone"
            assert env.venue.is_protected("default", env.symbol)
            assert b.venue(env.venue_name).book.holds(env.symbol)  # the new owner holds it
        # Once A's clock has passed its lease's local end, its transport sends nothing that can change the
        # account (reads still go out), even through the driver without the engine's lease check.
        lease.clock = lambda: lease.valid_until - lease.margin_s
        await a.drivers[env.venue_name].fetch_snapshot()
        held.armed = True
        with pytest.raises(RequestFenced):
            await a.drivers[env.venue_name].close_position(env.symbol, "short", Decimal(5), "fw-c-fenced")
        assert held.armed  # the middleware never saw it: nothing reached the wire
        assert len(env.venue.truth.orders) == orders_before
