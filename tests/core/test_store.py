"""The store against a real PostgreSQL: migrations, the one-open-position constraint, the journal."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest

from framework.errors import DuplicateOpenPosition, StoreError
from framework.models import OrderIntent, PositionEvent, StopLoss, TrailingSpec
from framework.store import OrderRow, PositionRow, Store, migrate
from framework.store.database import migrations


def opened(symbol: str = "XRP/USDT:USDT", venue: str = "bybit", account: str = "default") -> PositionEvent:
    return PositionEvent(
        event="opened", account=account, venue=venue, symbol=symbol, side="long",
        contracts=Decimal("43"), entry_price=Decimal("0.5123"), timestamp=1_700_000_000_000,
    )


async def test_migrations_from_empty_create_every_table(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        again = await migrate(conn)  # idempotent: nothing left to apply
    finally:
        await conn.close()
    assert {"positions", "orders", "stops", "events", "schema_migrations"} <= tables
    assert versions == [v for v, _, _ in migrations()]
    assert again == []


async def test_migrations_apply_on_a_blank_database(databases):
    admin = await asyncpg.connect(databases.server_url)
    await admin.execute("CREATE DATABASE blank_for_migration")
    await admin.close()
    url = databases._url("blank_for_migration")
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate(conn)
        account_columns = await conn.fetch(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'account' AND table_schema='public'"
        )
    finally:
        await conn.close()
        admin = await asyncpg.connect(databases.server_url)
        await admin.execute("DROP DATABASE blank_for_migration WITH (FORCE)")
        await admin.close()
    assert applied == [v for v, _, _ in migrations()]
    assert {r["table_name"] for r in account_columns} >= {"positions", "orders", "stops", "events"}


async def test_two_open_positions_for_one_symbol_are_impossible_under_concurrency(store: Store):
    results = await asyncio.gather(*(store.open_position(opened()) for _ in range(8)), return_exceptions=True)
    winners = [r for r in results if isinstance(r, int)]
    losers = [r for r in results if isinstance(r, DuplicateOpenPosition)]
    assert len(winners) == 1 and len(losers) == 7
    assert losers[0].venue == "bybit" and losers[0].symbol == "XRP/USDT:USDT"
    assert len(await store.open_positions()) == 1


async def test_same_symbol_on_other_venue_or_account_may_be_open(store: Store):
    await store.open_position(opened())
    await store.open_position(opened(venue="binance"))
    await store.open_position(opened(account="other"))
    assert len(await store.open_positions()) == 3


async def test_close_is_idempotent_and_journaled_in_the_same_transaction(store: Store):
    position_id = await store.open_position(opened())
    closed = PositionEvent(
        event="closed", venue="bybit", symbol="XRP/USDT:USDT", side="long", contracts=Decimal(0),
        price=Decimal("0.50"), reason="stop_loss", realized_pnl=Decimal("-0.53"),
    )
    assert await store.close_position(closed) is True
    assert await store.close_position(closed) is False
    row = await store.position(position_id)
    assert row.status == "closed" and row.close_reason == "stop_loss"
    kinds = [e.kind for e in await store.events(position_id=position_id)]
    assert kinds == ["opened", "closed"]
    # a new position on the same symbol may open after the close
    await store.open_position(opened())


async def test_journal_is_append_only(store: Store):
    await store.append_event("default", "bybit", "note", {"hello": "world"}, symbol="XRP/USDT:USDT")
    rows = await store.events(venue="bybit")
    assert rows[-1].payload == {"hello": "world"}
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await store.pool.execute("UPDATE events SET kind = 'x'")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await store.pool.execute("DELETE FROM events")
    assert len(await store.events(venue="bybit")) == len(rows)


async def test_intent_is_recorded_before_submit_and_client_ids_are_unique(store: Store):
    intent = OrderIntent(
        venue="bybit", symbol="XRP/USDT:USDT", side="long", contracts=Decimal("43"),
        stop_loss=Decimal("0.49"), client_order_id="fw-o-0123456789ab",
    )
    await store.record_order(intent)
    row = await store.order("default", "bybit", "fw-o-0123456789ab")
    assert row.state == "intent" and row.side == "buy" and row.contracts == Decimal("43")
    assert row.intent.client_order_id == "fw-o-0123456789ab"
    assert [r.client_order_id for r in await store.unresolved_orders("default", "bybit")] == ["fw-o-0123456789ab"]
    with pytest.raises(StoreError):
        await store.record_order(intent)
    await store.update_order("default", "bybit", "fw-o-0123456789ab", state="closed", venue_order_id="42",
                             filled=Decimal("43"), average=Decimal("0.5123"))
    assert await store.unresolved_orders("default", "bybit") == []


async def test_stops_replace_each_other_and_end_with_the_position(store: Store):
    await store.open_position(opened())
    first = StopLoss(venue="bybit", symbol="XRP/USDT:USDT", side="long", trigger_price=Decimal("0.49"))
    moved = StopLoss(venue="bybit", symbol="XRP/USDT:USDT", side="long", trigger_price=Decimal("0.50"))
    await store.record_stop("default", first)
    await store.record_stop("default", moved)
    resting = await store.resting_stops("default", "bybit", "XRP/USDT:USDT")
    assert [r.trigger_price for r in resting] == [Decimal("0.50")]
    assert (await store.open_positions())[0].stop_loss == Decimal("0.50")
    await store.close_position(PositionEvent(event="closed", venue="bybit", symbol="XRP/USDT:USDT",
                                             side="long", contracts=Decimal(0), reason="manual"))
    assert await store.resting_stops("default", "bybit", "XRP/USDT:USDT") == []


async def test_reads_return_typed_rows_not_asyncpg_records(store: Store):
    intent = OrderIntent(venue="bybit", symbol="XRP/USDT:USDT", side="short", contracts=Decimal("7"),
                         stop_loss=Decimal("1.2"), client_order_id="fw-o-abcdefabcdef",
                         trailing=TrailingSpec(callback_rate=Decimal("0.5")))
    await store.record_order(intent)
    await store.open_position(opened(), trailing={"callback_rate": "0.5"})
    [position] = await store.open_positions()
    assert isinstance(position, PositionRow) and position.trailing_spec == TrailingSpec(callback_rate=Decimal("0.5"))
    order = await store.order("default", "bybit", intent.client_order_id)
    assert isinstance(order, OrderRow) and order.intent == intent and order.side == "sell"
    for row in [position, order, *(await store.events())]:
        assert not isinstance(row, asyncpg.Record)


async def test_a_closure_is_one_statement_on_the_held_connection(store: Store):
    # issue 17: position closed, its stops ended and the journal row appended in ONE round trip, with no
    # BEGIN / COMMIT and no pool acquire / release (reset) per closure
    position_id = await store.open_position(opened())
    await store.record_stop("default", StopLoss(venue="bybit", symbol="XRP/USDT:USDT", side="long",
                                                trigger_price=Decimal("0.49")))
    statements: list[str] = []
    logged = asyncio.Event()

    def log_query(record) -> None:  # asyncpg calls it soon after each statement
        statements.append(record.query)
        logged.set()

    async with store.hot() as conn:
        conn.add_query_logger(log_query)
    free_before = store.pool.get_idle_size()
    closed = PositionEvent(event="closed", venue="bybit", symbol="XRP/USDT:USDT", side="long", contracts=Decimal(0),
                           price=Decimal("0.48"), reason="stop_loss")
    assert await store.close_position(closed) is True
    await asyncio.wait_for(logged.wait(), 5)
    assert len(statements) == 1 and statements[0].lstrip().startswith("WITH closed AS")
    assert store.pool.get_idle_size() == free_before
    row = await store.position(position_id)
    assert (row.status, row.close_reason, row.close_price) == ("closed", "stop_loss", Decimal("0.48"))
    assert await store.resting_stops("default", "bybit", "XRP/USDT:USDT") == []
    assert [e.kind for e in await store.events(position_id=position_id)] == ["opened", "closed"]


async def test_a_group_commit_leaves_what_writing_its_rows_one_by_one_leaves(databases):
    # issue 17: a batch of stream rows is one set-based statement (BATCH_SQL); per symbol the rows up to the
    # first close apply, later ones find no open position; updates COALESCE; every applying row is journaled
    def event(kind: str, symbol: str, contracts: str, **fields) -> PositionEvent:
        return PositionEvent(event=kind, venue="bybit", symbol=symbol, side="long", contracts=Decimal(contracts),
                             timestamp=1_700_000_000_100, **fields)

    stores = [await databases.store(), await databases.store()]
    try:
        for store in stores:
            for symbol in ("A/USDT:USDT", "B/USDT:USDT", "C/USDT:USDT"):
                await store.open_position(opened(symbol))
                await store.record_stop("default", StopLoss(venue="bybit", symbol=symbol, side="long",
                                                            trigger_price=Decimal("0.4"), order_id=f"s-{symbol}"))
        one = stores[0]
        rows = [
            one.update_row("default", "bybit", "A/USDT:USDT", event=event("updated", "A/USDT:USDT", "50"),
                           contracts=Decimal(50), entry_price=Decimal("0.52")),
            one.update_row("default", "bybit", "B/USDT:USDT", event=event("updated", "B/USDT:USDT", "43"),
                           stop_loss=Decimal("0.45")),
            one.close_row(event("closed", "A/USDT:USDT", "0", reason="stop_loss", price=Decimal("0.4"),
                                realized_pnl=Decimal("-5.6"))),
            one.update_row("default", "bybit", "A/USDT:USDT", event=event("updated", "A/USDT:USDT", "7"),
                           contracts=Decimal(7)),  # after its close: nothing open to apply to
            one.update_row("default", "bybit", "B/USDT:USDT", event=event("updated", "B/USDT:USDT", "60"),
                           contracts=Decimal(60), entry_price=Decimal("0.53")),
            one.update_row("default", "bybit", "C/USDT:USDT", contracts=Decimal(9)),  # no journal row
            one.update_row("default", "bybit", "D/USDT:USDT", event=event("updated", "D/USDT:USDT", "1"),
                           contracts=Decimal(1)),  # never open
            one.close_row(event("closed", "B/USDT:USDT", "0", reason="manual")),
            one.update_row("default", "bybit", "C/USDT:USDT", event=event("updated", "C/USDT:USDT", "9"),
                           take_profit=Decimal("0.7")),
        ]
        for row in rows:
            await stores[0].write_rows([row])
        await stores[1].write_rows(rows)

        async def state(store: Store) -> tuple:
            positions = await store.pool.fetch("SELECT * FROM positions ORDER BY id")
            stops = await store.pool.fetch("SELECT symbol, status, ended_at FROM stops ORDER BY id")
            events = await store.pool.fetch(  # the rows' own (the set-up's "opened" rows carry the clock)
                "SELECT symbol, position_id, kind, payload, at FROM events WHERE kind <> 'opened' ORDER BY id")
            return [dict(r) for r in positions], [dict(r) for r in stops], [dict(r) for r in events]

        one_by_one, batched = await state(stores[0]), await state(stores[1])
        assert batched == one_by_one
        positions, stops, events = batched
        assert [(p["symbol"], p["status"], p["contracts"]) for p in positions] == [
            ("A/USDT:USDT", "closed", 0), ("B/USDT:USDT", "closed", 0), ("C/USDT:USDT", "open", 9)]
        assert (positions[0]["entry_price"], positions[0]["close_reason"], positions[0]["realized_pnl"]) == (
            Decimal("0.52"), "stop_loss", Decimal("-5.6"))
        assert (positions[1]["stop_loss"], positions[1]["entry_price"]) == (Decimal("0.45"), Decimal("0.53"))
        assert positions[2]["take_profit"] == Decimal("0.7")
        assert [s["status"] for s in stops] == ["gone", "gone", "resting"]
        assert [(e["symbol"][0], e["kind"]) for e in events] == [
            ("A", "updated"), ("B", "updated"), ("A", "closed"), ("B", "updated"), ("B", "closed"), ("C", "updated")]
    finally:
        for store in stores:
            await store.close()
