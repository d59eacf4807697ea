"""Venue-agnostic helpers shared by the exchange driver plugins.

* :class:`Backoff` — capped exponential backoff with full jitter from an instance RNG (reconnects).
* :func:`attach_stream_state` — while ``run_stream`` runs, the connection keeps the core's stream state (the
  sink, when it is also :class:`~framework.protocols.StreamEvidence`: the PositionBook); the book is the one
  stream state, a driver keeps no copy.  :func:`stream_flat_since` and :func:`wait_stream_change` ask it
  (liveness checks before a venue action, waits that wake on stream updates), conservatively without it.
* :func:`decode_frame` — decode one frame; any failure is a counted malformed frame, never a stream restart.
* :func:`trailing_start` — where a trailing stop placed now would first rest.
* :func:`poll_sources` — ask several sources in order, again and again, within a time budget, waking up
  early when the stream changes (``verify_position``).
* :class:`ErrorTable`, :func:`translate_error`, :func:`venue_errors` — a venue's errors declared as a table
  (code → framework error, exact and by message, like ccxt's ``exceptions`` exact / broad tables) and the one
  function that applies it.
* :class:`RequestFence`, :func:`fence_requests` — under a lease, a ccxt client's signed requests live no longer
  than the lease: the receive window is bounded and every request that can change the account is checked
  after it is signed, just before it is sent (``docs/scaling.md``).

Nothing here knows an exchange; times are milliseconds since the epoch (UTC) unless named ``*_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, Protocol, TypeVar, cast

from framework.errors import OrderRejected, OutcomeUnknown, RateLimited, RequestExpired, StreamError, VenueError
from framework.models import MarketLimits, PositionSide, StreamEvent, TrailingSpec
from framework.protocols import StreamDecoder, StreamEvidence, StreamSink

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


class HoldsStreamState(Protocol):
    """A driver connection that keeps the core's stream state while its private stream runs."""

    stream_state: StreamEvidence | None


@contextlib.contextmanager
def attach_stream_state(conn: HoldsStreamState, sink: StreamSink) -> Iterator[StreamEvidence | None]:
    """For the duration of ``run_stream``: when ``sink`` also implements :class:`StreamEvidence` (the core's
    PositionBook does), ``conn.stream_state`` is that sink, so the driver's liveness questions ask the one
    stream state the core holds; on exit the previous value is put back (``None`` once no stream runs).
    A sink that is no evidence changes nothing: a driver without evidence asks the venue (see
    :func:`stream_flat_since`).

    :returns: the evidence in force while the stream runs (``None``: none).
    """
    if not isinstance(sink, StreamEvidence):
        yield conn.stream_state
        return
    previous, conn.stream_state = conn.stream_state, sink
    try:
        yield sink
    finally:
        if conn.stream_state is sink:  # a stream started later on the same connection may have replaced it
            conn.stream_state = previous


def stream_flat_since(state: StreamEvidence | None, symbol: str, since_ms: int) -> bool:
    """Whether the stream's latest position update of ``symbol`` is flat and stamped at or after ``since_ms``
    (venue time, ms since the epoch; an older flat frame predates the open it would contradict).

    Without evidence (``state is None``: the sink is not the core's book, or no stream runs) the answer is
    ``False``, "not known flat", so the caller asks the venue: never "flat" on no evidence.
    """
    update = state.last_update(symbol) if state is not None else None
    return update is not None and update.contracts == 0 and update.timestamp >= since_ms


async def wait_stream_change(state: StreamEvidence | None, symbol: str | None, timeout_s: float) -> None:
    """Return on the next stream update of ``symbol`` (:meth:`StreamEvidence.wait_changed`), or after
    ``timeout_s`` seconds; without evidence or a symbol it just waits ``timeout_s`` (a polling interval)."""
    if timeout_s <= 0:
        return
    if state is None or symbol is None:
        await asyncio.sleep(timeout_s)
        return
    await state.wait_changed(symbol, timeout_s)


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


def trailing_start(side: PositionSide, trailing: TrailingSpec, reference_price: Decimal) -> Decimal:
    """The stop of a trailing stop placed now: ``callback_rate`` percent behind its activation price, else
    behind ``reference_price`` (below for a long, above for a short), in quote currency."""
    start = trailing.activation_price or reference_price
    offset = start * trailing.callback_rate / 100
    return start - offset if side == "long" else start + offset


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
    :meth:`StreamEvidence.wait_changed`), whichever comes first.  A source call is cut off when the budget
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


