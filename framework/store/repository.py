"""The framework's records in PostgreSQL: positions, orders (intent first), stops, the event journal.

Reads return typed rows (:mod:`framework.store.rows`), never ``asyncpg.Record``.

Every write that changes a position's state and its journal entry happen in one transaction, so the
journal never disagrees with the ``positions`` table.  The stream-driven ones (a size change, a closure)
are each ONE statement (data-modifying CTEs, atomic on their own) on a connection held for that hot path,
so a closure costs one round trip: no BEGIN / COMMIT, no pool acquire and release reset (issue 17).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from framework.errors import DuplicateOpenPosition, StoreError
from framework.models import OrderIntent, PositionEvent, StopLoss, now_ms
from framework.store.database import Connection, create_pool, database_url
from framework.store.rows import EventRow, OrderRow, PositionRow, SignalRow, StopRow


def _jsonable(model: Any) -> Any:
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


# One statement for every stream-driven journal row, so that a lone closure is one round trip (atomic by
# itself: no BEGIN / COMMIT); a batch of any mix goes as :data:`BATCH_SQL`, the same rows set-based.  By $1:
# ``close``: close the open position, end its resting stops, journal ``closed``;
# ``update``: update the open position's size / prices, journal $13 (none when NULL).
# $2 account, $3 venue, $4 symbol, $5 ms (closed_at, or updated_at), $6 close reason, $7 close price,
# $8 realized pnl, $9 contracts, $10 entry price, $11 stop, $12 take-profit, $13 journal kind, $14 payload,
# $15 journal at, $16 lease epoch (Store.fence).  Only one of the two UPDATEs can match (by $1).
JOURNAL_SQL = """
WITH closed AS (
    UPDATE positions SET status = 'closed', contracts = 0, closed_at = $5, updated_at = $5,
           close_reason = $6, close_price = $7, realized_pnl = $8, epoch = $16
    WHERE $1::text = 'close' AND account = $2 AND venue = $3 AND symbol = $4 AND status = 'open' RETURNING id
), moved AS (
    UPDATE positions SET contracts = COALESCE($9, contracts), entry_price = COALESCE($10, entry_price),
           stop_loss = COALESCE($11, stop_loss), take_profit = COALESCE($12, take_profit), updated_at = $5,
           epoch = $16
    WHERE $1::text = 'update' AND account = $2 AND venue = $3 AND symbol = $4 AND status = 'open' RETURNING id
), gone AS (
    UPDATE stops SET status = 'gone', ended_at = $5, epoch = $16
    WHERE account = $2 AND venue = $3 AND symbol = $4 AND status = 'resting'
      AND position_id IN (SELECT id FROM closed)
), touched AS (
    SELECT id FROM closed UNION ALL SELECT id FROM moved
), journal AS (
    INSERT INTO events (account, venue, symbol, position_id, kind, payload, at, epoch)
    SELECT $2::text, $3::text, $4::text, id, $13::text, $14::jsonb, $15::bigint, $16::bigint FROM touched
    WHERE $13::text IS NOT NULL
)
SELECT id FROM touched"""

# A group commit of many :data:`JOURNAL_SQL` rows as ONE set-based statement: the same end state and journal
# as running JOURNAL_SQL once per row in queue order, for a fraction of the work (one executor start instead
# of one per row, ~70 µs each on the server).  The rows travel as ONE text parameter, the JSON array of the
# JOURNAL_SQL argument tuples (asyncpg encodes array parameters element by element through ABC isinstance
# checks), read as jsonb (parsed once; with json every ->> parses the element again: 1.5 ms per 50 rows).
# Per (account, venue, symbol), the rows up to and including the batch's first ``close`` apply to the open
# position (those after it would find none, as one by one); the position ends in the state the last of them
# leaves: a close sets status / contracts 0 / closed_at / reason / price / pnl, the updates before it their
# last non-NULL size and prices (COALESCE, as JOURNAL_SQL), updated_at and epoch the last row's.  Each
# applying row with a journal kind appends its event, in queue order.
BATCH_SQL = """
WITH batch AS (
    SELECT r->>0 AS op, r->>1 AS account, r->>2 AS venue, r->>3 AS symbol, (r->>4)::bigint AS ms, r->>5 AS reason,
           (r->>6)::numeric AS close_price, (r->>7)::numeric AS pnl, (r->>8)::numeric AS contracts,
           (r->>9)::numeric AS entry_price, (r->>10)::numeric AS stop_loss, (r->>11)::numeric AS take_profit,
           r->>12 AS kind, r->13 AS payload, (r->>14)::bigint AS at, (r->>15)::bigint AS epoch, ord
    FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS b(r, ord)  -- jsonb: parsed once, not per ->>
), keyed AS (
    SELECT b.*, min(ord) FILTER (WHERE op = 'close') OVER (PARTITION BY account, venue, symbol) AS close_ord
    FROM batch b
), live AS (
    SELECT k.*, p.id AS position_id FROM keyed k
    JOIN positions p ON p.account = k.account AND p.venue = k.venue AND p.symbol = k.symbol AND p.status = 'open'
    WHERE k.close_ord IS NULL OR k.ord <= k.close_ord
), final AS (
    SELECT position_id, account, venue, symbol, bool_or(op = 'close') AS closed,
           (array_agg(ms ORDER BY ord DESC))[1] AS ms, (array_agg(epoch ORDER BY ord DESC))[1] AS epoch,
           (array_agg(contracts ORDER BY ord DESC) FILTER (WHERE contracts IS NOT NULL))[1] AS contracts,
           (array_agg(entry_price ORDER BY ord DESC) FILTER (WHERE entry_price IS NOT NULL))[1] AS entry_price,
           (array_agg(stop_loss ORDER BY ord DESC) FILTER (WHERE stop_loss IS NOT NULL))[1] AS stop_loss,
           (array_agg(take_profit ORDER BY ord DESC) FILTER (WHERE take_profit IS NOT NULL))[1] AS take_profit,
           (array_agg(reason ORDER BY ord DESC) FILTER (WHERE op = 'close'))[1] AS reason,
           (array_agg(close_price ORDER BY ord DESC) FILTER (WHERE op = 'close'))[1] AS close_price,
           (array_agg(pnl ORDER BY ord DESC) FILTER (WHERE op = 'close'))[1] AS pnl
    FROM live GROUP BY position_id, account, venue, symbol
), moved AS (
    UPDATE positions p SET
        status = CASE WHEN f.closed THEN 'closed' ELSE p.status END,
        contracts = CASE WHEN f.closed THEN 0 ELSE COALESCE(f.contracts, p.contracts) END,
        entry_price = COALESCE(f.entry_price, p.entry_price), stop_loss = COALESCE(f.stop_loss, p.stop_loss),
        take_profit = COALESCE(f.take_profit, p.take_profit), updated_at = f.ms,
        closed_at = CASE WHEN f.closed THEN f.ms ELSE p.closed_at END,
        close_reason = CASE WHEN f.closed THEN f.reason ELSE p.close_reason END,
        close_price = CASE WHEN f.closed THEN f.close_price ELSE p.close_price END,
        realized_pnl = CASE WHEN f.closed THEN f.pnl ELSE p.realized_pnl END, epoch = f.epoch
    FROM final f WHERE p.id = f.position_id
), gone AS (
    UPDATE stops s SET status = 'gone', ended_at = f.ms, epoch = f.epoch FROM final f
    WHERE f.closed AND s.account = f.account AND s.venue = f.venue AND s.symbol = f.symbol
      AND s.status = 'resting' AND s.position_id = f.position_id
), journal AS (
    INSERT INTO events (account, venue, symbol, position_id, kind, payload, at, epoch)
    SELECT account, venue, symbol, position_id, kind, payload, at, epoch FROM live
    WHERE kind IS NOT NULL ORDER BY ord
)
SELECT count(*) FROM live"""

#: a stream-driven journal row for :meth:`Store.write_rows`: the arguments of :data:`JOURNAL_SQL` (made by
#: :meth:`Store.close_row` / :meth:`Store.update_row`)
JournalRow = tuple[Any, ...]


def _usable(conn: asyncpg.pool.PoolConnectionProxy) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # the pool took it back when its connection was lost
        return False


#: seconds without a hot-path write after which the held connection goes back to the pool
HOT_IDLE_S = 1.0


class Store:
    """Repository over an asyncpg pool.  Create with :meth:`open`, release with :meth:`close`.

    :param pool: a pool created by :func:`framework.store.database.create_pool`.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # held for the hot path (closures, the batched journal)
        self._hot: asyncpg.pool.PoolConnectionProxy | None = None
        self._hot_lock = asyncio.Lock()  # one statement at a time on it
        self._hot_idle: asyncio.TimerHandle | None = None
        self._hot_release: asyncio.Task[None] | None = None
        self._epochs: dict[tuple[str, str], int] = {}

    def fence(self, account: str, venue: str, epoch: int | None) -> None:
        """Stamp every later write for ``account`` on ``venue`` with the lease ``epoch`` (``None``: unstamped).

        The database refuses a write whose epoch is not the lease's current one
        (``framework/store/migrations/0003_leases.sql``): :func:`is_fenced` tells that error apart.
        """
        if epoch is None:
            self._epochs.pop((account, venue), None)
        else:
            self._epochs[(account, venue)] = epoch

    def epoch(self, account: str, venue: str) -> int | None:
        """The lease epoch stamped on writes for ``account`` on ``venue`` (``None``: none)."""
        return self._epochs.get((account, venue))

    @classmethod
    async def open(cls, url: str | None = None, **pool_options: Any) -> Store:
        """Connect to ``url`` (default: ``$DATABASE_URL`` or the embedded server) and migrate.

        :raises StoreError: the database cannot be reached.
        """
        try:
            pool = await create_pool(database_url(url), **pool_options)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot open the database: {exc}") from exc
        return cls(pool)

    async def close(self) -> None:
        await self._release_hot()
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def hot(self) -> AsyncIterator[Connection]:
        """The connection held for the hot path, one user at a time; taken from the pool on first use and
        kept while writes keep coming (no acquire / release reset per write), given back after
        ``HOT_IDLE_S`` without one (so the pool, which other ``Store`` objects may share, can close).  A
        connection that broke (the database went away) is given back and the next use takes a fresh one.

        :raises OSError | asyncpg.PostgresError | asyncpg.InterfaceError: the database is unreachable.
        """
        async with self._hot_lock:
            if self._hot_idle is not None:
                self._hot_idle.cancel()
            if self._hot is None or not _usable(self._hot):
                await self._drop_hot()
                self._hot = await self.pool.acquire()
            conn = self._hot
            try:
                yield conn
            except asyncpg.PostgresError:
                if not _usable(conn):  # e.g. the server terminated it
                    await self._drop_hot()
                raise
            except BaseException:  # cut mid-statement or cancelled: its state is unknown
                await self._drop_hot()
                raise
            finally:
                if self._hot is not None:
                    self._hot_idle = asyncio.get_running_loop().call_later(HOT_IDLE_S, self._on_idle)

    def _on_idle(self) -> None:
        self._hot_idle = None
        if self._hot is not None and not self._hot_lock.locked():
            self._hot_release = asyncio.get_running_loop().create_task(self._release_hot())

    async def _release_hot(self) -> None:
        async with self._hot_lock:
            if self._hot_idle is not None:
                self._hot_idle.cancel()
                self._hot_idle = None
            await self._drop_hot()

    async def _drop_hot(self) -> None:
        conn, self._hot = self._hot, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self.pool.release(conn, timeout=1)

    # --- orders: the intent is written before the order is submitted ---------------------------------

    async def record_order(
        self,
        intent: OrderIntent,
        *,
        purpose: str = "entry",
        client_order_id: str | None = None,
        side: str | None = None,
        contracts: Decimal | None = None,
        reduce_only: bool = False,
    ) -> None:
        """Persist an order we are about to submit, in state ``intent``.

        :param intent: the position intent the order serves (stored whole, as JSON).
        :param purpose: ``entry``, ``close`` or ``rollback``.
        :param client_order_id / side / contracts: default to the intent's entry order.
        :raises StoreError: the client order id was already used for this account/venue.
        """
        ts = now_ms()
        try:
            await self.pool.execute(
                """INSERT INTO orders (account, venue, symbol, client_order_id, purpose, side, contracts,
                                       reduce_only, state, intent, created_at, updated_at, epoch)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'intent', $9, $10, $10, $11)""",
                intent.account, intent.venue, intent.symbol, client_order_id or intent.client_order_id,
                purpose, side or intent.order_side, contracts or intent.contracts, reduce_only,
                _jsonable(intent), ts, self.epoch(intent.account, intent.venue),
            )
        except asyncpg.UniqueViolationError as exc:
            raise StoreError(
                "client order id already recorded", venue=intent.venue, symbol=intent.symbol,
                order_id=client_order_id or intent.client_order_id,
            ) from exc

    async def update_order(
        self,
        account: str,
        venue: str,
        client_order_id: str,
        *,
        state: str,
        venue_order_id: str | None = None,
        filled: Decimal | None = None,
        average: Decimal | None = None,
    ) -> None:
        """Move an order to ``state`` (``submitted``, ``unknown``, ``open``, ``closed``, ``rejected``…)."""
        await self.pool.execute(
            """UPDATE orders SET state = $4, venue_order_id = COALESCE($5, venue_order_id),
                      filled = COALESCE($6, filled), average = COALESCE($7, average), updated_at = $8,
                      epoch = $9
               WHERE account = $1 AND venue = $2 AND client_order_id = $3""",
            account, venue, client_order_id, state, venue_order_id, filled, average, now_ms(),
            self.epoch(account, venue),
        )

    async def unresolved_orders(self, account: str, venue: str) -> list[OrderRow]:
        """Orders whose outcome we do not know yet (``intent``, ``submitted``, ``unknown``)."""
        return OrderRow.all_of(await self.pool.fetch(
            """SELECT * FROM orders WHERE account = $1 AND venue = $2
               AND state IN ('intent', 'submitted', 'unknown') ORDER BY id""",
            account, venue,
        ))

    async def order(self, account: str, venue: str, client_order_id: str) -> OrderRow | None:
        """The order with this client order id, or ``None``."""
        record = await self.pool.fetchrow(
            "SELECT * FROM orders WHERE account = $1 AND venue = $2 AND client_order_id = $3",
            account, venue, client_order_id,
        )
        return None if record is None else OrderRow.of(record)

    # --- positions ------------------------------------------------------------------------------------

    async def open_position(
        self, event: PositionEvent, *, stop_loss: Decimal | None = None, take_profit: Decimal | None = None,
        trailing: dict[str, Any] | None = None, entry_client_order_id: str | None = None,
    ) -> int:
        """Insert an open position and journal ``opened`` in one transaction.

        :returns: the position id.
        :raises DuplicateOpenPosition: one is already open for this account/venue/symbol.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                position_id = await conn.fetchval(
                    """INSERT INTO positions (account, venue, symbol, side, contracts, entry_price, stop_loss,
                                              take_profit, trailing_spec, status, source, entry_client_order_id,
                                              opened_at, updated_at, epoch)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', $10, $11, $12, $12, $13) RETURNING id""",
                    event.account, event.venue, event.symbol, event.side, event.contracts, event.entry_price,
                    stop_loss, take_profit, trailing, event.source, entry_client_order_id, event.timestamp,
                    self.epoch(event.account, event.venue),
                )
            except asyncpg.UniqueViolationError as exc:
                raise DuplicateOpenPosition(
                    "a position is already open", venue=event.venue, symbol=event.symbol
                ) from exc
            await self._journal(conn, event.account, event.venue, event.symbol, position_id, "opened", event)
        return int(position_id)

    async def update_position(
        self, account: str, venue: str, symbol: str, *, event: PositionEvent | None = None,
        contracts: Decimal | None = None, entry_price: Decimal | None = None,
        stop_loss: Decimal | None = None, take_profit: Decimal | None = None,
    ) -> bool:
        """Update the open position's size / prices; journal ``event`` (if given) in the same transaction.

        :returns: ``False`` when no position is open for that symbol.
        """
        row = self.update_row(account, venue, symbol, event=event, contracts=contracts, entry_price=entry_price,
                              stop_loss=stop_loss, take_profit=take_profit)
        async with self.hot() as conn:
            return await conn.fetchval(JOURNAL_SQL, *row) is not None

    async def close_position(self, event: PositionEvent) -> bool:
        """Close the open position named by ``event`` and journal it, in one transaction.

        Idempotent: a second call for the same position finds no open row and returns ``False``.
        """
        row = self.close_row(event)
        async with self.hot() as conn:
            return await conn.fetchval(JOURNAL_SQL, *row) is not None

    def close_row(self, event: PositionEvent) -> JournalRow:
        """The row that closes ``event``'s open position, ends its stops and journals it (:data:`JOURNAL_SQL`),
        stamped with the lease epoch held now, for :meth:`write_rows`."""
        return ("close", event.account, event.venue, event.symbol, event.timestamp, event.reason, event.price,
                event.realized_pnl, None, None, None, None, "closed", _jsonable(event), now_ms(),
                self.epoch(event.account, event.venue))

    def update_row(
        self, account: str, venue: str, symbol: str, *, event: PositionEvent | None = None,
        contracts: Decimal | None = None, entry_price: Decimal | None = None, stop_loss: Decimal | None = None,
        take_profit: Decimal | None = None,
    ) -> JournalRow:
        """The row that updates the open position and journals ``event`` if given (:data:`JOURNAL_SQL`),
        stamped with the lease epoch held now, for :meth:`write_rows`."""
        ts = now_ms()
        return ("update", account, venue, symbol, ts, None, None, None, contracts, entry_price, stop_loss,
                take_profit, event.event if event is not None else None,
                _jsonable(event) if event is not None else None, ts, self.epoch(account, venue))

    async def write_rows(self, rows: Sequence[JournalRow]) -> None:
        """Write stream-driven journal rows (:meth:`close_row`, :meth:`update_row`) as one group commit, in
        order: one statement (:data:`JOURNAL_SQL` for one row, :data:`BATCH_SQL` for more), atomic (a batch is
        committed whole or not at all, so a replay after a failure never writes a row twice); one round trip.

        :raises OSError | asyncpg.PostgresError | asyncpg.InterfaceError: nothing of the batch was written.
        """
        # orjson: a tenth of json.dumps' CPU per row (issue 17); Decimal -> "1.5" (str, exact) as before
        batch = orjson.dumps(rows, default=str).decode() if len(rows) > 1 else None
        async with self.hot() as conn:
            if batch is None:
                await conn.execute(JOURNAL_SQL, *rows[0])
            else:
                await conn.execute(BATCH_SQL, batch)

    async def open_positions(self, account: str | None = None, venue: str | None = None) -> list[PositionRow]:
        """Open positions, optionally for one account / venue."""
        return PositionRow.all_of(await self.pool.fetch(
            """SELECT * FROM positions WHERE status = 'open'
               AND ($1::text IS NULL OR account = $1) AND ($2::text IS NULL OR venue = $2) ORDER BY id""",
            account, venue,
        ))

    async def position(self, position_id: int) -> PositionRow | None:
        """The position with this id, open or closed, or ``None``."""
        record = await self.pool.fetchrow("SELECT * FROM positions WHERE id = $1", position_id)
        return None if record is None else PositionRow.of(record)

    # --- stops ----------------------------------------------------------------------------------------

    async def record_stop(self, account: str, stop: StopLoss) -> None:
        """Record ``stop`` as resting and mark the previous resting one of its kind ``replaced``."""
        epoch = self.epoch(account, stop.venue)
        async with self.pool.acquire() as conn, conn.transaction():
            # The position row first, locked: every writer takes positions before stops (a closure ends the
            # stops after closing the row), so a stop recorded during a closure waits instead of deadlocking.
            position_id = await conn.fetchval(
                """SELECT id FROM positions WHERE account = $1 AND venue = $2 AND symbol = $3
                   AND status = 'open' FOR NO KEY UPDATE""",
                account, stop.venue, stop.symbol,
            )
            await conn.execute(
                """UPDATE stops SET status = 'replaced', ended_at = $5, epoch = $6
                   WHERE account = $1 AND venue = $2 AND symbol = $3 AND kind = $4 AND status = 'resting'""",
                account, stop.venue, stop.symbol, stop.kind, stop.placed_at, epoch,
            )
            await conn.execute(
                """INSERT INTO stops (account, venue, symbol, position_id, kind, trigger_price, venue_order_id,
                                      status, placed_at, epoch)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, 'resting', $8, $9)""",
                account, stop.venue, stop.symbol, position_id, stop.kind, stop.trigger_price, stop.order_id,
                stop.placed_at, epoch,
            )
            if stop.kind == "stop_loss" and position_id is not None:
                await conn.execute(
                    "UPDATE positions SET stop_loss = $2, updated_at = $3, epoch = $4 WHERE id = $1",
                    position_id, stop.trigger_price, stop.placed_at, epoch,
                )

    async def resting_stops(self, account: str, venue: str, symbol: str) -> list[StopRow]:
        """The stops recorded as resting for ``symbol``, oldest first."""
        return StopRow.all_of(await self.pool.fetch(
            """SELECT * FROM stops WHERE account = $1 AND venue = $2 AND symbol = $3 AND status = 'resting'
               ORDER BY id""",
            account, venue, symbol,
        ))

    # --- journal --------------------------------------------------------------------------------------

    async def append_event(
        self, account: str, venue: str, kind: str, payload: Any, *, symbol: str | None = None,
        position_id: int | None = None,
    ) -> None:
        """Append one row to the journal (the table refuses updates and deletes)."""
        async with self.pool.acquire() as conn:
            await self._journal(conn, account, venue, symbol, position_id, kind, payload)

    async def events(self, *, position_id: int | None = None, venue: str | None = None) -> list[EventRow]:
        """Journal rows in order, optionally for one position or venue."""
        return EventRow.all_of(await self.pool.fetch(
            """SELECT * FROM events WHERE ($1::bigint IS NULL OR position_id = $1)
               AND ($2::text IS NULL OR venue = $2) ORDER BY id""",
            position_id, venue,
        ))

    async def _journal(
        self, conn: Connection, account: str, venue: str, symbol: str | None, position_id: int | None,
        kind: str, payload: Any,
    ) -> None:
        await conn.execute(
            """INSERT INTO events (account, venue, symbol, position_id, kind, payload, at, epoch)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            account, venue, symbol, position_id, kind, _jsonable(payload), now_ms(),
            self.epoch(account, venue),
        )

    # --- signals received from outside (HTTP API): persisted on receipt, idempotent by client id ---------

    async def receive_signal(self, signal_id: str, source: str, body: dict[str, Any]) -> SignalRow | None:
        """Persist a received signal in state ``received`` unless its id is already known.

        :returns: ``None`` when recorded now (the caller acts on it); the earlier row for a known id.
        """
        ts = now_ms()
        inserted = await self.pool.fetchval(
            """INSERT INTO signals (id, source, body, state, received_at, updated_at)
               VALUES ($1, $2, $3, 'received', $4, $4) ON CONFLICT (id) DO NOTHING RETURNING id""",
            signal_id, source, body, ts,
        )
        return None if inserted is not None else await self.signal(signal_id)

    async def finish_signal(self, signal_id: str, state: str, result: dict[str, Any]) -> None:
        """Record what became of a received signal: ``done``, ``rejected`` or ``failed``, with ``result``."""
        await self.pool.execute(
            "UPDATE signals SET state = $2, result = $3, updated_at = $4 WHERE id = $1",
            signal_id, state, result, now_ms(),
        )

    async def signal(self, signal_id: str) -> SignalRow | None:
        """The received signal with this id, or ``None``."""
        record = await self.pool.fetchrow("SELECT * FROM signals WHERE id = $1", signal_id)
        return None if record is None else SignalRow.of(record)
