"""``framework venue``: a standalone emulator whose first stdout line tells any ccxt script where it is."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys

import aiohttp
import pytest


@pytest.mark.parametrize("name", ["binance", "bybit"])
async def test_venue_command_prints_its_urls_first_and_serves_ccxt(name):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", "venue", name, "--speed", "10", "--seed", "1",
        "--faults", "rest_position_lag_ms=1000", "--api-key", "k" * 16, "--api-secret", "s" * 32,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert first["rest_url"].startswith("http://127.0.0.1:")
        assert first["ws_url"].startswith("ws://127.0.0.1:")
        assert (first["api_key"], first["api_secret"]) == ("k" * 16, "s" * 32)
        assert "XRP/USDT:USDT" in first["symbols"]
        time_path = "/fapi/v1/time" if name == "binance" else "/v5/market/time"
        async with aiohttp.ClientSession() as session, session.get(first["rest_url"] + time_path) as response:
            assert response.status == 200
            body = await response.json()
        assert body.get("serverTime") or body["result"]["timeSecond"]
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_venue_command_rejects_a_bad_fault_spec():
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", "venue", "bybit", "--faults", "no_such_knob=1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert b"no_such_knob" in err


# Starts ``framework venue`` with this process's stdout and stderr, says its pid, then waits to be killed.
STARTER = """
import json, signal, subprocess, sys
venue = subprocess.Popen([sys.executable, "-m", "framework.app.cli", "venue", "bybit", "--speed", "10"],
                         stdin=subprocess.DEVNULL)
print(json.dumps({"pid": venue.pid}), flush=True)
signal.pause()
"""


async def test_venue_command_stops_when_the_process_that_started_it_is_killed():
    """A SIGKILLed test run or tool cannot stop its venues: each one notices its parent is gone and exits."""
    starter = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STARTER, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    seen: dict[str, object] = {}
    try:
        while "venue" not in seen:  # the starter's line and the venue's, in either order
            seen.update(json.loads(await asyncio.wait_for(starter.stdout.readline(), 60)))
        starter.kill()
        # The pipes close when their last writer, the orphaned venue, exits.
        rest, err, _ = await asyncio.wait_for(
            asyncio.gather(starter.stdout.read(), starter.stderr.read(), starter.wait()), 30)
    finally:
        if starter.returncode is None:
            starter.kill()
        if "pid" in seen:  # nothing to do when the venue stopped; else do not leave it behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(str(seen["pid"])), signal.SIGKILL)
    assert rest == b""
    assert b"parent process" in err and b"gone; stopping" in err
