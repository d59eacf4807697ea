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

``sigstop_trial`` SIGSTOPs the owner at a seeded random moment of its busy schedule (a request may be
between its lease check and the venue), lets B take over, resumes A, and judges from the venue's side
what A did after the resume: both instances record their REST traffic (``--record``), so every venue
order is attributed by client order id, every other request by who sent it, and a request the venue
accepted counts against A when the venue may have executed it after B acquired the lease.

Usage: ``python tools/takeover.py [--trials 20] [--sigstop-trials 20] [--fencing-trials 0]
[--plugins binance,bybit] [--seed 1] [--lease-s 5] [--json PATH]``
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
from urllib.parse import parse_qsl

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

    def seen(self, words: str, since: int = 0) -> float | None:
        """When a stderr line with ``words`` was read first (epoch seconds), or ``None`` (``since``: from the
        line with that index on)."""
        return next((at for at, line in self.lines[since:] if words in line), None)

    async def wait_line(self, words: str, bound_s: float = BOUND_S, since: int = 0) -> float:
        """Wait for a stderr line with ``words`` (from line ``since`` on); :raises TimeoutError: (with the last
        lines)."""
        deadline = time.monotonic() + bound_s
        while (at := self.seen(words, since)) is None:
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
                    signals: list[dict[str, Any]] | None, record: bool = False) -> Proc:
    args = ["run", "--plugins", plugin, "--live", "--no-tui", "--report", str(folder / f"report-{name}.json")]
    if record:
        args += ["--record", str(folder / f"cassette-{name}.jsonl")]
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
                    signals: list[dict[str, Any]] | None = None, record: bool = False,
                    ) -> AsyncIterator[tuple[Venue, Proc, Proc, list[dict[str, Any]]]]:
    """A venue, owner A (running ``signals``, by default the seeded schedule) and standby B, started in
    that order (``record``: each writes a cassette, ``cassette-a-…`` / ``cassette-b-…`` in ``folder``)."""
    rng = random.Random(seed)
    venue = await Venue.start(plugin, seed, folder)
    procs: list[Proc] = []
    try:
        env = run_env(database_url, plugin, venue, lease_s)
        signals = signals or schedule(rng, plugin)
        a = await start_run(env, plugin, folder, f"a-{plugin}-{seed}", signals, record)
        procs.append(a)
        await a.wait_line("submitting")
        b = await start_run(env, plugin, folder, f"b-{plugin}-{seed}", None, record)
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


def cassette_requests(path: Path) -> list[dict[str, Any]]:
    """The REST exchanges of a cassette that can change the account, in order: not a read, and not Binance's
    listen key (the user stream's credential: no order, no position changes by it)."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if e.get("kind") == "rest" and e.get("method") != "GET"
            and not e.get("path", "").endswith("/listenKey")]


def signed_params(exchange: dict[str, Any]) -> dict[str, str]:
    """A recorded request's parameters (query and form / JSON body)."""
    params = {k: str(v) for k, v in exchange.get("query", {}).items()}
    body = exchange.get("body")
    if isinstance(body, dict):
        params.update({k: str(v) for k, v in body.items()})
    elif isinstance(body, str):
        params.update(parse_qsl(body, keep_blank_values=True))
    return params


def venue_answer(exchange: dict[str, Any]) -> tuple[bool, Any]:
    """Whether the venue accepted a recorded request, and its code (Binance ``code``, Bybit ``retCode``)."""
    response = exchange.get("response")
    code = response.get("retCode", response.get("code")) if isinstance(response, dict) else None
    status = exchange.get("status")
    accepted = status is not None and status < 400 and (code is None or str(code) in ("0", "200"))
    return accepted, code if code is not None else status


def executed_by(exchange: dict[str, Any]) -> int:
    """The latest venue time (ms) at which a request the venue accepted can have been executed: its signed
    ``timestamp`` plus its ``recvWindow`` (Binance refuses it after that), else the answer's own ``time``
    (Bybit's envelope; the answer follows the execution), else when it was recorded."""
    params = signed_params(exchange)
    if "timestamp" in params:
        return int(params["timestamp"]) + int(params.get("recvWindow", 5_000))
    response = exchange.get("response")
    if isinstance(response, dict) and isinstance(response.get("time"), int):
        return int(response["time"])
    return int(exchange["t"])


