"""``framework check`` on the live path (keys and ``<PLUGIN>_REST_URL`` / ``<PLUGIN>_WS_URL``) against
emulated venues: every guarantee passes, a fault knob that breaks one makes its row fail with evidence,
and an interrupted check leaves the account flat with no resting order (the venue's ground truth)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from framework.app.check import GUARANTEES
from framework.cassette import REDACTED, SECRET_FIELDS, read_cassette
from framework.driver import Driver
from framework.plugins import load_plugins
from tests.app.processes import BOUND_S, read_until, start_venue, stop

# Sentinels: if any of these reaches a cassette, a secret leaked.
KEY, SECRET = "SENTINELKEY" + "k" * 9, "SENTINELSECRET" + "s" * 18
VENUES = ("binance", "bybit")


def check_env(name: str, rest_url: str, ws_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "BYBIT_", "FRAMEWORK_"))}
    prefix = name.upper()
    env.update({f"{prefix}_API_KEY": KEY, f"{prefix}_API_SECRET": SECRET, f"{prefix}_REST_URL": rest_url,
                f"{prefix}_WS_URL": ws_url})
    return env


def check_command(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "framework.app.cli", "check", "--plugin", name, *args]


async def framework_check(name: str, info: dict, tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    report = tmp_path / "check.json"
    process = await asyncio.create_subprocess_exec(
        *check_command(name, "--json", str(report), *args), env=check_env(name, info["rest_url"], info["ws_url"]),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), BOUND_S)
    return process.returncode, json.loads(report.read_text()), out.decode() + err.decode()


def statuses(result: dict) -> dict[str, str]:
    return {row["guarantee"]: row["status"] for row in result["rows"]}


def venue_harness(name: str, **options):
    """The emulated venue in this process (its ground truth), for a check run in another process."""
    return Driver(load_plugins([name]), name).venue_harness({"api_key": KEY, "api_secret": SECRET, "speed": 10,
                                                            **options})


def urls(harness) -> dict[str, str]:
    return {"rest_url": harness.config.rest_url, "ws_url": harness.config.ws_url}


def check_trades(venue, client_id: str) -> tuple[set[str], list]:
    """What the venue filled during the check (ids of the orders filled), and every submission of the
    duplicate row's client order id, accepted or refused."""
    return {f.order_id for f in venue.truth.fills}, [r for r in venue.truth.orders if r.client_order_id == client_id]


def duplicate_id(evidence: str) -> str:
    return evidence.split("(", 1)[1].split(")", 1)[0]


@pytest.mark.parametrize("name", VENUES)
async def test_check_passes_every_guarantee_and_trades_only_its_entry_and_close(name, tmp_path):
    async with venue_harness(name) as harness:
        code, result, output = await framework_check(name, urls(harness), tmp_path)
        venue = harness.venue
        assert code == 0, output
        expected = dict.fromkeys(GUARANTEES, "pass")
        expected["cleanup: account left flat, own orders cancelled"] = "pass"
        assert statuses(result) == expected, result
        rows = {row["guarantee"]: row["evidence"] for row in result["rows"]}
        assert "PositionGone" in rows["no-position answer"]
        assert "min 0.1 contracts" in rows["markets loaded"]
        for guarantee in GUARANTEES:  # the table names every guarantee with its result
            assert guarantee in output
        duplicate = rows["duplicate client order id"]
        code_of_refusal = {"binance": "-4116", "bybit": "110072"}[name]  # the venue's answer, named in the table
        assert "the same id again refused" in duplicate and code_of_refusal in duplicate, duplicate
        assert "1 cancelled, none left" in duplicate, duplicate
        # the venue's ground truth: two orders traded (the entry, the close), the duplicate row's id was
        # accepted once, refused once, and traded nothing; the account is left flat with nothing resting
        filled, submissions = check_trades(venue, duplicate_id(duplicate))
        assert len(filled) == 2, venue.truth.fills
        assert [(r.status, r.reject_reason, r.reduce_only) for r in submissions] == [
            ("new", None, True), ("rejected", "duplicate_client_order_id", True)]
        assert not filled & {r.order_id for r in submissions}
        assert [p for p in venue.positions("default") if p.is_open] == []
        assert venue.orders("default", open_only=True) == []


@pytest.mark.parametrize("name", VENUES)
async def test_a_venue_that_accepts_a_duplicate_client_id_fails_that_row_and_cancels_both(name, tmp_path):
    async with venue_harness(name, faults="accept_duplicate_client_ids=1") as harness:
        code, result, output = await framework_check(name, urls(harness), tmp_path)
        venue = harness.venue
        assert code == 1, output
        rows = {row["guarantee"]: row for row in result["rows"]}
        row = rows["duplicate client order id"]
        assert row["status"] == "fail"
        assert "the same id again taken as a second order" in row["evidence"], row
        assert "2 cancelled, none left" in row["evidence"], row
        assert [r for r in rows.values() if r["status"] != "pass"] == [row]
        assert result["rows"][-1]["status"] == "pass"
        filled, submissions = check_trades(venue, duplicate_id(row["evidence"]))
        assert len(filled) == 2, venue.truth.fills  # still only the entry and the close traded
        assert [(r.status, r.reduce_only) for r in submissions] == [("new", True), ("new", True)]
        assert {o.status for o in venue.orders("default", open_only=False) if o.id in
                {r.order_id for r in submissions}} == {"canceled"}
        assert venue.orders("default", open_only=True) == []


