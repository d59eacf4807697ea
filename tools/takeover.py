"""Takeover after ``kill -9`` (issue 19), measured across processes, printed as JSON.

Each trial starts a ``framework venue`` process (the emulated venue, whose ground truth is the judge), an
owner ``framework run --live`` (instance A, with a seeded signal schedule of opens with trailing stops and
closes) and a standby (instance B), both on one PostgreSQL with ``FRAMEWORK_LEASE_S`` (5 s), kills A with
SIGKILL at a seeded random moment, and measures:

* ``takeover_ms``: SIGKILL → B's ``took over`` log line (lease expiry + B's reconciliation);
* ``unprotected_after_kill_ms``: the longest time a position had no stop after the kill (venue truth);
* ``duplicate_entries`` (an entry client id submitted twice) and ``duplicate_stops`` (two resting stops on
  one position at the end);
* ``lost_journal_rows``: venue entries without a ``positions`` row, venue closures without a closed row,
  and symbols open on the venue but not in the database (or the reverse), once B has converged.

``fencing_trial`` SIGSTOPs the owner instead, lets B take over, resumes A after its lease expired with a
close due in its schedule, and counts the venue orders submitted after the resume (must be 0).

Usage: ``python tools/takeover.py [--trials 20] [--fencing-trials 2] [--plugins binance,bybit] [--seed 1]
[--lease-s 5] [--json PATH]``
(``DATABASE_URL`` or an embedded server).  The test suite runs a few trials (tests/app/test_takeover.py);
the figures of docs/scaling.md come from this command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

KEY, SECRET = "k" * 16, "s" * 32
SYMBOL = "XRP/USDT:USDT"
BOUND_S = 150.0  # an upper bound a healthy step never comes near (process start beside a loaded machine)
REDUCING = ("fw-c-", "fw-r-")


class Proc:
    """A subprocess whose stderr lines are kept with the wall-clock time they were read."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[tuple[float, str]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, *args: str, env: dict[str, str], stdout: bool = False) -> Proc:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "framework.app.cli", *args, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines.append((time.time(), line.decode(errors="replace").rstrip()))
            self._changed.set()
        self._changed.set()

    def seen(self, words: str) -> float | None:
        """When a stderr line with ``words`` was read first (epoch seconds), or ``None``."""
        return next((at for at, line in self.lines if words in line), None)

    async def wait_line(self, words: str, bound_s: float = BOUND_S) -> float:
        """Wait for a stderr line with ``words``; :raises TimeoutError: (with the last lines)."""
        deadline = time.monotonic() + bound_s
        while (at := self.seen(words)) is None:
            self._changed.clear()
            if self._reader.done():
                raise RuntimeError(f"process ended without {words!r}: {self.tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {words!r} within {bound_s} s: {self.tail()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return at

    def tail(self, n: int = 15) -> str:
        return "\n".join(line for _, line in self.lines[-n:])

    async def stop(self, sig: int = signal.SIGTERM, bound_s: float = 60.0) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.process.wait(), bound_s)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        await asyncio.gather(self._reader, return_exceptions=True)
        return code


class Venue:
    """A ``framework venue`` process and its ground truth (``--truth``, refreshed with SIGUSR1)."""

    def __init__(self, proc: Proc, info: dict[str, Any], truth_path: Path) -> None:
        self.proc, self.info, self.truth_path = proc, info, truth_path

    @classmethod
    async def start(cls, plugin: str, seed: int, folder: Path) -> Venue:
        truth_path = folder / f"truth-{plugin}-{seed}.json"
        proc = await Proc.start("venue", plugin, "--speed", "10", "--seed", str(seed), "--api-key", KEY,
                                "--api-secret", SECRET, "--truth", str(truth_path), env=dict(os.environ),
                                stdout=True)
        assert proc.process.stdout is not None
        info = json.loads(await asyncio.wait_for(proc.process.stdout.readline(), BOUND_S))
        return cls(proc, info, truth_path)

    async def truth(self) -> dict[str, Any]:
        """The venue's ground truth now (it keeps running)."""
        before = self.truth_path.stat().st_mtime_ns if self.truth_path.exists() else None
        self.proc.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if self.truth_path.stat().st_mtime_ns != before:
                    truth: dict[str, Any] = json.loads(self.truth_path.read_text())
                    return truth
            await asyncio.sleep(0.05)  # polling a file the venue writes: no event crosses processes
        raise TimeoutError(f"the venue did not write its truth: {self.proc.tail()}")

    async def final_truth(self) -> dict[str, Any]:
        await self.proc.stop()
        truth: dict[str, Any] = json.loads(self.truth_path.read_text())
        return truth


