"""Real price paths (shipped in framework/venue/data/) and the replayer that drives mark prices."""

from __future__ import annotations

import asyncio
import csv
from decimal import Decimal as D
from importlib import resources

import pytest

from framework.venue import MarkPriceEvent, PricePath, PricePoint, Replayer, Venue

XRP = "XRP/USDT:USDT"
BTC = "BTC/USDT:USDT"
DATA = resources.files("framework.venue") / "data"
CANDLES = "binance-futures-XRPUSDT-5m.csv"


def raw_candles() -> list[dict[str, str]]:
    with (DATA / CANDLES).open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_candles_become_four_points_with_the_documented_intra_candle_order():
    rows = raw_candles()
    path = PricePath.default(XRP)
    assert len(rows) == 1999 and len(path) == 4 * 1999
    bullish = next(i for i, r in enumerate(rows) if D(r["close"]) > D(r["open"]) and r["high"] != r["low"])
    bearish = next(i for i, r in enumerate(rows) if D(r["close"]) < D(r["open"]))
    for index, middle in ((bullish, ("low", "high")), (bearish, ("high", "low"))):
        row = rows[index]
        points = path.points[4 * index : 4 * index + 4]
        assert [p.price for p in points] == [D(row[k]) for k in ("open", *middle, "close")]
        start = int(row["open_time_ms"])
        assert [p.ts for p in points] == [start, start + 75_000, start + 150_000, start + 225_000]


def test_first_real_candle_is_bullish_low_first():
    # 2021-11-15 00:00 UTC: O 1.1893 H 1.1954 L 1.1891 C 1.1941
    assert [p.price for p in PricePath.default(XRP).points[:4]] == [
        D("1.1893"),
        D("1.1891"),
        D("1.1954"),
        D("1.1941"),
    ]


def test_trades_are_points():
    path = PricePath.default(BTC)
    assert len(path) == 2001
    assert path.points[0] == PricePoint(1610064000278, D("39432.48"))
    assert 40_000 < path.duration_ms < 50_000


def test_bad_inputs(tmp_path):
    with pytest.raises(KeyError, match="DOGE"):
        PricePath.default("DOGE/USDT:USDT")
    bad = tmp_path / "bad.csv"
    bad.write_text("open_time_ms,open,high,low,close\n1,1,1,1,1\n2,x,1,1,1\n")
    with pytest.raises(ValueError, match=r"bad.csv:3"):
        PricePath.from_candles_csv(bad)
    with pytest.raises(ValueError, match="no points"):
        PricePath([])
    with pytest.raises(ValueError, match="backwards"):
        PricePath([PricePoint(2, D(1)), PricePoint(1, D(1))])


def small_path() -> PricePath:
    return PricePath(
        [PricePoint(0, D("1.0")), PricePoint(1_000, D("1.1")), PricePoint(3_000, D("1.2"))], "small"
    )


def test_replayer_steps_deterministically_and_loops():
    venue = Venue("binance")
    replayer = Replayer(venue, {XRP: small_path()}, speed=10)
    steps = [replayer.step() for _ in range(4)]
    assert [(s, p) for s, p, _ in steps] == [
        (XRP, D("1.0")),
        (XRP, D("1.1")),
        (XRP, D("1.2")),
        (XRP, D("1.0")),
    ]
    assert [wait for _, _, wait in steps] == [100, 200, Replayer.LOOP_PAUSE_MS / 10, 100]
    assert venue.mark_price(XRP) == D("1.0")


def test_replayer_interleaves_symbols_by_path_time():
    venue = Venue("binance")
    other = PricePath([PricePoint(0, D("50000")), PricePoint(500, D("50001")), PricePoint(2_500, D("50002"))])
    replayer = Replayer(venue, {XRP: small_path(), BTC: other}, speed=1)
    order = [replayer.step()[:2] for _ in range(5)]
    assert order == [
        (BTC, D("50000")),
        (XRP, D("1.0")),
        (BTC, D("50001")),
        (XRP, D("1.1")),
        (BTC, D("50002")),
    ]


def test_replayer_samples_dense_paths_at_high_speed():
    dense = PricePath([PricePoint(ms, D(1000 + ms)) for ms in range(0, 30_001, 1_000)])
    replayer = Replayer(Venue("binance"), {BTC: dense}, speed=1000)
    prices = [replayer.step()[1] for _ in range(4)]
    assert prices == [D(1000), D(11000), D(21000), D(31000)]  # 10 ms of real time apart; the last kept


def test_replayer_speed_bounds():
    with pytest.raises(ValueError, match="speed"):
        Replayer(Venue("binance"), {XRP: small_path()}, speed=5000)


async def test_replayer_run_drives_the_venue_until_cancelled():
    venue = Venue("binance")
    seen: list[D] = []
    enough = asyncio.Event()

    def listener(event):
        if isinstance(event, MarkPriceEvent):
            seen.append(event.price)
            if len(seen) >= 5:
                enough.set()

    venue.subscribe(listener)
    task = asyncio.create_task(Replayer(venue, {XRP: small_path()}, speed=100).run())
    await asyncio.wait_for(enough.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen[:5] == [D("1.0"), D("1.1"), D("1.2"), D("1.0"), D("1.1")]