def client_ids(exchanges: list[dict[str, Any]]) -> set[str]:
    """Client order ids the recorded requests carried (Binance ``newClientOrderId`` / ``clientAlgoId``,
    Bybit ``orderLinkId``)."""
    names = ("newClientOrderId", "clientAlgoId", "orderLinkId", "origClientOrderId")
    return {params[n] for e in exchanges for params in [signed_params(e)] for n in names if params.get(n)}


#: what stopped an action of the resumed owner, by the words of its ``signal failed`` line
REFUSERS = (("request not sent", "transport fence"), ("not the owner", "lease check"),
            ("stale lease epoch", "database"), ("recvWindow", "venue: receive window"),
            ("recv_window", "venue: receive window"), ("standby", "standby (the lost lease noticed)"),
            ("already open", "the book: already open"))


def refusal(line: str) -> str:
    return next((who for words, who in REFUSERS if words in line), f"other: {line[-160:]}")


async def acquired_at_ms(database_url: str, plugin: str) -> int:
    """When the current lease holder acquired the account (the database's clock, ms since the epoch)."""
    conn = await asyncpg.connect(database_url)
    try:
        at = await conn.fetchval("SELECT acquired_at FROM leases WHERE venue = $1 AND account = 'default'", plugin)
    finally:
        await conn.close()
    return int(at.timestamp() * 1000)


async def sigstop_trial(plugin: str, seed: int, database_url: str, lease_s: float = 5.0,
                        folder: Path | None = None) -> dict[str, Any]:
    """SIGSTOP the owner at a seeded random moment of its busy schedule (opens with trailing stops, closes),
    let B take over, resume A after a seeded extra pause, and judge A's venue actions after the resume:

    * ``a_late_actions``: requests of A the venue accepted and may have executed after B acquired the lease
      (:func:`executed_by`), plus venue orders (ground truth) submitted after B acquired the lease whose
      client order id A sent — must be empty;
    * ``a_answered_after_resume``: A's state-changing requests answered after the resume, with the venue's
      code (a request in flight at the stop comes back -1021 / 10002);
    * ``a_not_sent``: requests A's transport did not send after the resume (``request not sent`` in its log).
    """
    rng = random.Random(seed * 104_729)
    aimed = rng.random() < 0.5  # half the trials stop A as it submits an order: a request is likely in flight
    with tempfile.TemporaryDirectory(prefix="sigstop-") as tmp:
        work = folder or Path(tmp)
        async with instances(plugin, seed, database_url, lease_s, work, record=True) as (venue, a, b, _):
            await asyncio.sleep(rng.uniform(0.0, 4.0))  # the seeded moment, within A's schedule
            if aimed:  # its next order: the intent is recorded, the order about to be (or being) sent
                await a.wait_line("submitting", since=len(a.lines))
            a.process.send_signal(signal.SIGSTOP)
            stopped_at = time.time()
            took_over_at = await b.wait_line("took over account default")
            await asyncio.sleep(rng.uniform(0.0, 2.0))  # a seeded extra pause: B acts meanwhile
            resumed_at = time.time()
            resumed_line = len(a.lines)
            a.process.send_signal(signal.SIGCONT)
            await a.wait_line("lease of account default lost")
            await a.stop()  # its cassette complete
            acquired_ms = await acquired_at_ms(database_url, plugin)
            await b.stop()
            truth = await venue.final_truth()
            a_log = "\n".join(line for _, line in a.lines)
            a_failed = [line for _, line in a.lines[resumed_line:] if "signal failed" in line]
        a_requests = cassette_requests(work / f"cassette-a-{plugin}-{seed}.jsonl")
        b_requests = cassette_requests(work / f"cassette-b-{plugin}-{seed}.jsonl")
    after_resume = [e for e in a_requests if e["t"] >= resumed_at * 1000]
    late = [{"path": e["path"], "code": venue_answer(e)[1], "executed_by_ms": executed_by(e)}
            for e in a_requests if venue_answer(e)[0] and executed_by(e) >= acquired_ms]
    a_ids, b_ids = client_ids(a_requests), client_ids(b_requests)
    late_orders = [o["client_order_id"] for o in truth["orders"]
                   if o["ts"] >= acquired_ms and o["client_order_id"] in a_ids]
    unattributed = [o["client_order_id"] for o in truth["orders"] if o["ts"] >= stopped_at * 1000
                    and o["client_order_id"] and o["client_order_id"] not in a_ids | b_ids]
    return {
        "plugin": plugin, "seed": seed, "aimed": aimed, "paused_ms": int((resumed_at - stopped_at) * 1000),
        "a_requests": len(a_requests),
        "takeover_ms": int((took_over_at - stopped_at) * 1000),
        "a_late_actions": late + [{"order": cid} for cid in late_orders],
        "a_answered_after_resume": [(e["method"], e["path"], venue_answer(e)[1]) for e in after_resume],
        "a_not_sent": a_log.count("request not sent"),
        "a_not_sent_lines": [line[-200:] for line in a_log.splitlines() if "request not sent" in line][:10],
        "a_refusals_after_resume": [refusal(line) for line in a_failed],
        "unattributed_orders": unattributed,
        "unprotected_at_end": [p["symbol"] for p in truth["positions"] if not p["protected"]],
        "duplicate_stops": duplicate_stops(truth),
    }


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
        stops: list[dict[str, Any]] = []
        for n in range(args.sigstop_trials):
            stop = await sigstop_trial(plugins[n % len(plugins)], args.seed + n, await dbs.create(), args.lease_s)
            print(json.dumps(stop), file=sys.stderr, flush=True)
            stops.append(stop)
        fencing = [await fencing_trial(p, args.seed + n, await dbs.create(), args.lease_s)
                   for n in range(args.fencing_trials) for p in plugins]
    finally:
        await dbs.release()
    return {"lease_s": args.lease_s, "summary": summary(trials) if trials else None,
            "by_plugin": {p: summary(mine) for p in plugins if (mine := [t for t in trials if t["plugin"] == p])},
            "sigstop": sigstop_summary(stops) if stops else None,
            "fencing": [{"plugin": f["plugin"], "orders_after_resume": f["orders_after_resume"],
                         "a_lost_lease": "lease of account default lost" in f["a_log"]} for f in fencing],
            "trials": trials, "sigstop_trials": stops}


