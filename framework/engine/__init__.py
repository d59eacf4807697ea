"""The venue-agnostic position lifecycle: open, verify, protect, trail, close, reconcile.

:class:`Engine` runs it over several venues; :class:`PositionBook` is the one owner of "is this
position open" for a venue + account.
"""

from framework.engine.book import BookPosition, PositionBook
from framework.engine.opener import Opener, OpenNotVerified
from framework.engine.protection import Protector
from framework.engine.reconcile import Reconciler
from framework.engine.runtime import Engine
from framework.engine.settings import EngineSettings
from framework.engine.trailing import TrailingManager

__all__ = [
    "BookPosition", "Engine", "EngineSettings", "OpenNotVerified", "Opener", "PositionBook", "Protector",
    "Reconciler", "TrailingManager",
]
