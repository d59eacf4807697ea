"""The framework's exceptions: one tree, each carrying the venue, symbol and order id where they apply.

::

    FrameworkError
    ├── ConfigError                  bad settings, unknown plugin name, misspelt hook
    │   └── PluginNotFound           ``--plugins`` names a plugin that is not installed
    ├── StoreError                   the database refused or lost a write
    │   └── DuplicateOpenPosition    a second open position for one account/venue/symbol
    └── VenueError                   anything a venue (or the path to it) answered
        ├── PositionGone             the venue says there is no position: *closed*, never *retry*
        ├── OrderIncomplete          side / amount / status of an order cannot be established
        ├── OrderRejected            the venue refused the order; nothing was filled
        │   ├── DuplicateOrderId     refused: an order with this client order id exists
        │   └── RequestExpired       refused as older than its receive window (Binance -1021, Bybit 10002)
        │       └── RequestFenced    not sent: it could outlive this instance's lease (also a LeaseLost)
        ├── WouldTriggerImmediately  the stop is already on the wrong side of the mark price
        ├── OrderNotFound            the venue does not know this order id / client order id
        ├── OutcomeUnknown           the request may or may not have been accepted (timeout, 5xx)
        ├── RateLimited              429 / 418 / Bybit 10006: slow down, then retry
        ├── StreamError              the private stream failed to connect, authenticate or decode
        └── RollbackFailed           a rollback could not prove the venue flat afterwards

``PositionGone`` is deliberately not a subclass of anything retryable: the engine treats it as evidence
of closure (docs/incidents.md I-1, I-4).  ``OutcomeUnknown`` is resolved by client order id, never assumed
to be a rejection (docs/incidents.md I-3).
"""

from __future__ import annotations


class FrameworkError(Exception):
    """Root of every error the framework raises on purpose.

    :param message: human-readable explanation; never contains secrets.
    :param venue: venue name (``binance``, ``bybit``…) when the error concerns one.
    :param symbol: unified ccxt symbol such as ``XRP/USDT:USDT`` when the error concerns one.
    :param order_id: the venue's order id, or the client order id, when the error concerns one.
    """

    def __init__(
        self,
        message: str,
        *,
        venue: str | None = None,
        symbol: str | None = None,
        order_id: str | None = None,
    ) -> None:
        self.message = message
        self.venue = venue
        self.symbol = symbol
        self.order_id = order_id
        super().__init__(message)

    def __str__(self) -> str:
        where = [part for part in (self.venue, self.symbol) if part]
        if self.order_id:
            where.append(f"order {self.order_id}")
        prefix = f"{' '.join(where)}: " if where else ""
        return f"{prefix}{self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, venue={self.venue!r}, "
            f"symbol={self.symbol!r}, order_id={self.order_id!r})"
        )


class ConfigError(FrameworkError):
    """Settings, plugin selection or a plugin's hook implementations are invalid."""


class PluginNotFound(ConfigError):
    """A requested plugin name is not installed; the message lists the installed ones."""


class StoreError(FrameworkError):
    """The database refused or lost a write."""


class DuplicateOpenPosition(StoreError):
    """A second open position for one account/venue/symbol was refused by the unique index."""


class VenueError(FrameworkError):
    """Anything a venue answered (or failed to answer) that the caller must handle.

    :param code: the venue's own error code (Binance ``-2021``, Bybit ``10001``…) when known.
    """

    def __init__(self, message: str, *, code: int | str | None = None, **where: str | None) -> None:
        self.code = code
        super().__init__(message, **where)


class PositionGone(VenueError):
    """The venue reports that the position does not exist (any more).

    Source: Bybit ``retCode 10001`` "can not set tp/sl/ts for zero position"; Binance ``-2022``
    ReduceOnly rejected / unknown-position answers.  The engine closes the position on this error and
    never retries the action that raised it.
    """


class OrderIncomplete(VenueError):
    """Side, amount or status of an order could not be established, even after asking the venue.

    Raised instead of normalising a minimal response into a guessed value (docs/incidents.md I-3).
    """


class OrderRejected(VenueError):
    """The venue refused the order and nothing was filled."""


class RequestExpired(OrderRejected):
    """The venue refused a signed request as outside its receive window: signed longer ago than its
    ``recvWindow`` (or too far in the future) when it arrived (Binance ``-1021``, Bybit ``10002``).  It was not
    executed: nothing was done, and nothing is known about the position from it (never "position gone").

    Under a lease this is the fence at work: a request signed before a pause and delivered after the lease
    could have passed to another instance (``docs/scaling.md``).
    """


class DuplicateOrderId(OrderRejected):
    """The venue refused the order because an order with its client order id already exists; nothing was
    placed (ccxt's ``DuplicateOrderId``).

    Source: Binance ``-4116`` "clientOrderId is duplicated" (ids unique among open orders), Bybit ``110072``
    "OrderLinkedID is duplicate" (``orderLinkId`` "always unique"); docs/conformance.md B9, Y7.  Only an
    operation that places the caller's id exactly once raises it (``create_stop_loss_order``): an entry or a
    stop resolves the same answer to the order that exists (a retry after a lost answer).
    """


class WouldTriggerImmediately(VenueError):
    """A stop's trigger price is already crossed by the mark price (Binance ``-2021``).

    The engine answers with a reduce-only close rather than a retry (docs/incidents.md I-5).
    """


class OrderNotFound(VenueError):
    """The venue does not know this order (Binance ``-2011`` / ``-2013``, Bybit ``110001``)."""


class OutcomeUnknown(VenueError):
    """A request may have been accepted even though no answer came (timeout, 5xx).

    Resolve it by client order id; never treat it as a rejection.
    """


class RateLimited(VenueError):
    """The venue asked us to slow down (HTTP 429/418, Binance ``-1003``, Bybit ``10006`` / HTTP 403).

    The request was refused, not executed.  The core pauses every call to that venue for
    ``retry_after_ms`` (the venue's ``Retry-After``) or, when the venue did not say, a growing backoff.

    :param retry_after_ms: how long the venue asked us to wait, in milliseconds, when it said.
    """

    def __init__(self, message: str, *, retry_after_ms: int | None = None, code: int | str | None = None,
                 **where: str | None) -> None:
        self.retry_after_ms = retry_after_ms
        super().__init__(message, code=code, **where)


class StreamError(VenueError):
    """The private stream could not connect, authenticate, or a frame could not be decoded."""


class RollbackFailed(VenueError):
    """A rollback ran but the venue could not be shown flat afterwards: a human must look."""


class LeaseLost(FrameworkError):
    """This instance does not hold (or can no longer prove it holds) the lease of a venue account: it must
    not act on that account (``framework.engine.lease``)."""


class RequestFenced(RequestExpired, LeaseLost):
    """A signed request that can change the account was not sent: it would have been accepted by the venue
    until after this instance's lease could have passed to another instance (its signing time plus the
    receive window and the allowed clock skew reach beyond the lease's local end).  Nothing was sent, so
    nothing was done (:func:`framework.driverkit.fence_requests`)."""
