"""Calling lifecycle hooks (``on_*``) so that one failing listener never stops the others.

pluggy stops a hook call at the first listener that raises; the close path must not, so every listener
is called on its own, in pluggy's order, through a pluggy subset caller holding that one listener (and
every wrapper of the hook, which so wraps each listener's call; tracing and call monitoring see each
call), awaited when it returns an awaitable.  A failure is logged and turned into an ``on_alert`` (itself
guarded, so a failing alert listener is only logged).
"""

from __future__ import annotations

import inspect
import logging
import secrets
from typing import Any, Literal

import pluggy

from framework.models import Alert

log = logging.getLogger(__name__)


async def broadcast(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> list[Any]:
    """Call every implementation of lifecycle hook ``hook_name`` with ``kwargs``.

    :returns: the results (not ``None``) of the listeners that succeeded, in call order.
    """
    hook = getattr(pm.hook, hook_name)
    # pluggy's own order: last registered first, tryfirst/trylast respected by get_hookimpls' sort.
    listeners = [impl for impl in reversed(hook.get_hookimpls()) if not (impl.hookwrapper or impl.wrapper)]
    plugins = [impl.plugin for impl in listeners]
    results = []
    for impl in listeners:
        one = pm.subset_hook_caller(hook_name, remove_plugins=[p for p in plugins if p is not impl.plugin])
        try:
            for result in one(**kwargs):
                results.append(await result if inspect.isawaitable(result) else result)
        except Exception as exc:  # a listener must never break the caller (close path)
            log.exception("listener %s of %s raised", impl.plugin_name, hook_name)
            if hook_name != "on_alert":
                await alert(pm, "warning", f"listener {impl.plugin_name!r} of {hook_name} raised: {exc!r}")
    return results


async def alert(
    pm: pluggy.PluginManager, level: Literal["info", "warning", "critical"], message: str, *,
    venue: str | None = None, symbol: str | None = None,
) -> None:
    """Broadcast an :class:`~framework.models.Alert` and log it at the matching level."""
    log.log(logging.CRITICAL if level == "critical" else logging.WARNING, "%s %s: %s", venue, symbol, message)
    await broadcast(pm, "on_alert", alert=Alert(level=level, message=message, venue=venue, symbol=symbol))


def client_order_id(kind: str) -> str:
    """A fresh client order id: ``fw-o-`` entries, ``fw-c-`` closes, ``fw-r-`` rollbacks + 12 hex digits."""
    if kind not in ("o", "c", "r"):
        raise ValueError(f"unknown client order id kind {kind!r}")
    return f"fw-{kind}-{secrets.token_hex(6)}"
