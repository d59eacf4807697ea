"""Venue-agnostic helpers shared by the exchange driver plugins.

* :class:`Backoff` — capped exponential backoff with full jitter from an instance RNG (reconnects).
* :class:`StreamCache` — the latest :class:`~framework.models.PositionUpdate` per symbol and
  :class:`~framework.models.OrderUpdate` per order seen on a private stream, with an asyncio change
  notification (``verify_position``'s first source, the liveness check of a stop move).
* :func:`decode_frame` — decode one frame; any failure is a counted malformed frame, never a stream restart.
* :func:`poll_sources` — ask several sources in order, again and again, within a time budget, waking up
  early when the stream cache changes (``verify_position``).

Nothing here knows an exchange; times are milliseconds since the epoch (UTC) unless named ``*_s``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from framework.errors import StreamError
from framework.models import OrderUpdate, PositionUpdate, StreamEvent
from framework.protocols import StreamDecoder, StreamSink

T = TypeVar("T")


class Backoff:
    """Exponential backoff with full jitter: attempt *n* waits ``uniform(0, min(cap, base * 2**n))``
    seconds, but never less than ``floor_s`` (so a tight reconnect loop cannot spin).

    :param base_s: first ceiling, seconds.
    :param cap_s: largest ceiling, seconds.
    :param floor_s: smallest delay, seconds.
    :param rng: the random source (seeded in tests); a private ``random.Random()`` by default.
    """

    def __init__(
        self, base_s: float = 0.5, cap_s: float = 30.0, floor_s: float = 0.05, rng: random.Random | None = None
    ) -> None:
        if base_s <= 0 or cap_s < base_s or floor_s < 0:
            raise ValueError("need 0 < base_s <= cap_s and floor_s >= 0")
        self.base_s = base_s
        self.cap_s = cap_s
        self.floor_s = min(floor_s, cap_s)
        self.rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds; counts the attempt."""
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.attempts, 62)))
        self.attempts += 1
        return max(self.floor_s, self.rng.uniform(0, ceiling))

    def reset(self) -> None:
        """Call after a success: the next failure starts from ``base_s`` again."""
        self.attempts = 0


class StreamCache:
    """What the private stream last said, per symbol and per order, with a change notification.

    Position updates older than the one held (lower ``sequence``) are ignored, so a late or reordered
    frame never resurrects a closed position (docs/incidents.md I-2).  Orders are indexed by venue id and by
    client order id.
    """

    def __init__(self) -> None:
        self.positions: dict[str, PositionUpdate] = {}
        self._orders_by_id: dict[str, OrderUpdate] = {}
        self._orders_by_client_id: dict[str, OrderUpdate] = {}
        self.version = 0
        self._changed = asyncio.Event()

    def apply(self, event: StreamEvent) -> bool:
        """Record one decoded event.

        :returns: ``True`` when the cache changed (anything but a stale position update or a mark price).
        """
        if isinstance(event, PositionUpdate):
            held = self.positions.get(event.symbol)
            if held is not None and event.sequence < held.sequence:
                return False
            self.positions[event.symbol] = event
        elif isinstance(event, OrderUpdate):
            self._orders_by_id[event.order.id] = event
            if event.order.client_order_id:
                self._orders_by_client_id[event.order.client_order_id] = event
        else:
            return False
        self.version += 1
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    def position(self, symbol: str) -> PositionUpdate | None:
        """The latest position update for ``symbol`` (``contracts == 0`` means the stream said flat)."""
        return self.positions.get(symbol)

    def order(self, order_id: str | None = None, client_order_id: str | None = None) -> OrderUpdate | None:
        """The latest update of an order, by venue id first, then by client order id."""
        if order_id is not None and order_id in self._orders_by_id:
            return self._orders_by_id[order_id]
        if client_order_id is not None:
            return self._orders_by_client_id.get(client_order_id)
        return None

    async def wait_changed(self, timeout_s: float) -> bool:
        """Wait until the next change, at most ``timeout_s`` seconds.

        :returns: ``True`` when something changed, ``False`` on timeout.
        """
        if timeout_s <= 0:
            return False
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


def decode_frame(decoder: StreamDecoder, raw: str | bytes, sink: StreamSink) -> list[StreamEvent]:
    """Decode one frame as the socket delivered it; a frame that fails to decode, with whatever error (a
    ``RecursionError`` on 100k-deep nesting, an ``OverflowError`` on ``"T": Infinity``, a validation error
    on an absurd size), goes to ``sink.on_malformed`` as a :class:`StreamError` and yields nothing: counted
    and logged, never the end of the stream (issue 14).
    """
    try:
        return decoder.decode(raw)
    except StreamError as exc:
        sink.on_malformed(raw, exc)
    except Exception as exc:  # a decoder bug or a hostile frame: the stream must go on
        sink.on_malformed(raw, StreamError(f"undecodable frame: {type(exc).__name__}: {str(exc)[:200]}"))
    return []


@dataclass
class PollSource(Generic[T]):
    """One source for :func:`poll_sources`.

    :ivar name: what the answer's ``source`` will say (``stream``, ``order``, ``rest``…).
    :ivar ask: coroutine function returning an answer, or ``None`` for "cannot tell yet".
    :ivar every_ms: ask at most this often (0 = every round); keeps REST sources from hammering.
    """

    name: str
    ask: Callable[[], Awaitable[T | None]]
    every_ms: int = 0
    last_asked_ms: float = float("-inf")


@dataclass(frozen=True)
class PollResult(Generic[T]):
    """The first answer found (``None`` when the budget ran out), which source gave it, and the time spent."""

    answer: T | None
    source: str | None
    elapsed_ms: int
    rounds: int


def _monotonic_ms() -> float:
    return time.monotonic() * 1000


async def poll_sources(
    sources: Sequence[PollSource[T]],
    budget_ms: int,
    *,
    wake: Callable[[float], Awaitable[object]] | None = None,
    round_interval_ms: int = 200,
) -> PollResult[T]:
    """Ask ``sources`` in order until one answers (not ``None``) or ``budget_ms`` runs out.

    Between rounds it waits ``round_interval_ms`` or until ``wake(timeout_s)`` returns (typically
    :meth:`StreamCache.wait_changed`), whichever comes first.  A source call is cut off when the budget
    runs out.  Every source is asked at least once, even with a budget of 0.

    :returns: a :class:`PollResult`; ``answer is None`` means no source could tell within the budget.
    """
    start = _monotonic_ms()
    deadline = start + max(0, budget_ms)
    rounds = 0
    while True:
        rounds += 1
        for source in sources:
            now = _monotonic_ms()
            if rounds > 1 and now - source.last_asked_ms < source.every_ms:
                continue
            source.last_asked_ms = now
            remaining_s = max(deadline - now, 0) / 1000
            try:
                if rounds == 1:  # the first round always completes: a 0 budget still asks once
                    answer = await source.ask()
                else:
                    answer = await asyncio.wait_for(source.ask(), remaining_s)
            except TimeoutError:
                answer = None
            if answer is not None:
                return PollResult(answer, source.name, int(_monotonic_ms() - start), rounds)
        remaining_ms = deadline - _monotonic_ms()
        if remaining_ms <= 0:
            return PollResult(None, None, int(_monotonic_ms() - start), rounds)
        pause_s = min(round_interval_ms, remaining_ms) / 1000
        if wake is not None:
            await wake(pause_s)
        else:
            await asyncio.sleep(pause_s)
