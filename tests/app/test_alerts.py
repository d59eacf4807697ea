"""Alert delivery (``framework.alerts``): end to end through apprise's ``json://`` to a local receiver."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from framework import Session
from framework.alerts import WORKER, AlertDelivery, alert_kind
from framework.engine.broadcast import alert
from framework.errors import ConfigError
from framework.models import Alert
from framework.settings import Settings
from tests.alert_receiver import receiver
from tests.app.processes import sigterm_after
from tests.engine.conftest import until
from tools.degraded import closure_latencies, dead_alert_url

SYMBOL = "XRP/USDT:USDT"
BOUND_S = 30.0  # generous upper bound for a condition to become true


def titles(bodies: list[dict[str, Any]]) -> list[str]:
    return [b["title"] for b in bodies]


def test_alert_kind_ignores_numbers_and_details():
    assert alert_kind("stop 123 removed on the venue; re-protecting") == "stop removed on the venue; re-protecting"
    assert alert_kind("position without stop-loss after 3 attempts: VenueError('x')") == \
        "position without stop-loss after attempts"
    assert alert_kind("close failed, position still open: boom") == alert_kind("close failed, position still open: x")


def test_a_bad_url_is_refused_without_echoing_it():
    with pytest.raises(ConfigError, match="entry 1 is not a valid apprise URL") as caught:
        Session._alert_delivery(Settings(FRAMEWORK_ALERT_URLS="nonsense-SENTINEL"))
    assert "SENTINEL" not in str(caught.value)
    assert "SENTINEL" not in repr(Settings(FRAMEWORK_ALERT_URLS="json://h/SENTINEL"))


@pytest.mark.hooks("on_alert", "on_stop_moved", "on_position_open", "on_position_closed")
@pytest.mark.parametrize("side", ["long", "short"])
async def test_an_incident_gives_one_message_and_a_resolution(database_url, side):
    async with receiver() as (rec, url):
        settings = Settings(DATABASE_URL=database_url, FRAMEWORK_ALERT_URLS=url, FRAMEWORK_ALERT_POSITIONS="true")
        async with Session(["binance"], settings=settings, speed=1) as session:
            assert session.alerts is not None and session.pm is not None
            await session.open("binance", SYMBOL, side, "20", stop_loss_pct="1.5")
            await rec.wait_for(lambda b: any(t.startswith("opened binance") for t in titles(b)))
            # a storm: the same condition five times (as a stuck close would alert on every attempt)
            for attempt in range(5):
                await alert(session.pm, "critical", f"close failed, position still open: attempt {attempt}",
                            venue="binance", symbol=SYMBOL)
            # a real incident: the stop disappears from the venue; the engine re-protects
            harness = session.harnesses["binance"]
            venue, account = harness.venue, harness.config.account
            for stop in venue.orders(account, SYMBOL, open_only=True, conditional=True):
                venue.cancel_order(account, SYMBOL, stop.id)
            await rec.wait_for(lambda b: any(t.startswith("resolved: binance") for t in titles(b)))
            await session.close("binance", SYMBOL)
            await rec.wait_for(lambda b: any(t.startswith("closed binance") for t in titles(b)))
            await session.alerts.drained()
            counters = dict(session.alerts.counters)
        bodies = rec.bodies
        critical = [b for b in bodies if b["title"] == f"CRITICAL binance {SYMBOL}"]
        assert len(critical) == 1 and critical[0]["type"] == "failure"
        assert "close failed, position still open" in critical[0]["message"]
        removed = [b for b in bodies if "removed on the venue" in b["message"]]
        assert len(removed) == 1 and removed[0]["title"] == f"WARNING binance {SYMBOL}"
        resolved = [b for b in bodies if b["title"].startswith("resolved:")]
        # the critical storm resolved once with its repeats counted; the removed stop resolved once
        assert any("4 repeat(s) not sent" in b["message"] for b in resolved)
        assert len(resolved) == 2 and all(b["type"] == "success" for b in resolved)
        assert counters["suppressed"] == 4 and counters["failed"] == 0 and counters["dropped"] == 0
        assert counters["sent"] == len(bodies)
        assert "tok-SENTINEL" not in repr(session.alerts)


async def test_min_level_filters_and_an_expired_incident_is_sent_again():
    now = [0.0]
    sent: list[tuple[str, str]] = []
    delivery = AlertDelivery(["json://127.0.0.1:9/x"], min_level="warning", window_s=60, clock=lambda: now[0])
    delivery._enqueue = lambda note: sent.append((note.title, note.body))  # type: ignore[method-assign]
    from framework.models import Alert

    delivery.on_alert(Alert(level="info", message="database back", venue="bybit"))
    delivery.on_alert(Alert(level="warning", message="reconciliation failed: x", venue="bybit"))
    delivery.on_alert(Alert(level="warning", message="reconciliation failed: y", venue="bybit"))
    now[0] = 61.0
    delivery.on_alert(Alert(level="warning", message="reconciliation failed: z", venue="bybit"))
    assert [t for t, _ in sent] == ["WARNING bybit", "WARNING bybit"]
    delivery.on_alert(Alert(level="info", message="database back: every queued write replayed", venue="bybit"))
    assert sent[-1][0] == "resolved: bybit reconciliation failed"


@pytest.mark.hooks("on_alert")
async def test_a_dead_receiver_is_counted_and_the_engine_goes_on(database_url, databases):
    # One run, two sessions: no alerts, then every open and close alerting to a receiver that is down.
    # (the latency comparison is a measurement, not a test: ``python tools/degraded.py``'s dead_receiver)
    n = 20
    without = (await closure_latencies("binance", database_url, None, n)).latencies
    with_dead, counters, _ = await closure_latencies("binance", await databases.create(), dead_alert_url(), n,
                                                     backoff_s=0.005)
    assert len(without) == len(with_dead) == n  # every close completed
    assert counters["failed"] == counters["queued"] >= 2 * n and counters["sent"] == 0
    assert counters["retried"] == 2 * counters["failed"]  # three attempts each


async def test_a_full_queue_drops_and_counts():
    delivery = AlertDelivery([dead_alert_url()], queue_size=2, retries=1)
    from framework.models import Alert

    for i in range(5):
        delivery.on_alert(Alert(level="critical", message=f"kind{i} x", venue="v", symbol=str(i)))
    # the worker has not run yet (nothing awaited): two queued, three dropped, none blocked the caller
    assert (delivery.counters["queued"], delivery.counters["dropped"]) == (2, 3)
    await asyncio.wait_for(delivery.drained(), BOUND_S)
    assert delivery.counters["failed"] == 2
    await delivery.aclose()


def alive(pid: int) -> bool:
    """The process runs (a zombie nobody reaped yet counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def critical(kind: str) -> Alert:
    return Alert(level="critical", message=f"{kind} x", venue="v", symbol=kind)


async def test_delivery_runs_in_a_worker_process_that_gets_no_secret_by_argv_or_environment(monkeypatch, caplog):
    secret_url = dead_alert_url().replace("/hook/x", "/hook/tok-SENTINEL")
    monkeypatch.setenv("FRAMEWORK_ALERT_URLS", secret_url)
    monkeypatch.setenv("BYBIT_API_SECRET", "key-SENTINEL")

    def in_the_engines_process(*args: Any, **kwargs: Any) -> bool:
        raise AssertionError("apprise sent from the engine's process")

    import apprise

    monkeypatch.setattr(apprise.Apprise, "notify", in_the_engines_process)  # the worker's apprise is its own
    delivery = AlertDelivery([secret_url], retries=1)
    await delivery.start()
    try:
        pid = delivery.worker_pid
        assert pid is not None and pid != os.getpid() and alive(pid)
        for exposed in ("cmdline", "environ"):
            assert b"SENTINEL" not in await asyncio.to_thread(Path(f"/proc/{pid}/{exposed}").read_bytes)
        delivery.on_alert(critical("a"))
        await asyncio.wait_for(delivery.drained(), BOUND_S)
        assert delivery.counters["failed"] == 1
    finally:
        await delivery.aclose()
    assert not alive(pid) and delivery.worker_pid is None
    assert "alert not delivered after 1 attempts: CRITICAL v a" in caplog.text and "SENTINEL" not in caplog.text
    assert "apprise raised" not in caplog.text  # the attempt was the worker's: a refused connection


async def test_a_worker_that_dies_is_counted_and_replaced_and_a_close_is_bounded():
    # each message waits in its backoff; a worker is replaced no sooner than 1 s after the last start
    delivery = AlertDelivery([dead_alert_url()], backoff_s=60.0, restart_s=1.0)
    loop = asyncio.get_running_loop()
    before_first_start = loop.time()
    delivery.on_alert(critical("a"))
    await until(lambda: delivery.counters["retried"] == 1, BOUND_S)
    first = delivery.worker_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await asyncio.wait_for(delivery.drained(), BOUND_S)  # the message it held: abandoned, not waited for
    assert delivery.counters["abandoned"] == 1 and delivery.counters["failed"] == 0
    delivery.on_alert(critical("b"))  # a new worker takes it, not sooner than 1 s after the first started
    await until(lambda: delivery.counters["retried"] == 2, BOUND_S)
    assert delivery.worker_pid not in (None, first) and loop.time() - before_first_start >= 1.0
    # a stop with 0.5 s to drain cuts the 60 s backoff short: given up, counted, the worker gone
    await asyncio.wait_for(delivery.aclose(timeout_s=0.5), BOUND_S)
    assert (delivery.counters["failed"], delivery.counters["abandoned"]) == (1, 1)
    assert delivery.worker_pid is None
    delivery.on_alert(critical("c"))  # after the stop: dropped, no new worker
    assert delivery.counters["dropped"] == 1 and delivery.worker_pid is None


PARENT = """
import asyncio, sys
from framework.alerts import AlertDelivery
from framework.models import Alert

async def main():
    delivery = AlertDelivery([sys.argv[1]], backoff_s=60.0, drain_s=1.0)
    await delivery.start()
    delivery.on_alert(Alert(level="critical", message="k x", venue="v", symbol="s"))
    print(delivery.worker_pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_the_worker_ends_when_its_parent_is_killed():
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", PARENT, dead_alert_url(),
                                                  stdout=asyncio.subprocess.PIPE)
    assert parent.stdout is not None
    try:
        pid = int(await asyncio.wait_for(parent.stdout.readline(), BOUND_S))
        assert alive(pid)
    finally:
        parent.kill()
        await parent.wait()
    # no goodbye from a SIGKILLed parent: the end of the worker's stdin is its signal (drain_s 1 s)
    await until(lambda: not alive(pid), BOUND_S)


async def test_a_failing_receiver_gets_one_attempt_per_pause_across_messages():
    # three messages, two attempts each, the receiver refusing the first five: after each failure the next
    # attempt — of the same message or the next — waits 0.1 s, then 0.2 s (the longest: backoff * 2**(2-1))
    async with receiver() as (rec, url):
        rec.refuse = 5
        delivery = AlertDelivery([url], retries=2, backoff_s=0.1)
        try:
            for kind in ("a", "b", "c"):
                delivery.on_alert(critical(kind))
            await asyncio.wait_for(delivery.drained(), BOUND_S)
        finally:
            await delivery.aclose()
        gaps = [later - earlier for earlier, later in itertools.pairwise(rec.arrivals)]
    assert (delivery.counters["failed"], delivery.counters["sent"], delivery.counters["retried"]) == (2, 1, 3)
    assert len(gaps) == 5 and gaps[0] >= 0.1 and all(gap >= 0.2 for gap in gaps[1:]), gaps
    assert [b["title"] for b in rec.bodies] == ["CRITICAL v c"]


async def test_the_worker_ends_after_a_line_cut_short_by_its_parents_death():
    worker = await asyncio.create_subprocess_exec(sys.executable, "-P", str(WORKER), stdin=asyncio.subprocess.PIPE,
                                                  stdout=asyncio.subprocess.PIPE)
    assert worker.stdin is not None and worker.stdout is not None
    config = {"urls": [dead_alert_url()], "retries": 2, "backoff_s": 60.0, "drain_s": 5.0}
    worker.stdin.write(json.dumps(config).encode() + b"\n")
    worker.stdin.write(b'{"title": "a", "body": "b", "type": "failure", "level": "critical"}\n{"title": "cut')
    worker.stdin.close()
    assert await asyncio.wait_for(worker.wait(), BOUND_S) == 0
    outcomes = [json.loads(line) for line in (await worker.stdout.read()).splitlines()]
    assert [o["result"] for o in outcomes] == ["retried", "failed"]  # the backoff cut by the drain bound


def alert_workers_of(pid: int) -> list[int]:
    """The alert workers among the children of process ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
        if parent == pid and b"alerts_worker.py" in cmdline:
            found.append(int(stat.parent.name))
    return found


async def test_sigterm_ends_framework_run_and_its_alert_worker(database_url, tmp_path):
    signals = tmp_path / "s.jsonl"
    signals.write_text(json.dumps({"venue": "bybit", "symbol": "XRP/USDT:USDT", "action": "open", "side": "short",
                                   "contracts": "20", "stop_loss_pct": "2", "at_ms": 0}) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "BYBIT_", "FRAMEWORK_"))}
    env |= {"DATABASE_URL": database_url, "FRAMEWORK_ALERT_URLS": dead_alert_url(), "FRAMEWORK_ALERT_POSITIONS": "true"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", "run", "--plugins", "bybit", "--no-tui", "--speed", "1",
        "--signals", str(signals), "--log-format", "json", env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    workers: list[int] = []

    async def find_the_worker() -> None:
        workers.extend(await asyncio.to_thread(alert_workers_of, process.pid))

    err = await sigterm_after(process, '"event": "position_open"', find_the_worker)
    assert process.returncode == 0, err
    [worker] = workers
    assert not alive(worker)  # drained (the "opened" message tried three times, then given up) and ended
    assert "alert not delivered after 3 attempts: opened bybit XRP/USDT:USDT" in err
