"""The protocols between the core and a driver plugin: where a private stream delivers
(:class:`StreamSink`), how frames are decoded without a socket (:class:`StreamDecoder`), a venue the
contract suite can drive (:class:`VenueHarness`), and what the stream said as the core holds it
(:class:`StreamEvidence`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from framework.models import DriverConfig, OrderUpdate, PositionUpdate, StreamEvent

if TYPE_CHECKING:
    from framework.venue import Venue


@runtime_checkable
class StreamSink(Protocol):
    """Where a driver's private stream delivers what it decoded (the core's PositionBook)."""

    async def on_event(self, event: StreamEvent) -> None:
        """One decoded position or order update."""

    async def on_connected(self, reconnect: bool) -> None:
        """The stream is (again) connected and authenticated; the core takes a REST snapshot now."""

    async def on_disconnected(self, detail: str) -> None:
        """The stream dropped; the driver is reconnecting with backoff."""

    def on_malformed(self, raw: str | bytes, error: Exception) -> None:
        """A frame could not be decoded: counted and logged, the stream goes on."""


@runtime_checkable
class StreamEvidence(Protocol):
    """What the private stream said, as the core holds it (the venue's PositionBook).  A driver whose
    ``run_stream`` sink also implements it asks it its liveness questions (``framework.driverkit``)."""

    def last_update(self, symbol: str) -> PositionUpdate | None:
        """The latest position update applied for ``symbol``."""

    def opening_order(self, symbol: str, client_order_id: str) -> OrderUpdate | None:
        """The latest update of the entry order ``client_order_id`` seen while ``symbol`` is being opened."""

    async def wait_changed(self, symbol: str, timeout_s: float) -> None:
        """Return on the next stream update of ``symbol``, or after ``timeout_s`` seconds."""


@runtime_checkable
class StreamDecoder(Protocol):
    """Turns raw private-stream frames into events, without a socket."""

    def decode(self, raw: str | bytes) -> list[StreamEvent]:
        """Decode one frame exactly as the socket delivered it.

        :returns: the events it carries (empty for acks, pongs and topics of no interest).
        :raises framework.errors.StreamError: the frame is malformed.
        """


@runtime_checkable
class VenueHarness(Protocol):
    """A venue the contract suite can drive: ``async with harness: ...``.

    :ivar config: how the driver connects to it.
    :ivar venue: the simulated venue (ground truth and controls), ``None`` for a live account.
    :ivar symbol: a unified symbol the suite may trade.
    """

    config: DriverConfig
    venue: Venue | None
    symbol: str

    def rest_calls(self) -> Mapping[str, int]:
        """REST calls the venue served so far, by ``"<METHOD> <path>"`` (empty for a live account)."""
        ...

    async def __aenter__(self) -> VenueHarness: ...

    async def __aexit__(self, *exc: object) -> None: ...
