"""``--plugins`` selects drivers; an installed lifecycle plugin loads anyway unless ``--disable-plugin``.

The out-of-tree plugin is a real distribution: a module plus a ``*.dist-info`` with an ``entry_points.txt``
in a temporary folder on ``sys.path``, found by ``importlib.metadata`` like any ``pip install``.
"""

from __future__ import annotations

import sys
from decimal import Decimal

import pytest

from framework.errors import ConfigError, PluginNotFound
from framework.plugins import driver_names
from framework.session import Session, load_run_plugins
from framework.settings import Settings

PLUGIN_SOURCE = '''
from framework import hookimpl

EVENTS = []


@hookimpl
def on_position_open(event):
    EVENTS.append(("opened", event.venue, event.symbol))


@hookimpl
def on_position_closed(event):
    EVENTS.append(("closed", event.venue, event.symbol, event.reason))
'''


@pytest.fixture
def alert_plugin(tmp_path, monkeypatch):
    """An installed lifecycle plugin ``myalert`` (module ``myalert_plugin``); yields the module name."""
    (tmp_path / "myalert_plugin.py").write_text(PLUGIN_SOURCE)
    info = tmp_path / "framework_myalert-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: framework-myalert\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[framework]\nmyalert = myalert_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myalert_plugin"
    sys.modules.pop("myalert_plugin", None)


def test_plugins_selects_drivers_and_lifecycle_plugins_still_load(alert_plugin):
    pm = load_run_plugins(["binance"])
    assert driver_names(pm) == ["binance"]
    assert pm.has_plugin("myalert")
    assert pm.get_plugin("myalert").__name__ == alert_plugin


def test_disable_plugin_leaves_it_out_and_an_unknown_name_is_an_error(alert_plugin):
    pm = load_run_plugins(["binance", "bybit"], disabled=["myalert"])
    assert not pm.has_plugin("myalert")
    assert sorted(driver_names(pm)) == ["binance", "bybit"]
    with pytest.raises(PluginNotFound, match="no_such_plugin"):
        load_run_plugins(["binance"], disabled=["no_such_plugin"])


@pytest.mark.hooks("on_position_open", "on_position_closed")
async def test_an_out_of_tree_lifecycle_plugin_receives_events_under_plugins_selection(alert_plugin, database_url):
    # the --plugins selection of the README's first command: two drivers, and the lifecycle plugin still loads
    async with Session(["binance", "bybit"], settings=Settings(DATABASE_URL=database_url), speed=1) as session:
        await session.open("binance", "XRP/USDT:USDT", "short", Decimal(10), stop_loss_pct=2)
        assert await session.close("binance", "XRP/USDT:USDT")
    events = sys.modules[alert_plugin].EVENTS
    assert events == [("opened", "binance", "XRP/USDT:USDT"),
                      ("closed", "binance", "XRP/USDT:USDT", "reduce_only_close")]


def test_a_broken_installed_plugin_is_named_with_the_way_out(tmp_path, monkeypatch):
    (tmp_path / "mybroken_plugin.py").write_text("raise ImportError('needs libfoo')\n")
    info = tmp_path / "framework_mybroken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: framework-mybroken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[framework]\nmybroken = mybroken_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"'mybroken' failed to import: needs libfoo .*--disable-plugin"):
        load_run_plugins(["binance"])
    assert driver_names(load_run_plugins(["binance"], disabled=["mybroken"])) == ["binance"]
