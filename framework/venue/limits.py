"""Request accounting and connection lifetimes on the venue's clock, shared by the wire façades.

Nothing here knows an exchange: a façade charges a :class:`FixedWindow` per request and answers with its
venue's headers and codes (Binance ``X-MBX-USED-WEIGHT-1M`` / 429 / 418, Bybit ``X-Bapi-Limit-*`` / 10006 /
403); it keeps listen keys and sockets in a :class:`Lifetimes` and ends what :meth:`Lifetimes.lapsed`
returns.  Times are ms since the epoch from ``venue.now()``, so a test with a fake clock spends an hour of
venue time without waiting for it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class FixedWindow:
    """A budget of ``limit`` units per window of ``window_ms``, windows aligned on multiples of it (Binance
    counts weight per calendar minute; Bybit's "rolling" second is approximated so, an assumption).

    :ivar used: units charged in the current window.
    """

    window_ms: int
    limit: int
    used: int = 0
    _start: int = -1

    def charge(self, now_ms: int, cost: int = 1) -> bool:
        """Charge ``cost`` at ``now_ms``.  :returns: whether the window's budget still holds."""
        start = now_ms - now_ms % self.window_ms
        if start != self._start:
            self._start, self.used = start, 0
        self.used += cost
        return self.used <= self.limit

    def remaining(self) -> int:
        """Units left in the current window (0 once exceeded)."""
        return max(0, self.limit - self.used)

    def reset_at(self, now_ms: int) -> int:
        """When the current window ends (ms since the epoch)."""
        return now_ms - now_ms % self.window_ms + self.window_ms


@dataclass
class Ban:
    """Every request refused until :attr:`until_ms` (0: not banned)."""

    until_ms: int = 0

    def active(self, now_ms: int) -> bool:
        return now_ms < self.until_ms

    def impose(self, now_ms: int, duration_ms: int) -> None:
        self.until_ms = max(self.until_ms, now_ms + duration_ms)

    def remaining_s(self, now_ms: int) -> int:
        """Whole seconds left, at least 1 while active (what a ``Retry-After`` header carries)."""
        return max(1, -(-(self.until_ms - now_ms) // 1000)) if self.active(now_ms) else 0


@dataclass
class Lifetimes(Generic[K]):
    """Things that lapse at a deadline unless extended: listen keys, connections.

    ``start(key, now, ttl)`` sets ``now + ttl``; ``extend`` moves it again (a keep-alive); ``lapsed(now)``
    removes and returns every key whose deadline has passed.
    """

    _deadline: dict[K, int] = field(default_factory=dict)

    def start(self, key: K, now_ms: int, ttl_ms: int) -> None:
        self._deadline[key] = now_ms + ttl_ms

    def extend(self, key: K, now_ms: int, ttl_ms: int) -> bool:
        """:returns: ``False`` when ``key`` is not (or no longer) alive."""
        if key not in self._deadline:
            return False
        self._deadline[key] = now_ms + ttl_ms
        return True

    def deadline(self, key: K) -> int | None:
        return self._deadline.get(key)

    def discard(self, key: K) -> None:
        self._deadline.pop(key, None)

    def lapsed(self, now_ms: int) -> list[K]:
        gone = [key for key, deadline in self._deadline.items() if deadline <= now_ms]
        for key in gone:
            del self._deadline[key]
        return gone