def run_env(database_url: str, plugin: str, venue: Venue, lease_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "BYBIT_", "FRAMEWORK_"))}
    prefix = plugin.upper()
    env.update({"DATABASE_URL": database_url, f"{prefix}_API_KEY": KEY, f"{prefix}_API_SECRET": SECRET,
                f"{prefix}_REST_URL": venue.info["rest_url"], f"{prefix}_WS_URL": venue.info["ws_url"],
                "FRAMEWORK_LEASE_S": str(lease_s), "FRAMEWORK_MAX_NOTIONAL": "100000"})
    return env


def schedule(rng: random.Random, plugin: str, seconds: float = 30.0) -> list[dict[str, Any]]:
    """Opens (random side, a trailing stop on half of them) and closes of one symbol, 0.6 to 1.6 s apart."""
    signals, at_s = [], 0.0
    while at_s < seconds:
        side = rng.choice(["long", "short"])
        sig: dict[str, Any] = {"venue": plugin, "symbol": SYMBOL, "action": "open", "side": side,
                               "contracts": str(rng.choice([10, 20, 30])), "stop_loss_pct": "2",
                               "at_ms": int(at_s * 1000)}
        if rng.random() < 0.5:
            sig["trailing_callback_rate"] = "0.5"
        signals.append(sig)
        at_s += rng.uniform(0.6, 1.6)
        signals.append({"venue": plugin, "symbol": SYMBOL, "action": "close", "at_ms": int(at_s * 1000)})
        at_s += rng.uniform(0.6, 1.6)
    return signals


async def start_run(env: dict[str, str], plugin: str, folder: Path, name: str,
                    signals: list[dict[str, Any]] | None) -> Proc:
    args = ["run", "--plugins", plugin, "--live", "--no-tui", "--report", str(folder / f"report-{name}.json")]
    if signals is not None:
        path = folder / f"signals-{name}.jsonl"
        path.write_text("".join(json.dumps(s) + "\n" for s in signals))
        args += ["--signals", str(path)]
    return await Proc.start(*args, env=env)


def entries(truth: dict[str, Any]) -> list[dict[str, Any]]:
    """Entry orders the venue accepted (not reduce-only, not a framework close or rollback)."""
    return [o for o in truth["orders"] if o["type"] in ("market", "limit") and o["status"] != "rejected"
            and not o["reduce_only"] and not o["close_position"]
            and not (o["client_order_id"] or "").startswith(REDUCING)]