# --- venue errors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRule:
    """What one venue error means: ``error`` when the call wrote (created an order), ``on_read`` (default:
    the same) when it only read; ``note`` is added to the message."""

    error: type[VenueError]
    on_read: type[VenueError] | None = None
    note: str = ""

    def error_for(self, write: bool) -> type[VenueError]:
        return self.error if write or self.on_read is None else self.on_read


#: the request may have been executed (timeout, 5xx): :class:`OutcomeUnknown` for a write
UNKNOWN = ErrorRule(OutcomeUnknown, on_read=VenueError)
#: the venue refused: :class:`OrderRejected` for a write
REFUSED = ErrorRule(OrderRejected, on_read=VenueError)

Rule = type[VenueError] | ErrorRule


class VenueAnswer(Protocol):
    """An error answer of the venue as the driver's client raised it."""

    @property
    def code(self) -> int | None: ...
    @property
    def msg(self) -> str: ...
    @property
    def status(self) -> int | None: ...  # HTTP status, when known
    @property
    def retry_after_ms(self) -> int | None: ...  # how long the venue asked to wait, when it said


@dataclass(frozen=True)
class ErrorTable:
    """A venue's errors, declared (after ccxt's ``exceptions`` exact / broad tables).

    An error answer (an instance of ``answer``, a :class:`VenueAnswer`) is looked up: ``broad`` (code →
    message substring → rule) first, then ``exact`` (code → rule), then ``by_status`` (HTTP status → rule),
    then ``server_error`` for a status of 500 or more, then ``fallback``.  Any other exception goes through
    ``by_type`` (the first class it is an instance of; transport failures), else a :class:`VenueError`.

    :ivar describe: the message of an error answer, formatted with ``action``, ``code`` and ``msg``.
    """

    venue: str
    answer: type[BaseException]
    describe: str
    exact: Mapping[int, Rule]
    broad: Mapping[int, Mapping[str, Rule]] = field(default_factory=dict)
    by_status: Mapping[int, Rule] = field(default_factory=dict)
    server_error: Rule | None = None
    fallback: Rule = REFUSED
    by_type: Sequence[tuple[type[BaseException], Rule]] = ()

    def rule_for(self, answer: VenueAnswer) -> ErrorRule:
        code, status = answer.code, answer.status
        found = next((rule for text, rule in self.broad.get(code, {}).items() if text in answer.msg), None) \
            if code is not None else None
        if found is None and code is not None:
            found = self.exact.get(code)
        if found is None and status is not None:
            found = self.by_status.get(status) or (self.server_error if status >= 500 else None)
        found = found or self.fallback
        return found if isinstance(found, ErrorRule) else ErrorRule(found)

    def handles(self, exc: BaseException) -> bool:
        return isinstance(exc, (VenueError, self.answer, *(kind for kind, _ in self.by_type)))


def translate_error(table: ErrorTable, exc: BaseException, action: str, *, write: bool = False,
                    symbol: str | None = None, order_id: str | None = None) -> VenueError:
    """``exc`` (raised by ``action``) as a :mod:`framework.errors` error, by ``table``; a :class:`VenueError`
    is returned as it is.

    :param write: the call may have changed the venue (order creation): a timeout / 5xx is then
        :class:`OutcomeUnknown` and a refusal :class:`OrderRejected` (see :data:`UNKNOWN`, :data:`REFUSED`).
    """
    if isinstance(exc, VenueError):
        return exc
    where: dict[str, str | None] = {"venue": table.venue, "symbol": symbol, "order_id": order_id}
    retry_after_ms, code = None, None
    if isinstance(exc, table.answer):
        answer = cast(VenueAnswer, exc)
        rule, code, retry_after_ms = table.rule_for(answer), answer.code, answer.retry_after_ms
        message = table.describe.format(action=action, code=code, msg=answer.msg) + rule.note
    else:
        found = next((rule for kind, rule in table.by_type if isinstance(exc, kind)), VenueError)
        rule = found if isinstance(found, ErrorRule) else ErrorRule(found)
        message = f"{action}: {type(exc).__name__}: {str(exc)[:300]}"
    error = rule.error_for(write)
    if issubclass(error, RateLimited):
        return error(message, code=code, retry_after_ms=retry_after_ms, **where)
    return error(message, code=code, **where)


