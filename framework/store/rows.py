"""What the store reads back: one frozen dataclass per table, typed (prices and sizes ``Decimal`` in quote
currency / contracts, times ms since epoch UTC), built from the ``asyncpg.Record`` so callers never see
the driver's row type.  Columns a row class does not name (added by a later migration) are ignored."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Self

import asyncpg

from framework.models import OrderIntent, PositionSide, Side, TrailingSpec


class Row:
    """Base of the row classes: :meth:`of` builds one from a record."""

    @classmethod
    def of(cls, record: asyncpg.Record) -> Self:
        """The row of ``record`` (a ``SELECT *`` of the class's table)."""
        return cls(**{field.name: record[field.name] for field in dataclasses.fields(cls)})  # type: ignore[arg-type]

    @classmethod
    def all_of(cls, records: list[asyncpg.Record]) -> list[Self]:
        return [cls.of(record) for record in records]


@dataclass(frozen=True, slots=True)
class PositionRow(Row):
    """A row of ``positions``: one position, open (``status='open'``) or closed.

    :ivar source: ``engine`` (opened by us) or ``adopted`` (found on the venue by reconciliation).
    :ivar trailing_spec: the trailing-stop specification, if the position trails.
    :ivar epoch: the lease epoch of the last write (``None`` without leases).
    """

    id: int
    account: str
    venue: str
    symbol: str
    side: PositionSide
    contracts: Decimal
    entry_price: Decimal | None
    stop_loss: Decimal | None
    take_profit: Decimal | None
    trailing_spec: TrailingSpec | None
    status: str
    source: str
    entry_client_order_id: str | None
    opened_at: int
    updated_at: int
    closed_at: int | None
    close_reason: str | None
    close_price: Decimal | None
    realized_pnl: Decimal | None
    epoch: int | None

    def __post_init__(self) -> None:
        if isinstance(self.trailing_spec, dict):  # jsonb as stored
            object.__setattr__(self, "trailing_spec", TrailingSpec.model_validate(self.trailing_spec))


@dataclass(frozen=True, slots=True)
class OrderRow(Row):
    """A row of ``orders``: an order we submitted (or were about to), written before it was sent.

    :ivar purpose: ``entry``, ``close`` or ``rollback``.
    :ivar state: ``intent``, ``submitted``, ``unknown`` (outcome not known yet), or the venue's status.
    :ivar intent: the position intent the order serves.
    """

    id: int
    account: str
    venue: str
    symbol: str
    client_order_id: str
    venue_order_id: str | None
    purpose: str
    side: Side
    contracts: Decimal
    reduce_only: bool
    state: str
    filled: Decimal
    average: Decimal | None
    intent: OrderIntent
    created_at: int
    updated_at: int
    epoch: int | None

    def __post_init__(self) -> None:
        if isinstance(self.intent, dict):  # jsonb as stored
            object.__setattr__(self, "intent", OrderIntent.model_validate(self.intent))


@dataclass(frozen=True, slots=True)
class StopRow(Row):
    """A row of ``stops``: a stop-loss / take-profit / trailing stop we placed.

    :ivar status: ``resting``, ``replaced``, ``cancelled``, ``triggered`` or ``gone``.
    """

    id: int
    account: str
    venue: str
    symbol: str
    position_id: int | None
    kind: str
    trigger_price: Decimal
    venue_order_id: str | None
    status: str
    placed_at: int
    ended_at: int | None
    epoch: int | None


@dataclass(frozen=True, slots=True)
class EventRow(Row):
    """A row of the append-only journal ``events``.

    :ivar kind: ``opened``, ``updated``, ``closed``, or another lifecycle event.
    :ivar payload: the event as JSON (a model's ``model_dump(mode="json")``).
    """

    id: int
    account: str
    venue: str
    symbol: str | None
    position_id: int | None
    kind: str
    payload: Any
    at: int
    epoch: int | None


@dataclass(frozen=True, slots=True)
class SignalRow(Row):
    """A row of ``signals``: a signal received from outside (HTTP API), idempotent by its id.

    :ivar state: ``received``, ``done``, ``rejected`` or ``failed``.
    :ivar result: what became of it (the position, or the error), once finished.
    """

    id: str
    source: str
    body: dict[str, Any]
    state: str
    result: dict[str, Any] | None
    received_at: int
    updated_at: int
