"""Plugin discovery and listing.

Driver plugins are found through the entry-point group ``framework`` (``[project.entry-points.framework]
binance = "framework_binance.plugin"``).  Built-in listeners (the store journal, the trailing manager)
are registered explicitly by the code that owns them.  Every registration is validated against the
hookspecs, and :func:`load_plugins` ends with ``check_pending()`` so a misspelt hook fails at load time
with the plugin's name in the message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

import pluggy

from framework import hookspecs
from framework.driver import Driver
from framework.errors import ConfigError, PluginNotFound

ENTRY_POINT_GROUP = "framework"


@dataclass(frozen=True)
class PluginInfo:
    """One row of ``framework plugins``: name, distribution version, venue, capabilities, hooks, and for a
    driver its conformance (``verified by N cassette(s)`` / ``unverified``: :mod:`framework.conformance`)."""

    name: str
    version: str
    venue: str | None
    capabilities: list[str]
    hooks: list[str]
    conformance: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "venue": self.venue,
            "capabilities": self.capabilities,
            "hooks": self.hooks,
            "conformance": self.conformance,
        }


CORE_PREFIX = "framework."  # names of the core's built-in plugins


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager that knows every hookspec, with the core's own answers to driver hooks registered
    as built-in plugins (:data:`CORE_PLUGINS`); a driver plugin's own answer comes first."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    from framework.engine.verification import CoreVerification  # the engine imports this module

    pm.register(CoreVerification(), name=f"{CORE_PREFIX}verification")
    return pm


def installed_plugins() -> dict[str, EntryPoint]:
    """Entry points of group ``framework``, by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Register ``plugin`` under ``name``, turning pluggy's validation error into a :class:`ConfigError`
    that names the plugin (e.g. an implementation with an argument the hookspec does not have).

    :raises ConfigError: the plugin is invalid, or not hashable (pluggy's subset callers, through which
        the core calls one venue's driver or one listener, keep plugins in sets; a ``@dataclass`` plugin
        needs ``eq=False``).
    """
    try:
        hash(plugin)
    except TypeError as exc:
        raise ConfigError(f"plugin {name!r} is not hashable (a @dataclass plugin needs eq=False)") from exc
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"plugin {name!r} is invalid: {exc}") from exc


def check_pending(pm: pluggy.PluginManager) -> None:
    """Fail when a plugin implements a hook that does not exist (typically a misspelt name).

    :raises ConfigError: naming the plugin and the unknown hook.
    """
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) if exc.plugin is not None else "?"
        raise ConfigError(f"plugin {name!r} is invalid: {exc}") from exc


def load_plugins(
    names: Iterable[str] | None = None,
    *,
    pm: pluggy.PluginManager | None = None,
    builtins: Iterable[tuple[str, object]] = (),
) -> pluggy.PluginManager:
    """Load driver plugins from entry points, plus explicitly given built-ins.

    :param names: plugin names to load (``--plugins binance,bybit``); ``None`` loads every installed one.
    :param pm: an existing manager to add to; a new one by default.
    :param builtins: ``(name, plugin)`` pairs registered explicitly.
    :returns: the plugin manager, validated with ``check_pending``.
    :raises PluginNotFound: a name is not installed; the message lists the installed ones.
    :raises ConfigError: a plugin fails hook validation.
    """
    pm = pm or new_plugin_manager()
    available = installed_plugins()
    wanted = list(available) if names is None else [n.strip() for n in names if n.strip()]
    missing = [n for n in wanted if n not in available]
    if missing:
        installed = ", ".join(sorted(available)) or "none"
        raise PluginNotFound(
            f"plugin(s) not installed: {', '.join(missing)}; installed: {installed}"
        )
    for name, plugin in builtins:
        register(pm, plugin, name)
    for name in wanted:
        if pm.has_plugin(name):
            continue
        try:
            plugin = available[name].load()
        except Exception as exc:  # an import error inside a plugin must name the plugin
            raise ConfigError(f"plugin {name!r} failed to import: {exc}") from exc
        register(pm, plugin, name)
    check_pending(pm)
    return pm


def driver_names(pm: pluggy.PluginManager) -> list[str]:
    """Names of registered plugins that implement ``driver_info`` (the exchange drivers)."""
    return [
        name
        for name, plugin in pm.list_name_plugin()
        if any(c.name == "driver_info" for c in pm.get_hookcallers(plugin) or ())
    ]


def drivers(pm: pluggy.PluginManager) -> dict[str, Driver]:
    """A :class:`Driver` per registered driver plugin, keyed by venue name."""
    result: dict[str, Driver] = {}
    for name in driver_names(pm):
        driver = Driver(pm, name)
        if driver.venue in result:
            raise ConfigError(
                f"plugins {result[driver.venue].plugin_name!r} and {name!r} both drive venue {driver.venue!r}"
            )
        result[driver.venue] = driver
    return result


def describe(pm: pluggy.PluginManager, include_core: bool = False) -> list[PluginInfo]:
    """List every registered plugin with its version, venue, capabilities and implemented hooks; the
    core's own built-ins (``framework.*``, e.g. ``framework.verification``) only with ``include_core``."""
    eps = installed_plugins()
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None or (name.startswith(CORE_PREFIX) and not include_core):
            continue
        hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or ())
        venue, capabilities, conformance = None, [], None
        if "driver_info" in hooks:
            from framework.conformance import conformance_status

            info = Driver(pm, name).info
            venue, capabilities = info.venue, sorted(str(c) for c in info.capabilities)
            conformance = conformance_status(pm, name)
        ep = eps.get(name)
        version = ep.dist.version if ep is not None and ep.dist is not None else "builtin"
        rows.append(PluginInfo(name, version, venue, capabilities, hooks, conformance))
    return sorted(rows, key=lambda row: row.name)
