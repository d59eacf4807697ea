"""The simulated, exchange-agnostic venue behind the Binance / Bybit wire façades (``docs/venue-api.md``)."""

from framework.venue.core import Venue
from framework.venue.faults import Faults, FrameShaper, parse_faults
from framework.venue.harness import EmulatorHarness
from framework.venue.model import (
    BalanceEvent,
    FillEvent,
    Instrument,
    MarkPriceEvent,
    OrderEvent,
    PositionEvent,
    VenueEvent,
    VenueOrder,
    VenuePosition,
    VenueReject,
    default_instruments,
)
from framework.venue.prices import Candle, PricePath, PricePoint, Replayer, candles
from framework.venue.truth import Closure, GroundTruth, OrderRecord
from framework.venue.wire import StreamSocket, WireEmulator, WireError

__all__ = [
    "BalanceEvent",
    "Candle",
    "Closure",
    "EmulatorHarness",
    "Faults",
    "FillEvent",
    "FrameShaper",
    "GroundTruth",
    "Instrument",
    "MarkPriceEvent",
    "OrderEvent",
    "OrderRecord",
    "PositionEvent",
    "PricePath",
    "PricePoint",
    "Replayer",
    "StreamSocket",
    "Venue",
    "VenueEvent",
    "VenueOrder",
    "VenuePosition",
    "VenueReject",
    "WireEmulator",
    "WireError",
    "candles",
    "default_instruments",
    "parse_faults",
]
