"""Plugin discovery, hook validation and listing."""

from __future__ import annotations

import asyncio
import json
import types

import pytest

from framework import hookimpl
from framework.app.cli import main
from framework.driver import Driver
from framework.errors import ConfigError, PluginNotFound, RateLimited
from framework.models import DriverInfo, VenueSnapshot
from framework.plugins import (
    check_pending,
    describe,
    drivers,
    installed_plugins,
    load_plugins,
    new_plugin_manager,
    register,
)


def make_driver(venue: str, **hooks) -> types.ModuleType:
    """A minimal in-test driver plugin module: driver_info plus the given hook implementations."""

    @hookimpl
    def driver_info():
        return DriverInfo(venue=venue, capabilities={"amend_stop_in_place"})

    module = types.ModuleType(f"test_driver_{venue}")
    module.driver_info = driver_info
    for name, function in hooks.items():
        setattr(module, name, hookimpl(function))
    return module


def test_wrong_argument_name_is_rejected_naming_the_plugin():
    def set_stop_loss(conn, symbol, side, quantity, trigger_price):  # "quantity" is not in the hookspec
        return None

    pm = new_plugin_manager()
    with pytest.raises(ConfigError, match="'sloppy'") as info:
        register(pm, make_driver("sloppy", set_stop_loss=set_stop_loss), "sloppy")
    assert "quantity" in str(info.value)


def test_misspelt_hook_fails_at_load_with_check_pending():
    def set_stop_los(conn, symbol):  # typo: no such hook
        return None

    pm = new_plugin_manager()
    register(pm, make_driver("typo", set_stop_los=set_stop_los), "typo")
    with pytest.raises(ConfigError, match="'typo'.*set_stop_los"):
        check_pending(pm)


def test_unknown_plugin_name_is_a_clear_error_listing_installed_ones():
    with pytest.raises(PluginNotFound) as info:
        load_plugins(["binanse"])
    message = str(info.value)
    assert "binanse" in message
    for name in installed_plugins():
        assert name in message


def test_cli_unknown_plugin_exits_2_with_the_message(capsys):
    assert main(["plugins", "--plugins", "nosuchvenue", "--json"]) == 2
    assert "nosuchvenue" in capsys.readouterr().err


def test_driver_calls_reach_only_their_own_venue():
    calls = []

    def fetch_snapshot_a(conn):
        calls.append(("a", conn))
        return "from a"

    def fetch_snapshot_b(conn):
        calls.append(("b", conn))
        return "from b"

    pm = new_plugin_manager()
    register(pm, make_driver("venue-a", fetch_snapshot=fetch_snapshot_a), "a")
    register(pm, make_driver("venue-b", fetch_snapshot=fetch_snapshot_b), "b")
    by_venue = drivers(pm)
    assert set(by_venue) == {"venue-a", "venue-b"}
    # registered last, b would answer first under a plain firstresult call; the subset caller isolates a
    assert by_venue["venue-a"]._hooks["fetch_snapshot"](conn="conn-a") == "from a"
    assert calls == [("a", "conn-a")]


async def test_driver_reports_a_missing_hook_as_config_error():
    pm = new_plugin_manager()
    register(pm, make_driver("bare"), "bare")
    driver = Driver(pm, "bare")
    with pytest.raises(ConfigError, match="does not implement fetch_snapshot"):
        await driver.fetch_snapshot()


@pytest.mark.hooks("driver_info")
def test_describe_lists_venue_capabilities_and_hooks():
    pm = new_plugin_manager()
    register(pm, make_driver("venue-a", fetch_snapshot=lambda conn: None), "a")
    (row,) = describe(pm)
    assert row.as_dict() == {
        "name": "a", "version": "builtin", "venue": "venue-a",
        "capabilities": ["amend_stop_in_place"], "hooks": ["driver_info", "fetch_snapshot"],
        "conformance": "unverified",  # a driver without cassettes
    }


def test_cli_plugins_json_lists_installed_drivers(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    for row in rows:
        assert set(row) == {"name", "version", "venue", "capabilities", "hooks", "conformance"}
    assert {row["name"] for row in rows} == set(installed_plugins())


def test_the_core_answers_verify_position_as_a_builtin_listed_on_request():
    pm = new_plugin_manager()
    register(pm, make_driver("venue-a"), "a")
    assert [row.name for row in describe(pm)] == ["a"]
    core = {row.name: row for row in describe(pm, include_core=True)}["framework.verification"]
    assert core.hooks == ["verify_position"] and core.venue is None


async def test_a_rate_limited_venue_pauses_its_calls_for_the_time_it_asked():
    answers = [RateLimited("429", retry_after_ms=60_000), VenueSnapshot(venue="slow", positions=[], open_orders=[])]

    async def fetch_snapshot(conn):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    pm = new_plugin_manager()
    register(pm, make_driver("slow", fetch_snapshot=fetch_snapshot), "slow")
    driver = Driver(pm, "slow")
    with pytest.raises(RateLimited):
        await driver.fetch_snapshot()
    assert 50_000 < driver.paused_for_ms() <= 60_000
    with pytest.raises(TimeoutError):  # the next call waits out the venue's Retry-After first
        await asyncio.wait_for(driver.fetch_snapshot(), 0.2)
    assert driver.counters["rate_limit_waits"] == 1 and answers, "the venue was called during the pause"


def test_a_wrong_answer_type_names_the_plugin_and_the_hook():
    pm = new_plugin_manager()
    register(pm, make_driver("odd", fetch_snapshot=lambda conn: {"positions": []}), "odd")
    with pytest.raises(ConfigError, match="'odd' answered fetch_snapshot with a dict"):
        asyncio.run(Driver(pm, "odd").fetch_snapshot())
