"""framework: keeps crypto-futures positions safe on Binance USDⓈ-M and Bybit v5.

A strategy in the same process uses :class:`framework.Session` (:mod:`framework.session`).  The public
surface for plugin authors is this module's ``__all__``: the hook markers, the models in
ccxt's vocabulary, the exception tree, the protocols between the core and a driver (a driver's ``connect``
returns a :class:`DriverSession`), and the driver kit.
Exchange drivers and lifecycle plugins are found through entry-point group ``framework``; the hooks are
specified in :mod:`framework.hookspecs`.  A driver's venue emulator builds on :mod:`framework.venue`.
"""

from typing import Any

from framework.cassette import record_transport, ws_connect
from framework.driverkit import (
    REFUSED,
    UNKNOWN,
    Backoff,
    ErrorRule,
    ErrorTable,
    PollSource,
    attach_stream_state,
    ccxt_market_limits,
    decode_frame,
    header_number,
    poll_sources,
    stream_flat_since,
    trailing_start,
    translate_error,
    venue_errors,
    wait_stream_change,
)
from framework.errors import (
    ConfigError,
    DuplicateOpenPosition,
    DuplicateOrderId,
    FrameworkError,
    OrderIncomplete,
    OrderNotFound,
    OrderRejected,
    OutcomeUnknown,
    PluginNotFound,
    PositionGone,
    RateLimited,
    RollbackFailed,
    StoreError,
    StreamError,
    VenueError,
    WouldTriggerImmediately,
)
from framework.hookspecs import hookimpl, hookspec
from framework.marksockets import Ack, MarkSocketPool, SubscriptionRules, WatchedSymbols, watched
from framework.models import (
    Alert,
    Capability,
    ClosureReason,
    DriverConfig,
    DriverInfo,
    MarketLimits,
    MarkPrice,
    Order,
    OrderIntent,
    OrderUpdate,
    Position,
    PositionEvent,
    PositionSide,
    PositionUpdate,
    Side,
    Signal,
    StopEvent,
    StopLoss,
    StreamEvent,
    TrailingLimits,
    TrailingSpec,
    VenueSnapshot,
    Verification,
    close_side,
    entry_side,
    now_ms,
)
from framework.protocols import DriverSession, EntryEvidence, StreamDecoder, StreamEvidence, StreamSink, VenueHarness

__version__ = "0.1.0"
__all__ = [
    "record_transport",
    "ws_connect",
    "ccxt_market_limits",
    "MarketLimits",
    "REFUSED",
    "UNKNOWN",
    "Session",
    "Ack",
    "ErrorRule",
    "ErrorTable",
    "header_number",
    "translate_error",
    "venue_errors",
    "Alert",
    "Backoff",
    "Capability",
    "ClosureReason",
    "ConfigError",
    "DriverConfig",
    "DriverInfo",
    "DriverSession",
    "DuplicateOpenPosition",
    "DuplicateOrderId",
    "EntryEvidence",
    "FrameworkError",
    "MarkPrice",
    "MarkSocketPool",
    "Order",
    "OrderIncomplete",
    "OrderIntent",
    "OrderNotFound",
    "OrderRejected",
    "OrderUpdate",
    "OutcomeUnknown",
    "PluginNotFound",
    "PollSource",
    "Position",
    "PositionEvent",
    "PositionGone",
    "PositionSide",
    "PositionUpdate",
    "RateLimited",
    "RollbackFailed",
    "Side",
    "Signal",
    "StopEvent",
    "StopLoss",
    "StoreError",
    "StreamDecoder",
    "StreamError",
    "StreamEvent",
    "StreamEvidence",
    "StreamSink",
    "SubscriptionRules",
    "TrailingLimits",
    "TrailingSpec",
    "VenueError",
    "VenueHarness",
    "VenueSnapshot",
    "Verification",
    "WatchedSymbols",
    "WouldTriggerImmediately",
    "__version__",
    "attach_stream_state",
    "close_side",
    "decode_frame",
    "entry_side",
    "hookimpl",
    "hookspec",
    "now_ms",
    "poll_sources",
    "stream_flat_since",
    "trailing_start",
    "wait_stream_change",
    "watched",
]


def __getattr__(name: str) -> Any:
    if name == "Session":  # imported on use: plugins import this package and need none of the engine
        from framework.session import Session

        return Session
    raise AttributeError(f"module 'framework' has no attribute {name!r}")
