"""Plugin discovery, hook validation and listing."""

from __future__ import annotations

import asyncio
import json
import types

import pytest

from framework import hookimpl
from framework.app.cli import main
from framework.driver import OPERATIONS, Driver
from framework.errors import ConfigError, PluginNotFound, RateLimited
from framework.models import DriverConfig, DriverInfo, VenueSnapshot
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


def make_session(*, without: tuple[str, ...] = (), **operations):
    """A session object with every :data:`OPERATIONS` (those not given raise), minus ``without``."""
    session = types.SimpleNamespace()
    for name in OPERATIONS:
        if name not in without:
            setattr(session, name, operations.get(name, _not_called(name)))
    return session


def _not_called(name):
    async def operation(*args, **kwargs):
        raise AssertionError(f"{name} was not expected to be called")

    return operation


def connect_to(session):
    async def connect(config):
        return session

    return connect


CONFIG = DriverConfig(api_key="k", api_secret="s")


def test_wrong_argument_name_is_rejected_naming_the_plugin():
    def verify_position(session, intent, order, quantity, evidence):  # "quantity" is not in the hookspec
        return None

    pm = new_plugin_manager()
    with pytest.raises(ConfigError, match="'sloppy'") as info:
        register(pm, make_driver("sloppy", verify_position=verify_position), "sloppy")
    assert "quantity" in str(info.value)


def test_an_operation_written_as_a_hook_fails_at_load_naming_it():
    def set_stop_loss(conn, symbol, side, contracts, trigger_price):  # a session method, not a hook
        return None

    pm = new_plugin_manager()
    register(pm, make_driver("oldstyle", set_stop_loss=set_stop_loss), "oldstyle")
    with pytest.raises(ConfigError, match="'oldstyle'.*set_stop_loss"):
        check_pending(pm)


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


async def test_driver_calls_reach_only_their_own_venue():
    calls = []

    def session_of(name):
        async def fetch_snapshot():
            calls.append(name)
            return VenueSnapshot(venue=f"venue-{name}", positions=[], open_orders=[])

        return make_session(fetch_snapshot=fetch_snapshot)

    pm = new_plugin_manager()
    register(pm, make_driver("venue-a", connect=connect_to(session_of("a"))), "a")
    register(pm, make_driver("venue-b", connect=connect_to(session_of("b"))), "b")
    by_venue = drivers(pm)
    assert set(by_venue) == {"venue-a", "venue-b"}
    # registered last, b would answer first under a plain firstresult call; the subset caller isolates a
    await by_venue["venue-a"].connect(CONFIG)
    assert (await by_venue["venue-a"].fetch_snapshot()).venue == "venue-a"
    assert calls == ["a"]


async def test_driver_reports_a_missing_hook_as_config_error():
    pm = new_plugin_manager()
    register(pm, make_driver("bare"), "bare")
    with pytest.raises(ConfigError, match="does not implement connect"):
        await Driver(pm, "bare").connect(CONFIG)
    register(pm, make_driver("partial", connect=connect_to(make_session(without=("fetch_snapshot",)))), "partial")
    with pytest.raises(ConfigError, match="does not implement fetch_snapshot"):
        await Driver(pm, "partial").connect(CONFIG)


@pytest.mark.hooks("driver_info")
def test_describe_lists_venue_capabilities_and_hooks():
    pm = new_plugin_manager()
    register(pm, make_driver("venue-a", connect=connect_to(make_session())), "a")
    (row,) = describe(pm)
    assert row.as_dict() == {
        "name": "a", "version": "builtin", "venue": "venue-a",
        "capabilities": ["amend_stop_in_place"], "hooks": ["connect", "driver_info"],
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

    async def fetch_snapshot():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    pm = new_plugin_manager()
    register(pm, make_driver("slow", connect=connect_to(make_session(fetch_snapshot=fetch_snapshot))), "slow")
    driver = Driver(pm, "slow")
    await driver.connect(CONFIG)
    with pytest.raises(RateLimited):
        await driver.fetch_snapshot()
    assert 50_000 < driver.paused_for_ms() <= 60_000
    with pytest.raises(TimeoutError):  # the next call waits out the venue's Retry-After first
        await asyncio.wait_for(driver.fetch_snapshot(), 0.2)
    assert driver.counters["rate_limit_waits"] == 1 and answers, "the venue was called during the pause"


async def test_a_wrong_answer_type_names_the_plugin_and_the_hook():
    async def fetch_snapshot():
        return {"positions": []}

    pm = new_plugin_manager()
    register(pm, make_driver("odd", connect=connect_to(make_session(fetch_snapshot=fetch_snapshot))), "odd")
    driver = Driver(pm, "odd")
    await driver.connect(CONFIG)
    with pytest.raises(ConfigError, match="'odd' answered fetch_snapshot with a dict"):
        await driver.fetch_snapshot()


def test_an_unhashable_plugin_is_refused_naming_it():
    class Listener:
        __hash__ = None  # what a @dataclass without eq=False is

        @hookimpl
        def on_alert(self, alert):
            return None

    with pytest.raises(ConfigError, match="'unhashable' is not hashable"):
        register(new_plugin_manager(), Listener(), "unhashable")
