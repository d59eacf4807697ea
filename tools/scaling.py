"""What one instance handles (issue 19), on the emulators, printed as JSON (figures of docs/scaling.md).

* ``accounts``: N accounts of an accounts file in one process (emulated, half Binance, half Bybit, each
  with its own in-process emulator replaying prices at 10x): seconds until every account is owned and
  reconciled, the process's resident memory, its CPU share over ``--idle-s`` seconds of steady state
  (emulators included: they run in the same process), and the lease renewals per second it sends.
* ``signals_per_s``: open + close signals carried out one after the other through ``Session.submit`` on
  one emulated account (each open verified and protected on the venue, each close confirmed), per venue.

Usage: ``python tools/scaling.py [--accounts 1,10,20] [--idle-s 10] [--signals-s 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import psutil

from framework.app.accounts import AccountsFile, run_accounts
from framework.models import Signal
from framework.session import Session
from framework.settings import Settings
from framework.store.testing import TestDatabases

LEASE_S = 10.0


async def accounts_figures(n: int, url: str, idle_s: float) -> dict[str, Any]:
    config = AccountsFile.model_validate({"lease_s": LEASE_S, "accounts": [
        {"venue": "binance" if i % 2 == 0 else "bybit", "label": f"acct{i}"} for i in range(n)]})
    process = psutil.Process()
    rss_before = process.memory_info().rss
    ready, stop = asyncio.Event(), asyncio.Event()
    started = time.perf_counter()
    run = asyncio.create_task(run_accounts(config, base=Settings(DATABASE_URL=url), ready=ready, stop=stop,
                                           speed=10))
    await asyncio.wait_for(ready.wait(), 600)
    ready_s = time.perf_counter() - started
    cpu_before, wall_before = process.cpu_times(), time.perf_counter()
    await asyncio.sleep(idle_s)  # the steady state being measured
    cpu_after, wall = process.cpu_times(), time.perf_counter() - wall_before
    rss = process.memory_info().rss
    stop.set()
    result = await run
    owned = sum(1 for venues in result.values() for v in venues.values() if v["lease"]["state"] == "owner")
    cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {"accounts": n, "owned": owned, "ready_s": round(ready_s, 2),
            "rss_mb_added": round((rss - rss_before) / 2**20, 1), "cpu_share": round(cpu_s / wall, 3),
            "lease_renewals_per_s": round(n * 3 / LEASE_S, 1)}


async def signals_figures(venue: str, url: str, seconds: float) -> dict[str, Any]:
    async with Session([venue], settings=Settings(DATABASE_URL=url), speed=1) as session:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for action in ("open", "close"):
                body: dict[str, Any] = {"venue": venue, "symbol": "XRP/USDT:USDT", "action": action}
                if action == "open":
                    body.update(side="long" if done % 4 == 0 else "short", contracts="10", stop_loss_pct="2")
                await session.submit(Signal.model_validate(body))
                done += 1
        elapsed = time.perf_counter() - started
    return {"signals": done, "seconds": round(elapsed, 1), "signals_per_s": round(done / elapsed, 1)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    dbs = TestDatabases()
    try:
        accounts = [await accounts_figures(int(n), await dbs.create(), args.idle_s) for n in args.accounts.split(",")]
        signals = {venue: await signals_figures(venue, await dbs.create(), args.signals_s)
                   for venue in ("binance", "bybit")}
    finally:
        await dbs.release()
    return {"accounts": accounts, "signals": signals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", default="1,10,20")
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--signals-s", type=float, default=10.0)
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
