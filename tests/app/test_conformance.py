"""The conformance contract (``contract_tests/test_conformance.py``, ``framework.conformance``) catches an
emulator that answers one response in the wrong shape, naming the endpoint, the field and both values; a
copied plugin with a renamed venue and no cassettes is ``conformance: unverified``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import framework_bybit
from framework_bybit.emulator import BybitEmulator

from framework.conformance import cassette_paths, conformance_status, verify_cassette
from framework.plugins import describe, load_plugins, new_plugin_manager, register
from framework.venue.harness import EmulatorHarness


class WrongShapeEmulator(BybitEmulator):
    """Bybit's emulator, but ``POST /v5/order/create`` answers ``orderId`` as a number (Bybit: a string)."""

    async def _order_create(self, params: dict[str, Any], account: str, request: Any) -> Any:
        result = await super()._order_create(params, account, request)
        return {**result, "orderId": int(result["orderId"])}


async def test_the_shipped_bybit_cassette_holds_and_a_wrong_shape_fails_naming_endpoint_and_field():
    pm = load_plugins(["bybit"])
    [path] = cassette_paths(pm, "bybit")
    assert await verify_cassette(pm, "bybit", path) == []  # the control: the real emulator conforms
    async with EmulatorHarness("bybit", WrongShapeEmulator, {"seed": 0}) as variant:
        problems = await verify_cassette(pm, "bybit", path, harness=variant)
    assert problems, "the wrong shape went unnoticed"
    assert all("POST /v5/order/create: result.orderId type: recorded 'str', emulator 'int'" in p
               for p in problems[:1]), problems
    assert {p.split(": (b) ")[1].split(":")[0] for p in problems} == {"POST /v5/order/create"}


def test_a_copied_plugin_with_a_renamed_venue_and_no_cassettes_is_unverified(tmp_path, monkeypatch):
    source = Path(framework_bybit.__file__).parent
    copy = tmp_path / "framework_okx"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("cassettes", "__pycache__"))
    for module in copy.glob("*.py"):
        text = module.read_text(encoding="utf-8").replace("framework_bybit", "framework_okx")
        module.write_text(text.replace('VENUE = "bybit"', 'VENUE = "okx"'), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    plugin = importlib.import_module("framework_okx.plugin")
    try:
        pm = new_plugin_manager()
        register(pm, plugin, "okx")
        [row] = describe(pm)
        assert (row.name, row.venue, row.conformance) == ("okx", "okx", "unverified")
        assert conformance_status(pm, "okx") == "unverified"
        # the real plugin, for contrast
        assert conformance_status(load_plugins(["bybit"]), "bybit") == "verified by 1 cassette(s)"
    finally:
        for name in [m for m in sys.modules if m.startswith("framework_okx")]:
            del sys.modules[name]


async def test_frames_that_contradict_the_recorded_lifecycle_fail_the_lifecycle_check():
    from framework.conformance import check_lifecycle, load

    pm = load_plugins(["bybit"])
    [path] = cassette_paths(pm, "bybit")
    entries = load(path)
    assert await check_lifecycle(pm, "bybit", entries) == []
    wrong_reason = [{**entries[0], "lifecycle": [{**entries[0]["lifecycle"][0], "reason": "take_profit"}]},
                    *entries[1:]]
    [problem] = await check_lifecycle(pm, "bybit", wrong_reason)
    assert "'reason': 'take_profit'" in problem and "'reason': 'stop_loss'" in problem
    trigger = [i for i, e in enumerate(entries) if e["kind"] == "ws" and "tickers." in e["frame"]][-1]
    never_closed = [e for e in entries[:trigger] if e["kind"] != "ws" or "tickers." not in e["frame"]]
    problems = await check_lifecycle(pm, "bybit", never_closed)
    assert "BTC/USDT:USDT: opened 1 time(s), closed 0 time(s)" in problems


def test_a_harness_may_name_its_cassettes_instead_of_the_folder(tmp_path):
    pm = load_plugins(["binance"])
    [shipped] = cassette_paths(pm, "binance")
    assert shipped.parent.name == "cassettes" and shipped.suffix == ".jsonl"
    declared = tmp_path / "recorded-on-testnet.jsonl"

    class Harness:
        cassettes = [str(declared)]

    assert cassette_paths(pm, "binance", Harness()) == [declared]