async def journal_gaps(database_url: str, plugin: str, truth: dict[str, Any]) -> dict[str, Any]:
    """What the database lacks against the venue: entries without a row, closures without a closed row,
    symbols open on one side only."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM positions WHERE venue = $1 AND account = 'default'", plugin)
        opened_events = await conn.fetchval(
            "SELECT count(*) FROM events WHERE venue = $1 AND account = 'default' AND kind = 'opened'", plugin)
    finally:
        await conn.close()
    cids = {r["entry_client_order_id"] for r in rows}
    rolled_back = {o["symbol"] for o in truth["orders"] if (o["client_order_id"] or "").startswith("fw-r-")}
    unlinked = [o["client_order_id"] for o in entries(truth)
                if o["client_order_id"] not in cids and o["symbol"] not in rolled_back]
    # a position adopted without its intent (the order's outcome was recorded, the row not yet) has no
    # entry client id: it is journaled all the same
    adopted_unlinked = sum(1 for r in rows if r["entry_client_order_id"] is None)
    missing_opens = unlinked[adopted_unlinked:]
    closed_rows = sum(1 for r in rows if r["status"] == "closed")
    venue_open = {p["symbol"] for p in truth["positions"]}
    db_open = {r["symbol"] for r in rows if r["status"] == "open"}
    closures = len(truth["closures"])
    return {"missing_opens": missing_opens, "adopted_without_client_id": adopted_unlinked, "closures": closures,
            "closed_rows": closed_rows,
            "open_mismatch": sorted(venue_open ^ db_open), "rows": len(rows), "opened_events": opened_events,
            "lost": len(missing_opens) + abs(closures - closed_rows) + len(venue_open ^ db_open)}


async def converged(database_url: str, plugin: str, venue: Venue, bound_s: float) -> tuple[dict[str, Any], float]:
    """Wait until the database agrees with the venue (B reconciles a row whose closure A never wrote after
    ``orphan_grace_ms``).  :returns: the last comparison and the seconds waited."""
    started = time.monotonic()
    while True:
        gaps = await journal_gaps(database_url, plugin, await venue.truth())
        if gaps["lost"] == 0 or time.monotonic() - started > bound_s:
            return gaps, time.monotonic() - started
        await asyncio.sleep(0.5)  # the reconciliation's schedule, in another process


def unprotected_after(truth: dict[str, Any], since_ms: float) -> int:
    """The longest time a position had no stop after ``since_ms`` (an interval still open ends now)."""
    return int(max((end - max(start, since_ms) for _, _, start, end in truth["unprotected"] if end > since_ms),
                   default=0))


def duplicate_stops(truth: dict[str, Any]) -> int:
    per_symbol = Counter(o["symbol"] for o in truth["resting_conditional"]
                         if "stop" in o["type"] and "take_profit" not in o["type"] and "trailing" not in o["type"])
    return sum(n - 1 for n in per_symbol.values() if n > 1)


@contextlib.asynccontextmanager
async def instances(plugin: str, seed: int, database_url: str, lease_s: float, folder: Path,
                    signals: list[dict[str, Any]] | None = None,
                    ) -> AsyncIterator[tuple[Venue, Proc, Proc, list[dict[str, Any]]]]:
    """A venue, owner A (running ``signals``, by default the seeded schedule) and standby B, started in
    that order."""
    rng = random.Random(seed)
    venue = await Venue.start(plugin, seed, folder)
    procs: list[Proc] = []
    try:
        env = run_env(database_url, plugin, venue, lease_s)
        signals = signals or schedule(rng, plugin)
        a = await start_run(env, plugin, folder, f"a-{plugin}-{seed}", signals)
        procs.append(a)
        await a.wait_line("submitting")
        b = await start_run(env, plugin, folder, f"b-{plugin}-{seed}", None)
        procs.append(b)
        await b.wait_line("standby for account default")
        yield venue, a, b, signals
    finally:
        for proc in procs:
            await proc.stop(signal.SIGKILL if proc.process.returncode is None and proc is procs[0] else signal.SIGTERM)
        with contextlib.suppress(Exception):
            await venue.proc.stop()


async def kill_trial(plugin: str, seed: int, database_url: str, lease_s: float = 5.0,
                     folder: Path | None = None) -> dict[str, Any]:
    """One SIGKILL trial; the figures of the module docstring."""
    rng = random.Random(seed * 7919)
    with tempfile.TemporaryDirectory(prefix="takeover-") as tmp:
        work = folder or Path(tmp)
        async with instances(plugin, seed, database_url, lease_s, work) as (venue, a, b, _):
            await asyncio.sleep(rng.uniform(0.0, 4.0))  # the seeded kill moment, within A's schedule
            killed_at = time.time()
            a.process.kill()
            await a.process.wait()
            took_over_at = await b.wait_line("took over account default")
            gaps, waited_s = await converged(database_url, plugin, venue, bound_s=90.0)
            await b.stop()
            truth = await venue.final_truth()
            gaps = await journal_gaps(database_url, plugin, truth)
        fills = len(entries(truth))
    return {
        "plugin": plugin, "seed": seed, "takeover_ms": int((took_over_at - killed_at) * 1000),
        "unprotected_after_kill_ms": unprotected_after(truth, killed_at * 1000),
        "duplicate_entries": sum(n - 1 for n in Counter(o["client_order_id"] for o in entries(truth)).values()
                                 if n > 1),
        "duplicate_stops": duplicate_stops(truth),
        "lost_journal_rows": gaps["lost"], "journal": gaps, "entries": fills,
        "converged_after_s": round(waited_s, 1),
        "unprotected_at_end": [p["symbol"] for p in truth["positions"] if not p["protected"]],
    }


async def fencing_trial(plugin: str, seed: int, database_url: str, lease_s: float = 5.0,
                        close_at_s: float = 12.0) -> dict[str, Any]:
    """SIGSTOP an idle owner holding a position whose close is due at ``close_at_s``; resume it after B took
    over and the close fell due: the venue orders submitted after the resume and both logs.  No trailing
    stop, so B (a protected position, no signals) has nothing to send: every order after the resume would
    be A's.  (A pause that lands *during* a venue request is another case: docs/scaling.md.)"""
    rng = random.Random(seed)
    signals = [{"venue": plugin, "symbol": SYMBOL, "action": "open", "side": rng.choice(["long", "short"]),
                "contracts": "20", "stop_loss_pct": "5", "at_ms": 0},  # wide: still open when the close is due
               {"venue": plugin, "symbol": SYMBOL, "action": "close", "at_ms": int(close_at_s * 1000)}]
    with tempfile.TemporaryDirectory(prefix="fencing-") as tmp:
        async with instances(plugin, seed, database_url, lease_s, Path(tmp), signals) as (venue, a, b, _):
            opened_at = await a.wait_line("opened")
            a.process.send_signal(signal.SIGSTOP)
            stopped_at = time.time()
            await b.wait_line("took over account default")
            due = max(stopped_at + 2 * lease_s, opened_at + close_at_s + 1)
            await asyncio.sleep(max(0.0, due - time.time()))  # A's lease has expired and its close is due
            before = await venue.truth()
            resumed_at = time.time()
            a.process.send_signal(signal.SIGCONT)
            await a.wait_line("lease of account default lost")
            after = await venue.truth()
            new_orders = [o for o in after["orders"][len(before["orders"]):]]
            await a.stop()
            await b.stop()
            truth = await venue.final_truth()
            a_log, b_log = a.tail(400), b.tail(400)
    return {"plugin": plugin, "seed": seed, "orders_after_resume": new_orders,
            "resumed_at_ms": int(resumed_at * 1000), "a_log": a_log, "b_log": b_log,
            "positions": truth["positions"], "unprotected_after_stop_ms": unprotected_after(truth, stopped_at * 1000)}


def summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    takeover = sorted(t["takeover_ms"] for t in trials)
    return {
        "trials": len(trials),
        "takeover_ms": {"p50": int(statistics.median(takeover)), "max": takeover[-1], "min": takeover[0]},
        "unprotected_after_kill_ms_max": max(t["unprotected_after_kill_ms"] for t in trials),
        "duplicate_entries": sum(t["duplicate_entries"] for t in trials),
        "duplicate_stops": sum(t["duplicate_stops"] for t in trials),
        "lost_journal_rows": sum(t["lost_journal_rows"] for t in trials),
        "unprotected_at_end": sum(len(t["unprotected_at_end"]) for t in trials),
        "entries": sum(t["entries"] for t in trials),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from framework.store.testing import TestDatabases

    dbs = TestDatabases()
    trials: list[dict[str, Any]] = []
    plugins = args.plugins.split(",")
    try:
        for n in range(args.trials):
            plugin = plugins[n % len(plugins)]
            trial = await kill_trial(plugin, args.seed + n, await dbs.create(), args.lease_s)
            print(json.dumps({k: v for k, v in trial.items() if k != "journal"}), file=sys.stderr, flush=True)
            trials.append(trial)
        fencing = [await fencing_trial(p, args.seed + n, await dbs.create(), args.lease_s)
                   for n in range(args.fencing_trials) for p in plugins]
    finally:
        await dbs.release()
    return {"lease_s": args.lease_s, "summary": summary(trials),
            "by_plugin": {p: summary([t for t in trials if t["plugin"] == p]) for p in plugins},
            "fencing": [{"plugin": f["plugin"], "orders_after_resume": f["orders_after_resume"],
                         "a_lost_lease": "lease of account default lost" in f["a_log"]} for f in fencing],
            "trials": trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--plugins", default="binance,bybit")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lease-s", type=float, default=5.0)
    parser.add_argument("--fencing-trials", type=int, default=2, help="SIGSTOP trials per plugin")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.write_text(text)
    print(json.dumps({k: result[k] for k in ("lease_s", "summary", "by_plugin", "fencing")}, indent=2))


if __name__ == "__main__":
    main()
