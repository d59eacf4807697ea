"""``framework bench`` measures the machine's floor in the same run and gives each figure as a ratio to it;
its scale section trails many symbols at once."""

from __future__ import annotations

import pytest

from framework.app.bench import (
    RECONCILE_REPEATS,
    ClosureFloor,
    Sizes,
    _engine_sections,
    floor_figures,
    ratios,
    reconcile_figures,
    scale_figures,
    stream_figures,
)
from framework.app.cli import main


async def test_floor_figures_give_the_journals_insert_rates(store):
    floor = await floor_figures(store, 20)
    rates = floor["insert_rows_per_s"]
    assert rates["executemany"] > 0 and rates["copy"] > 0 and rates["rows_per_transaction"] == 100
    leftovers = await store.pool.fetchval("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'floor_%'")
    assert leftovers == 0


def test_ratios_divide_each_figure_by_its_floor():
    result = {
        "floor": {"insert_rows_per_s": {"executemany": 20_000}},
        "closure_latency_ms": {"v": {"p50": 1.0, "p99": 3.0}},
        "closure_floor_ms": {"v": {"closure_ratio": {"p50": 2.0, "p99": 1.5}}},
        "stream_events_per_s": {"v": {"with_journal": 10_000, "without_journal": 30_000, "decoder_only": 60_000}},
        "reconcile": {"v": {"10": {"cpu_ms": 3.0, "raw_cpu_ms": 2.0, "x_raw": 1.4}, "100": {"cpu_ms": 3.0}}},
    }
    assert ratios(result) == {"v": {
        "closure_p50_x_floor": 2.0, "closure_p99_x_floor": 1.5, "stream_with_journal_of_insert_rate": 0.5,
        "stream_without_journal_of_decoder": 0.5, "reconcile_10_x_raw": 1.4, "reconcile_100_x_raw": None}}


@pytest.mark.parametrize("venue", ["binance", "bybit"])
async def test_reconcile_reports_the_raw_snapshot_floor(store, venue):
    figures = await reconcile_figures(venue, store, (10,))
    figure = figures["10"]
    assert figure["raw_cpu_ms"] > 0 and figure["cpu_ms"] > 0
    assert len(figure["cpu_ms_each"]) == len(figure["raw_cpu_ms_each"]) == RECONCILE_REPEATS
    # the ratio is the median of each pass over its own floor (figures rounded to 0.1 ms, hence the tolerance)
    paired = sorted(p / r for p, r in zip(figure["cpu_ms_each"], figure["raw_cpu_ms_each"], strict=True))
    assert figure["x_raw"] == pytest.approx(paired[RECONCILE_REPEATS // 2], rel=0.1)


@pytest.mark.parametrize("venue", ["binance", "bybit"])
async def test_scale_moves_every_trailing_stop(store, venue):
    figures = await scale_figures(venue, store, 3, rounds=1)
    assert (figures["moves"], figures["expected"], figures["alerts"]) == (3, 3, 0)
    assert figures["moves_per_s"] > 0 and figures["cpu_ms_per_move"] > 0 and figures["mark_frames_per_s"] > 0
    # the untimed round with the venue's ground truth on: every stop moved again, none left a gap
    assert figures["checked_round"] == {"moves": 3, "unprotected_ms_total": 0, "unprotected_ms_max": 0,
                                        "positions_without_stop": 0}


def test_closure_ratio_is_of_the_unrounded_percentiles():
    floor = ClosureFloor(store=None)  # type: ignore[arg-type]  # summary() reads only the samples
    floor.ws_ms, floor.db_ms = [0.14] * 10, [0.81] * 10  # floor 0.95 ms
    summary = floor.summary([1.04] * 10)  # rounded to 0.1 ms first, both were 1.0: ratio 1.0
    assert summary["p50"] == 0.95 and summary["ws_frame"]["p50"] == 0.14
    assert summary["closure_ratio"] == {"p50": 1.09, "p99": 1.09}


@pytest.mark.parametrize("venue", ["binance", "bybit"])
async def test_closure_section_times_each_closure_beside_a_floor_sample(databases, venue):
    result: dict = {key: {} for key in ("closure_latency_ms", "closure_floor_ms", "fill_to_stop_ms")}
    sizes = Sizes(closures=4, moves=0, reconcile=(), stream_rounds=0)
    await _engine_sections(venue, databases, sizes, ["closure"], result)
    closure, floor = result["closure_latency_ms"][venue], result["closure_floor_ms"][venue]
    assert (closure["n"], closure["db_rows_closed"], closure["journal_closed_rows"], closure["venue_closures"]) \
        == (4, 4, 4, 4)
    assert closure["venue_call_ms"]["n"] == 4 and closure["p50"] > 0
    assert floor["n"] == 4 and floor["closure_ratio"]["p50"] > 0


def test_bench_refuses_an_unknown_section(capsys):
    assert main(["bench", "--only", "closure,nope"]) == 2
    assert "unknown section(s) nope" in capsys.readouterr().err


@pytest.mark.parametrize("venue", ["binance", "bybit"])
async def test_stream_section_journals_in_group_commits_and_reports_its_cpu(databases, venue):
    figures = await stream_figures(venue, databases, 5)
    assert figures["frames"] > 0 and figures["with_journal"] > 0 and figures["without_journal"] > 0
    assert 5 <= figures["journal_rows"] and 1 <= figures["journal_commits"] <= figures["journal_rows"]
    assert figures["with_journal_cpu_ms"] > 0 and figures["without_journal_cpu_ms"] > 0
