"""Ground truth of the simulated venue: what really happened, for tests and the contract suite to judge.

The venue feeds it (every submitted order, every fill, every closure) and calls :meth:`GroundTruth.observe`
after each state change, which keeps the unprotected intervals exact (docs/incidents.md I-4, I-5).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from framework.venue.ledger import Ledger
    from framework.venue.model import FillEvent

#: client order id prefixes the framework uses for closes (``fw-c-``) and rollbacks (``fw-r-``)
REDUCING_CLIENT_PREFIXES = ("fw-c-", "fw-r-")


@dataclass(frozen=True)
class OrderRecord:
    """One order submission, accepted or rejected.

    :ivar order_id: the venue id, ``None`` when rejected.
    :ivar status: the order's status right after submission (``new``, ``filled``, ``rejected``...).
    :ivar reject_reason: the :class:`~framework.venue.model.VenueReject` reason when rejected.
    :ivar position_side_at_submit: ``long`` / ``short`` / ``None`` (flat) when it was submitted.
    :ivar ts: submission time, ms.
    """

    order_id: str | None
    client_order_id: str | None
    account: str
    symbol: str
    side: str
    type: str
    amount: Decimal | None
    reduce_only: bool
    close_position: bool
    origin: str
    status: str
    position_side_at_submit: str | None
    position_contracts_at_submit: Decimal
    ts: int
    reject_reason: str | None = None
    trigger_price: Decimal | None = None

    @property
    def meant_to_reduce(self) -> bool:
        """Reduce-only, close-position, or sent with a framework close / rollback client order id."""
        cid = self.client_order_id or ""
        return self.reduce_only or self.close_position or cid.startswith(REDUCING_CLIENT_PREFIXES)

    @property
    def conditional(self) -> bool:
        return self.type not in ("market", "limit")


@dataclass(frozen=True)
class Closure:
    """A position went flat (or flipped): ``side`` / ``contracts`` are the position before it.

    :ivar price: price of the closing fill; ``realized_pnl``: the position's cumulative gross realized PnL.
    :ivar origin: the closing order's origin (``order``, ``stop_loss``, ``manual``, ``liquidation``...).
    """

    account: str
    symbol: str
    side: str
    contracts: Decimal
    price: Decimal
    origin: str
    realized_pnl: Decimal
    ts: int


class GroundTruth:
    """Everything the venue did, independent of what any client saw.

    :ivar orders: every submitted order (:class:`OrderRecord`), rejected ones included.
    :ivar fills: every :class:`~framework.venue.model.FillEvent`.
    :ivar closures: every :class:`Closure`.
    """

    def __init__(self) -> None:
        self.orders: list[OrderRecord] = []
        self.fills: list[FillEvent] = []
        self.closures: list[Closure] = []
        self._intervals: list[tuple[str, str, int, int]] = []
        self.suspended = False
        self._open_since: dict[tuple[str, str], int] = {}
        self._venue: Ledger | None = None

    # --- fed by the venue ---------------------------------------------------------------------------

    def record_order(self, record: OrderRecord) -> None:
        self.orders.append(record)

    def record_fill(self, fill: FillEvent) -> None:
        self.fills.append(fill)

    def record_closure(self, closure: Closure) -> None:
        self.closures.append(closure)

    def observe(self, venue: Ledger, ts: int) -> None:
        """Open or close unprotected intervals from the venue's state at ``ts`` (nothing while
        ``suspended``: a benchmark seeding thousands of positions, O(n²) bookkeeping it does not measure)."""
        if self.suspended:
            return
        self._venue = venue
        for key, position in venue.position_items():
            exposed = position.contracts > 0 and not venue.is_protected(*key)
            start = self._open_since.get(key)
            if exposed and start is None:
                self._open_since[key] = ts
            elif not exposed and start is not None:
                del self._open_since[key]
                if ts > start:
                    self._intervals.append((key[0], key[1], start, ts))

    # --- questions -----------------------------------------------------------------------------------

    def unprotected_intervals(
        self, account: str | None = None, symbol: str | None = None
    ) -> list[tuple[str, str, int, int]]:
        """``(account, symbol, start_ms, end_ms)`` while a position had no stop; an open one ends now."""
        now = self._venue.now() if self._venue is not None else 0
        current = [(a, s, start, max(now, start)) for (a, s), start in self._open_since.items()]
        return [
            interval
            for interval in self._intervals + current
            if (account is None or interval[0] == account) and (symbol is None or interval[1] == symbol)
        ]

    def unprotected_ms(self, account: str | None = None, symbol: str | None = None) -> dict[str, int]:
        """``{"max": longest interval, "total": sum}`` in ms."""
        lengths = [end - start for _, _, start, end in self.unprotected_intervals(account, symbol)]
        return {"max": max(lengths, default=0), "total": sum(lengths)}

    def wrong_side_orders(self) -> list[OrderRecord]:
        """Orders meant to reduce whose side would have increased the position at submit time, or opened
        one (docs/incidents.md I-3: a "close" buy on a long)."""
        wrong = []
        for record in self.orders:
            if not record.meant_to_reduce:
                continue
            side = record.position_side_at_submit
            if side is not None:
                if record.side == ("buy" if side == "long" else "sell"):
                    wrong.append(record)
            elif not (record.reduce_only or record.close_position):
                wrong.append(record)  # nothing to reduce, and nothing stops it from opening
        return wrong

    def orders_for_closed_positions(self) -> list[OrderRecord]:
        """Reduce-only conditional orders submitted while their symbol was flat (docs/incidents.md I-5).

        ``close_position`` orders are excluded: placing one before the entry is legitimate.
        """
        return [
            record
            for record in self.orders
            if record.conditional
            and record.reduce_only
            and not record.close_position
            and record.position_contracts_at_submit == 0
        ]

    def closures_for(self, account: str | None = None, symbol: str | None = None) -> list[Closure]:
        return [
            c
            for c in self.closures
            if (account is None or c.account == account) and (symbol is None or c.symbol == symbol)
        ]
