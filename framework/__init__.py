"""framework: keeps crypto-futures positions safe on Binance USDⓈ-M and Bybit v5.

Public surface: :class:`framework.Session` (a strategy's facade, :mod:`framework.session`),
:mod:`framework.hookspecs` (``hookimpl``), :mod:`framework.models`, :mod:`framework.errors`; exchange
drivers are plugins of entry-point group ``framework``.
"""

from typing import Any

from framework.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["Session", "__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    if name == "Session":  # imported on use: plugins import this package and need none of the engine
        from framework.session import Session

        return Session
    raise AttributeError(f"module 'framework' has no attribute {name!r}")