def sigstop_summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    answered = [code for t in trials for _, _, code in t["a_answered_after_resume"]]
    return {
        "trials": len(trials), "by_plugin": dict(Counter(t["plugin"] for t in trials)),
        "aimed_at_a_submission": sum(1 for t in trials if t["aimed"]),
        "a_late_actions": sum(len(t["a_late_actions"]) for t in trials),
        "trials_with_a_request_answered_after_resume": sum(1 for t in trials if t["a_answered_after_resume"]),
        "answers_after_resume": dict(Counter(str(code) for code in answered)),
        "a_not_sent": sum(t["a_not_sent"] for t in trials),
        "a_refusals_after_resume": dict(Counter(r for t in trials for r in t["a_refusals_after_resume"])),
        "unattributed_orders": sum(len(t["unattributed_orders"]) for t in trials),
        "unprotected_at_end": sum(len(t["unprotected_at_end"]) for t in trials),
        "duplicate_stops": sum(t["duplicate_stops"] for t in trials),
        "paused_ms": {"min": min(t["paused_ms"] for t in trials), "max": max(t["paused_ms"] for t in trials)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--plugins", default="binance,bybit")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lease-s", type=float, default=5.0)
    parser.add_argument("--sigstop-trials", type=int, default=20,
                        help="SIGSTOP at a random moment, alternating plugins")
    parser.add_argument("--fencing-trials", type=int, default=0, help="SIGSTOP of an idle owner, per plugin")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.write_text(text)
    print(json.dumps({k: result[k] for k in ("lease_s", "summary", "by_plugin", "sigstop", "fencing")}, indent=2))


if __name__ == "__main__":
    main()
