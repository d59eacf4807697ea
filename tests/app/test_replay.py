"""``framework replay``: frames captured from the Bybit emulator's real private stream, replayed offline."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from decimal import Decimal

import pytest
import websockets

from framework.app.cli import main
from framework.driver import Driver
from framework.plugins import load_plugins

SYMBOL = "XRP/USDT:USDT"


async def capture_bybit_frames(venue_actions) -> list[str]:
    """Run the Bybit emulator, subscribe to its private stream, perform ``venue_actions(venue)`` and
    return every frame exactly as the socket delivered it."""
    pm = load_plugins(["bybit"])
    harness = Driver(pm, "bybit").venue_harness({"seed": 3})
    frames: list[str] = []
    async with harness:
        key = harness.config.api_key.get_secret_value()
        secret = harness.config.api_secret.get_secret_value()
        expires = int(time.time() * 1000) + 10_000
        signature = hmac.new(secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
        async with websockets.connect(f"{harness.config.ws_url}/v5/private") as ws:
            await ws.send(json.dumps({"op": "auth", "args": [key, expires, signature]}))
            assert json.loads(await ws.recv())["success"] is True
            await ws.send(json.dumps({"op": "subscribe", "args": ["position", "order", "execution"]}))
            await ws.recv()  # subscription ack
            venue_actions(harness.venue, harness.config.account)
            while True:  # read until the closing position frame arrived
                frame = await asyncio.wait_for(ws.recv(), 5)
                frames.append(frame)
                message = json.loads(frame)
                if message.get("topic") == "position" and message["data"][0]["size"] == "0":
                    break
    return frames


def open_then_close_manually(venue, account):
    venue.place_order(account, SYMBOL, side="buy", type="market", amount=Decimal("43"))
    venue.manual_close(account, SYMBOL)


@pytest.mark.hooks("make_decoder", "on_position_open", "on_position_closed")
async def test_replay_of_a_captured_log_prints_one_open_and_one_closure(tmp_path, capsys):
    frames = await capture_bybit_frames(open_then_close_manually)
    closing = frames[-1]
    # the log as an incident would have it: a malformed line and the closing frame delivered twice
    log = tmp_path / "bybit-private.log"
    log.write_text("\n".join([*frames, "{not json", closing]) + "\n", encoding="utf-8")

    assert await asyncio.to_thread(main, ["replay", "--plugin", "bybit", str(log), "--json"]) == 0
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["event"], e["symbol"], e["side"]) for e in events] == [
        ("opened", SYMBOL, "long"), ("closed", SYMBOL, "long"),
    ]
    assert events[0]["contracts"] == "43" and events[0]["venue"] == "bybit"
    assert events[1]["contracts"] == "0" and events[1]["reason"] == "manual"
    assert f"line {len(frames) + 1}: malformed frame" in err


async def test_replay_table_output_names_the_frames(tmp_path, capsys):
    frames = await capture_bybit_frames(open_then_close_manually)
    log = tmp_path / "bybit.log"
    log.write_text("\n".join(frames), encoding="utf-8")
    assert await asyncio.to_thread(main, ["replay", "--plugin", "bybit", str(log)]) == 0
    out = capsys.readouterr().out
    assert f"{len(frames)} frames replayed" in out and "manual" in out