def header_number(headers: object, name: str) -> float | None:
    """Response header ``name`` (any case) as a number; ``None`` when absent, not a mapping, or not a number
    (the venues' rate-limit headers: ``Retry-After``, ``X-MBX-USED-WEIGHT-1M``, ``X-Bapi-Limit-Reset-Timestamp``)."""
    if not isinstance(headers, Mapping):
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == name.lower()), None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def venue_errors(table: ErrorTable, action: str, *, write: bool = False, symbol: str | None = None,
                 order_id: str | None = None) -> Iterator[None]:
    """:func:`translate_error` for what the block raises (only what ``table`` handles; others pass)."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, VenueError) or not table.handles(exc):
            raise
        raise translate_error(table, exc, action, write=write, symbol=symbol, order_id=order_id) from exc


#: the venue refused a signed request as outside its receive window (Binance -1021, Bybit 10002): not executed;
#: a :class:`RequestExpired` (an :class:`OrderRejected`) for a write, a plain :class:`VenueError` for a read
EXPIRED = ErrorRule(RequestExpired, on_read=VenueError)


# --- request fencing (leases) ------------------------------------------------------------------------


class RequestFence(Protocol):
    """What a driver's transport asks before sending a request that can change the account, under a lease
    (the core's :class:`~framework.engine.lease.LeaseKeeper` is one; ``DriverConfig.fence``).

    :ivar recv_window_ms: the longest a signed request may stay acceptable to the venue after it was signed:
        the receive window (Binance ``recvWindow``, Bybit ``X-BAPI-RECV-WINDOW``) the driver must sign with.
    """

    @property
    def recv_window_ms(self) -> int: ...

    def admit(self) -> None:
        """Called after a request is signed, just before it is sent.

        :raises RequestFenced: the request, signed now, could still be accepted by the venue after this
            instance's lease could have passed to another instance: it must not be sent.
        """


#: HTTP methods that only read: never fenced (a standby may look)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def fence_requests(exchange: Any, fence: RequestFence | None, *, recv_window_option: str = "recvWindow") -> None:
    """Make a ccxt async client's signed requests unable to outlive ``fence``'s lease (``None``: no lease,
    nothing changes).  Call it once, where the driver builds its client.

    * The receive window the client signs with (ccxt's ``options[recv_window_option]``: ``recvWindow`` for
      both ``binanceusdm`` and ``bybit``) is lowered to ``fence.recv_window_ms``: the venue refuses a request
      that arrives later than that after its timestamp (Binance -1021, Bybit 10002; map those to
      :data:`EXPIRED`).
    * Every request that can change the account (any HTTP method but a read) calls ``fence.admit()`` after
      ccxt signed it, just before it is sent (``exchange.fetch`` runs right after ``sign``, with no wait
      between), so a request signed too close to the lease's end is never sent (:class:`RequestFenced`).

    A request that passed the check and then waits (a paused process, a slow connect) is refused by the
    venue once its window is over, before the lease can have passed on: docs/scaling.md gives the argument.
    """
    if fence is None:
        return
    configured = exchange.options.get(recv_window_option)
    window = fence.recv_window_ms if configured is None else min(int(configured), fence.recv_window_ms)
    exchange.options[recv_window_option] = window
    send = exchange.fetch

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        if method.upper() not in READ_METHODS:
            fence.admit()
        return await send(url, method, headers, body)

    exchange.fetch = fetch


def ccxt_market_limits(exchange: Any, symbol: str, venue: str) -> MarketLimits:
    """:class:`~framework.models.MarketLimits` of ``symbol`` from a ccxt client's loaded markets
    (``exchange.market(symbol)``): ``limits.amount.min``, ``precision.amount`` (the step: ccxt's TICK_SIZE
    mode for both venues) and ``limits.cost.min``, ``precision.price`` (the tick).

    :raises VenueError: the venue lists no such symbol, or its market gives no minimum size, step or tick.
    """
    import ccxt  # type: ignore[import-untyped]  # here, not at the top: importing the core must not load ccxt

    try:
        market: Mapping[str, Any] = exchange.market(symbol)
    except ccxt.BadSymbol as exc:
        raise VenueError(f"unknown symbol {symbol!r}", venue=venue, symbol=symbol) from exc
    limits = market.get("limits") or {}
    minimum = (limits.get("amount") or {}).get("min")
    precision = market.get("precision") or {}
    step, tick = precision.get("amount"), precision.get("price")
    cost = (limits.get("cost") or {}).get("min")
    if not minimum or not step or not tick:
        raise VenueError(f"the market listing gives no minimum size, step or tick (min {minimum}, step {step}, "
                         f"tick {tick})", symbol=symbol)
    return MarketLimits(symbol=symbol, min_contracts=Decimal(str(minimum)), contract_step=Decimal(str(step)),
                        price_tick=Decimal(str(tick)), min_notional=Decimal(str(cost)) if cost else None)
