"""``framework soak``: a short soak samples memory and tasks over time and reports the safety figures."""

from __future__ import annotations

import pytest

from framework.app.cli import main
from framework.app.report import FILL_TO_STOP_MS
from framework.app.soak import DEFAULT_FAULTS, rss_mib, soak
from framework.settings import Settings


async def test_a_short_soak_samples_over_time_and_stays_safe(database_url):
    result = await soak(0.2, plugins=["binance", "bybit"], sample_s=2.0, settings=Settings(DATABASE_URL=database_url))
    samples = result["samples"]
    assert len(samples) >= 4 and [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    assert all(s["rss_mib"] > 10 and s["tasks"] > 1 for s in samples)
    safety = result["safety"]
    assert safety["positions"]["opened"] >= 2  # the demo signals ran, faults on
    assert safety["orphans"] == 0 and safety["wrong_side_orders"] == 0
    # Binance cannot rest a stop before the entry (docs/conformance.md B7): a few ms between fill and stop
    assert safety["unprotected_ms"]["max"] <= FILL_TO_STOP_MS, safety
    assert result["faults"] == DEFAULT_FAULTS and set(result["alerts"]) == {"info", "warning", "critical"}
    assert isinstance(result["memory_growth_mib"], float) and isinstance(result["tasks_growth"], int)


def test_rss_is_read():
    assert 10 < rss_mib() < 100_000


@pytest.mark.parametrize("argv", [["soak", "--minutes", "0"], ["soak", "--minutes", "1", "--faults", "nope=1"]])
def test_soak_arguments_are_checked(argv, capsys):
    assert main(argv) == 2
    assert "framework: error:" in capsys.readouterr().err
