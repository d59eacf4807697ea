"""``framework run --metrics-port``: Prometheus metrics scraped over HTTP and parsed with prometheus_client."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from framework.app.metrics import Metrics
from framework.app.run import Run, RunOptions
from framework.models import PositionEvent, Signal, StopEvent
from framework.settings import Settings
from tools.degraded import dead_alert_url

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "XRP/USDT:USDT"
BOUND_S = 60.0


async def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample name: {sorted labels: value}}`` from ``url/metrics``."""
    async with aiohttp.ClientSession() as client, client.get(f"{url}/metrics") as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


@pytest.mark.hooks("on_position_open", "on_position_closed", "on_stop_moved", "on_reconciled", "on_alert",
                   "on_stream_state")
@pytest.mark.parametrize("side", ["long", "short"])
async def test_metrics_during_a_run_are_scraped_and_parsed(database_url, side):
    run = Run(RunOptions(plugins=["binance"], metrics_port=0, http_port=0, tui=False, speed=1),
              Settings(DATABASE_URL=database_url, FRAMEWORK_HTTP_TOKEN="t", FRAMEWORK_MAX_CONTRACTS="100",
                       FRAMEWORK_ALERT_URLS=dead_alert_url()))
    task = asyncio.create_task(run.execute())
    ready = asyncio.create_task(run.metrics_ready.wait())
    await asyncio.wait({task, ready}, timeout=BOUND_S, return_when=asyncio.FIRST_COMPLETED)
    assert ready.done(), f"metrics did not start: {task.exception() if task.done() else 'timeout'}"
    try:
        session = run.session
        assert run.metrics_url is not None and run.metrics_url.startswith("http://127.0.0.1:")
        await session.open("binance", SYMBOL, side, "20", stop_loss_pct="1.5")
        await session.open("binance", "BTC/USDT:USDT", side, "0.01", stop_loss_pct="2")
        refused = Signal(venue="binance", symbol="ETH/USDT:USDT", action="open", side=side, contracts="500",
                         stop_loss_pct="1")
        assert await run.act(refused) is False  # over FRAMEWORK_MAX_CONTRACTS
        during = await scrape(run.metrics_url)
        assert value(during, "framework_open_positions", venue="binance") == 2
        assert value(during, "framework_unprotected_positions", venue="binance") == 0
        assert value(during, "framework_positions_opened_total", venue="binance", source="engine") == 2
        assert value(during, "framework_signals_total", result="accepted") == 2
        assert value(during, "framework_signals_total", result="rejected") == 1
        assert value(during, "framework_stream_up", venue="binance") == 1
        assert value(during, "framework_fill_to_protected_seconds_count", venue="binance") == 2
        assert value(during, "framework_reconciliations_total", venue="binance") >= 1
        assert value(during, "framework_reconciliation_duration_seconds_count", venue="binance") >= 1
        assert value(during, "framework_rate_limit_waits_total", venue="binance") == 0
        rest = {labels: n for labels, n in during["framework_rest_calls_total"].items()}
        assert sum(rest.values()) > 0 and all(dict(labels)["venue"] == "binance" for labels in rest)

        events = session.events()
        harness = session.harnesses["binance"]  # someone removes a stop on the venue: the engine re-protects
        for stop in harness.venue.orders(harness.config.account, "BTC/USDT:USDT", open_only=True, conditional=True):
            harness.venue.cancel_order(harness.config.account, "BTC/USDT:USDT", stop.id)
        await session.wait_for(lambda e: isinstance(e, StopEvent) and e.current is not None, BOUND_S, events=events)
        assert await session.close("binance", SYMBOL)
        await session.wait_for(lambda e: isinstance(e, PositionEvent) and e.event == "closed", BOUND_S,
                               events=events)
        events.close()
        after = await scrape(run.metrics_url)
        assert value(after, "framework_open_positions", venue="binance") == 1
        assert value(after, "framework_closures_total", venue="binance", reason="reduce_only_close") == 1
        count = value(after, "framework_closure_latency_seconds_count", venue="binance")
        total = value(after, "framework_closure_latency_seconds_sum", venue="binance")
        assert count == 1 and 0 <= total < 30
        assert value(after, "framework_closure_latency_seconds_bucket", venue="binance", le="+Inf") == 1
        assert value(after, "framework_stop_moves_total", venue="binance") == 1
        commits = value(after, "framework_journal_commits_total", venue="binance")  # the closure's row at least
        assert commits >= 1 and value(after, "framework_journal_rows_total", venue="binance") >= commits
        assert value(after, "framework_alerts_total", level="warning") == 1  # "stop … removed on the venue"
        assert value(after, "framework_alerts_total", level="critical") == 0
        assert value(after, "framework_task_restarts_total", venue="binance", task="stream") == 0
        assert value(after, "framework_alert_deliveries_total", result="sent") == 0
        # every metric named in the module's table is exposed
        for name in documented_metrics():
            assert any(sample.startswith(name) for sample in after), name
    finally:
        run.stop_requested.set()
        await asyncio.wait_for(task, BOUND_S)


def documented_metrics() -> list[str]:
    import framework.app.metrics as module

    assert module.__doc__ is not None
    return sorted(set(re.findall(r"``(framework_[a-z_]+)", module.__doc__)))


def test_every_metric_name_follows_the_conventions():
    metrics = Run(RunOptions(plugins=["binance"], metrics_port=0, tui=False)).metrics
    assert metrics is not None
    families = list(metrics.registry.collect())
    assert {f"{f.name}_total" if f.type == "counter" else f.name for f in families} == set(documented_metrics())
    for family in families:
        assert re.fullmatch(r"framework_[a-z][a-z_]*[a-z]", family.name), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:  # counters end in _total
            assert family.type != "counter" or sample.name.endswith(("_total", "_created")), sample.name


def test_each_run_has_its_own_registry():
    run = Run(RunOptions(plugins=["binance"], metrics_port=0, tui=False))
    other = Run(RunOptions(plugins=["binance"], metrics_port=0, tui=False))
    assert isinstance(run.metrics, Metrics) and run.metrics.registry is not other.metrics.registry


def test_the_grafana_dashboard_uses_only_metrics_that_exist():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    assert dashboard["panels"] and dashboard["title"]
    known = set(documented_metrics())
    derived = ("_bucket", "_count", "_sum")
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used.update(re.findall(r"\b(framework_[a-z_]+)", target["expr"]))
    assert used, "the dashboard queries no metric"
    for name in used:
        base = next((name.removesuffix(s) for s in derived if name.endswith(s)), name)
        assert name in known or base in known, f"the dashboard uses {name}, which the framework does not expose"