@pytest.mark.parametrize("name", VENUES)
async def test_a_venue_that_lists_no_stop_fails_that_row_with_evidence(name, tmp_path):
    process, info = await start_venue(name, KEY, SECRET, "--faults", "list_no_stops=1")
    try:
        code, result, output = await framework_check(name, info, tmp_path, "--budget", "2")
    finally:
        await stop(process)
    assert code == 1, output
    rows = {row["guarantee"]: row for row in result["rows"]}
    assert rows["venue lists the stop-loss"]["status"] == "fail"
    assert "no stop-loss at" in rows["venue lists the stop-loss"]["evidence"]
    assert "listed: none" in rows["venue lists the stop-loss"]["evidence"]
    assert rows["venue lists the position"]["status"] == "pass"  # only the stop rows are broken
    assert rows["close reduce-only"]["status"] == "pass"
    assert result["passed"] is False
    cleanup = result["rows"][-1]
    assert cleanup["status"] == "pass", cleanup  # the unlisted stop is cancelled by its id all the same


@pytest.mark.parametrize("name", VENUES)
async def test_an_interrupted_check_leaves_the_account_flat_with_no_resting_order(name, tmp_path):
    async with venue_harness(name) as harness:
        config = harness.config
        process = await asyncio.create_subprocess_exec(
            *check_command(name, "--json", str(tmp_path / "check.json")),
            env=check_env(name, config.rest_url, config.ws_url),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            await read_until(process.stderr, "pass: move the stop-loss")
            venue = harness.venue
            [position] = [p for p in venue.positions("default") if p.is_open]  # half-way: open, protected
            assert venue.orders("default", open_only=True) or position.stop_loss is not None
            process.send_signal(signal.SIGINT)
            rest = (await asyncio.wait_for(process.stderr.read(), BOUND_S)).decode()
            await asyncio.wait_for(process.wait(), BOUND_S)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 130, rest
        assert "interrupted: cleaning up" in rest
        # the venue's ground truth: nothing open, nothing resting
        assert [p for p in venue.positions("default") if p.is_open] == []
        assert venue.orders("default", open_only=True) == []
        result = json.loads((tmp_path / "check.json").read_text())
        assert result["interrupted"] is True and result["rows"][-1]["status"] == "pass"
        assert statuses(result)["close reduce-only"] == "not run"


@pytest.mark.parametrize("name", VENUES)
async def test_a_recorded_check_holds_every_exchange_and_no_secret(name, tmp_path):
    """``--record``: REST requests and responses, frames both ways, in order, with timestamps; the sentinel
    key and secret, signatures, listen keys and account ids are gone."""
    cassette = tmp_path / "session.jsonl"
    process, info = await start_venue(name, KEY, SECRET)
    try:
        code, result, output = await framework_check(name, info, tmp_path, "--record", str(cassette))
        listen_key = None
        if name == "binance":  # the venue hands back the account's still-valid listen key
            async with aiohttp.ClientSession() as client, client.post(
                    f"{info['rest_url']}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": KEY}) as response:
                listen_key = (await response.json())["listenKey"]
    finally:
        await stop(process)
    assert code == 0, output
    text = cassette.read_text()
    for secret in (KEY, SECRET, "SENTINEL", listen_key):
        if secret:
            assert secret not in text
    entries = read_cassette(text.splitlines())
    assert entries[0]["kind"] == "meta" and entries[0]["format"] == "framework-cassette/1"
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert all(a["t"] <= b["t"] for a, b in zip(entries, entries[1:], strict=False))
    kinds = {(e["kind"], e.get("dir")) for e in entries}
    assert {("rest", None), ("ws", "recv")} <= kinds
    rest = [e for e in entries if e["kind"] == "rest"]
    assert all(isinstance(e["status"], int) and e["response"] is not None for e in rest)
    creates = {"binance": "/fapi/v1/order", "bybit": "/v5/order/create"}[name]
    assert any(e["path"] == creates and e["method"] == "POST" for e in rest)

    def secret_values(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key.lower() in SECRET_FIELDS:
                    yield item
                else:
                    yield from secret_values(item)
        elif isinstance(value, list):
            for item in value:
                yield from secret_values(item)

    frames = [json.loads(e["frame"]) for e in entries if e["kind"] == "ws" and e["frame"].startswith("{")]
    assert set(secret_values(rest + frames)) <= {REDACTED}
    if name == "bybit":
        sent = [json.loads(e["frame"]) for e in entries if e["kind"] == "ws" and e["dir"] == "send"]
        [auth] = [f for f in sent if f.get("op") == "auth"]
        assert auth["args"] == [REDACTED] * 3
    else:
        assert any(e["query"].get("signature") == REDACTED for e in rest)


def test_mainnet_needs_i_understand_and_a_check_needs_keys(capsys, monkeypatch, tmp_path):
    from framework.app.cli import main

    monkeypatch.chdir(tmp_path)  # no .env
    for name in [n for n in os.environ if n.startswith(("BINANCE_", "BYBIT_"))]:
        monkeypatch.delenv(name)
    assert main(["check", "--plugin", "bybit", "--mainnet"]) == 2
    assert "--mainnet trades real money: add --i-understand" in capsys.readouterr().err
    assert main(["check", "--plugin", "bybit"]) == 2
    assert "set BYBIT_API_KEY and BYBIT_API_SECRET" in capsys.readouterr().err


async def test_run_record_writes_both_venues_traffic_and_replay_reads_the_cassette(tmp_path, database_url):
    """``framework run --record`` on the emulated venues; ``framework replay`` of that cassette gives the
    lifecycle the run reported."""
    cassette, report = tmp_path / "run.jsonl", tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "BYBIT_", "FRAMEWORK_"))}
    env["DATABASE_URL"] = database_url
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", "run", "--plugins", "binance,bybit", "--duration", "6",
        "--no-tui", "--record", str(cassette), "--report", str(report), env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), BOUND_S)
    assert process.returncode == 0, err.decode()[-3000:]
    entries = read_cassette(cassette.read_text().splitlines())
    assert {(e.get("venue"), e["kind"]) for e in entries if e["kind"] != "meta"} >= {
        ("binance", "rest"), ("binance", "ws"), ("bybit", "rest"), ("bybit", "ws")}
    opened = json.loads(report.read_text())["venues"]["bybit"]["opened"]
    assert opened >= 1
    replay = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", "replay", "--plugin", "bybit", "--json", str(cassette),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(replay.communicate(), BOUND_S)
    assert replay.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert sum(e["event"] == "opened" for e in events) == opened
    assert {e["venue"] for e in events} == {"bybit"}


