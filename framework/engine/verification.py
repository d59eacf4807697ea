"""Entry verification, once for every venue: did this entry produce a position? (docs/incidents.md I-3, I-4)

The core's answer to the driver hook ``verify_position``, shipped as a built-in plugin of that hook
(registered ``trylast``, like pytest's built-ins): a driver answers the hook itself only to add a source
its venue has, and may still call :func:`verify_entry` for the rest.

Sources, asked in this order, again and again within the budget, waking early on every stream update of
the symbol:

1. **stream** — the PositionBook: the entry order's own stream update seen during the open (filled →
   confirmed; ended with nothing filled → absent), or a position update on the intent's side no older than
   the entry order;
2. **order** — the order's status by id / client order id (``fetch_order``); "not found" is lag, not
   absence;
3. **rest** — the positions of a venue snapshot (``fetch_snapshot``).

``absent`` needs the venue to say the order ended with nothing filled; REST not listing the position is
never absence, and when no source can tell within the budget the answer is ``unknown``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from framework.driverkit import PollSource, poll_sources
from framework.errors import OrderNotFound, StreamError, VenueError
from framework.hookspecs import hookimpl
from framework.models import Order, OrderIntent, Verification

if TYPE_CHECKING:
    from framework.protocols import DriverSession, EntryEvidence, StreamEvidence

log = logging.getLogger(__name__)

ENDED = ("rejected", "canceled", "expired")
ROUND_MS = 200  # between rounds, unless a stream update wakes the poll earlier
ORDER_EVERY_MS = 500  # one order-status call at most this often
REST_EVERY_MS = 1_000  # one snapshot at most this often


def _judge(order: Order | None, source: str) -> Verification | None:
    """What an order's state proves: filled → confirmed, ended with nothing filled → absent, else nothing."""
    if order is None:
        return None
    if order.filled > 0:
        return Verification(outcome="confirmed", source=source, contracts=order.filled,  # type: ignore[arg-type]
                            entry_price=order.average, detail=f"order {order.id} {order.status}")
    if order.status in ENDED:
        return Verification(outcome="absent", source=source,  # type: ignore[arg-type]
                            detail=f"order {order.id} {order.status}, nothing filled")
    return None


async def verify_entry(
    driver: DriverSession, stream: StreamEvidence, intent: OrderIntent, order: Order, budget_ms: int, *,
    round_ms: int = ROUND_MS, order_every_ms: int = ORDER_EVERY_MS, rest_every_ms: int = REST_EVERY_MS,
) -> Verification:
    """Decide whether the entry ``order`` of ``intent`` produced a position, within ``budget_ms``.

    :param driver: the venue's driver (``fetch_order``, ``fetch_snapshot``).
    :param stream: what the private stream said (the venue's PositionBook).
    :param order: the normalised entry order; when it is the venue's own answer that the order ended
        with nothing filled, that answer decides at once.
    :returns: a :class:`~framework.models.Verification` with ``elapsed_ms`` set.
    """
    if order.filled == 0 and order.status in ENDED:
        return Verification(outcome="absent", source="order", detail=f"order {order.id} {order.status} at creation")
    since = order.timestamp or intent.created_at
    cid = order.client_order_id or intent.client_order_id

    async def from_stream() -> Verification | None:
        update = stream.last_update(intent.symbol)
        if update is not None and update.contracts > 0 and update.side == intent.side and update.timestamp >= since:
            return Verification(outcome="confirmed", source="stream", contracts=update.contracts,
                                entry_price=update.entry_price, detail=f"position seq {update.sequence}")
        seen = stream.opening_order(intent.symbol, cid)
        return _judge(seen.order if seen else None, "stream")

    async def from_order() -> Verification | None:
        try:
            return _judge(await driver.fetch_order(intent.symbol, order.id, cid), "order")
        except OrderNotFound:
            return None  # not visible yet is not evidence of absence
        except (VenueError, StreamError) as exc:
            log.warning("%s %s verify: order source failed: %s", intent.venue, intent.symbol, exc)
            return None

    async def from_rest() -> Verification | None:
        try:
            snapshot = await driver.fetch_snapshot()
        except (VenueError, StreamError) as exc:
            log.warning("%s %s verify: snapshot source failed: %s", intent.venue, intent.symbol, exc)
            return None
        for position in snapshot.positions:
            if position.symbol == intent.symbol and position.side == intent.side:
                return Verification(outcome="confirmed", source="rest", contracts=position.contracts,
                                    entry_price=position.entry_price)
        return None

    result = await poll_sources(
        [PollSource("stream", from_stream), PollSource("order", from_order, every_ms=order_every_ms),
         PollSource("rest", from_rest, every_ms=rest_every_ms)],
        budget_ms,
        wake=lambda timeout_s: stream.wait_changed(intent.symbol, timeout_s),
        round_interval_ms=round_ms,
    )
    if result.answer is None:
        return Verification(outcome="unknown", source="none", elapsed_ms=result.elapsed_ms,
                            detail=f"no source could tell within {budget_ms} ms")
    return result.answer.model_copy(update={"elapsed_ms": result.elapsed_ms})


class CoreVerification:
    """The built-in plugin answering ``verify_position`` for every driver that does not answer it."""

    @hookimpl(trylast=True)
    async def verify_position(
        self, intent: OrderIntent, order: Order, budget_ms: int, evidence: EntryEvidence
    ) -> Verification:
        return await verify_entry(evidence.driver, evidence.stream, intent, order, budget_ms)
