"""framework: keeps crypto-futures positions safe on Binance USDⓈ-M and Bybit v5.

Public surface: :mod:`framework.hookspecs` (``hookimpl``), :mod:`framework.models`,
:mod:`framework.errors`; exchange drivers are plugins of entry-point group ``framework``.
"""

from framework.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