@pytest.mark.parametrize("name", VENUES)
async def test_an_unexpected_error_half_way_still_leaves_the_account_flat(name, monkeypatch):
    """A step that raises something no one expected: that row fails with the error, the cleanup runs
    (in process, on the harness's ground truth)."""
    from framework.app.check import Check

    driver = Driver(load_plugins([name]), name)
    async with driver.venue_harness({"seed": 0}) as harness:
        async def broken_move(stop, trigger_price):
            raise RuntimeError("a bug in move_stop_loss")

        monkeypatch.setattr(driver, "move_stop_loss", broken_move)
        result = await Check(driver, harness.config, harness.symbol, budget_s=5).run()
        rows = {row.guarantee: row for row in result.rows}
        assert rows["venue lists the stop-loss"].status == "pass"
        assert rows["move the stop-loss"].status == "fail"
        assert "RuntimeError: a bug in move_stop_loss" in rows["move the stop-loss"].evidence
        assert rows["close reduce-only"].status == "not run"
        assert result.cleanup.status == "pass" and not result.passed
        venue = harness.venue
        assert [p for p in venue.positions("default") if p.is_open] == []
        assert venue.orders("default", open_only=True) == []


@pytest.mark.parametrize("name", VENUES)
async def test_a_check_interrupted_while_its_duplicate_row_order_rests_cancels_it(name, monkeypatch):
    """Ctrl-C after the venue took the duplicate row's stop order but before its answer came back: the check
    never learnt the order's id, and the cleanup still finds and cancels it (in process, ground truth)."""
    from framework.app.check import Check

    driver = Driver(load_plugins([name]), name)
    async with driver.venue_harness({"seed": 0}) as harness:
        venue, place = harness.venue, driver.create_stop_loss_order
        placed = asyncio.Event()

        async def answer_never_comes(*args):
            await place(*args)
            placed.set()
            await asyncio.Event().wait()

        monkeypatch.setattr(driver, "create_stop_loss_order", answer_never_comes)
        check = Check(driver, harness.config, harness.symbol, budget_s=5)
        run = asyncio.create_task(check.run())
        await asyncio.wait_for(placed.wait(), BOUND_S)
        [resting] = [o for o in venue.orders("default", open_only=True) if o.reduce_only and not o.close_position
                     and o.client_order_id and o.client_order_id.startswith("fw-k-")]
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert check.result.interrupted and check.result.cleanup.status == "pass", check.result.cleanup
        assert {o.status for o in venue.orders("default", open_only=False) if o.id == resting.id} == {"canceled"}
        assert [p for p in venue.positions("default") if p.is_open] == []
        assert venue.orders("default", open_only=True) == []
