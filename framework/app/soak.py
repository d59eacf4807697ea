"""``framework soak --minutes N``: a long run at 100× on the emulated venues with faults on, watched.

Every ``--sample`` seconds it records the process's resident memory (``VmRSS`` of ``/proc/self/status``;
the peak from ``getrusage`` elsewhere), the number of asyncio tasks, open positions and alerts so far; at
the end it prints the samples, the alerts raised and delivered, and the run report's safety figures
(orphans, wrong-side orders, unprotected time, closure latency).  A leak shows as memory or tasks growing
from sample to sample while positions stay level.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.hookspecs import hookimpl

if TYPE_CHECKING:
    from framework.settings import Settings

__all__ = ["DEFAULT_FAULTS", "rss_mib", "run_soak", "soak"]

# Faults that every long run should survive: lagging REST, duplicated, reordered and dropped frames,
# private streams cut regularly.
DEFAULT_FAULTS = ("rest_position_lag_ms=1500,duplicate_rate=0.02,reorder_rate=0.02,drop_rate=0.01,"
                  "disconnect_every_ms=30000")


def rss_mib() -> float:
    """Resident memory of this process in MiB (the peak where ``/proc`` is not available)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


async def soak(minutes: float, *, plugins: list[str] | None = None, faults: str | None = DEFAULT_FAULTS,
               speed: float = 100.0, sample_s: float = 10.0, seed: int = 0,
               settings: Settings | None = None) -> dict[str, Any]:
    """Run the demo signals for ``minutes`` at ``speed`` with ``faults``, sampling every ``sample_s`` s.

    :returns: ``{"minutes", "speed", "faults", "samples": [{"t_s", "rss_mib", "tasks", "open", "alerts"}],
        "memory_growth_mib", "tasks_growth", "alerts": {level: n}, "alerts_delivered": {result: n} | None,
        "safety": {"orphans", "wrong_side_orders", "unprotected_ms", "closure_latency_ms", "positions",
        "errors", "open_positions"}}``.
    """
    from framework.app.run import Run, RunOptions  # not at import: the CLI reads DEFAULT_FAULTS for --help

    run = Run(RunOptions(plugins=plugins, duration_s=minutes * 60, speed=speed, seed=seed, faults=faults,
                         tui=False), settings)
    alerts: dict[str, int] = {"info": 0, "warning": 0, "critical": 0}

    class _Alerts:  # counts every alert by level, delivered or not
        @hookimpl
        def on_alert(self, alert: Any) -> None:
            alerts[alert.level] += 1

    run.session.listeners.append(("soak-alerts", _Alerts()))
    samples: list[dict[str, Any]] = []
    started = time.monotonic()

    def sample() -> None:
        engine = run.session.engine
        open_ = sum(len(held) for held in engine.positions().values()) if engine is not None else 0
        samples.append({"t_s": round(time.monotonic() - started, 1), "rss_mib": round(rss_mib(), 1),
                        "tasks": len(asyncio.all_tasks()), "open": open_, "alerts": sum(alerts.values())})

    task = asyncio.create_task(run.execute(), name="soak-run")
    while not task.done():
        await asyncio.wait({task}, timeout=sample_s)  # the sampling period, not a synchronisation
        if not task.done():
            sample()
    report = task.result()
    delivered = None
    if run.session.alerts is not None:
        delivered = {k: run.session.alerts.counters[k] for k in ("sent", "failed", "dropped", "suppressed")}
    steady = samples[len(samples) // 4:] or samples or [{"rss_mib": 0.0, "tasks": 0}]  # after the warm-up
    return {
        "minutes": minutes, "speed": speed, "faults": faults, "samples": samples,
        "memory_growth_mib": round(steady[-1]["rss_mib"] - steady[0]["rss_mib"], 1),
        "tasks_growth": steady[-1]["tasks"] - steady[0]["tasks"],
        "alerts": alerts, "alerts_delivered": delivered,
        "safety": {k: report[k] for k in ("orphans", "wrong_side_orders", "unprotected_ms", "closure_latency_ms",
                                          "positions", "errors", "open_positions")},
    }


def run_soak(minutes: float, *, plugins: list[str] | None = None, faults: str | None = DEFAULT_FAULTS,
             sample_s: float = 10.0, json_path: Path | None = None) -> int:
    """``framework soak``: print the figures (JSON with ``json_path``).

    :returns: 0; 1 on a safety failure (orphan, wrong-side order, a position unprotected longer than
        :data:`~framework.app.report.FILL_TO_STOP_MS`), as ``framework run``.
    """
    from framework.app.report import FILL_TO_STOP_MS

    result = asyncio.run(soak(minutes, plugins=plugins, faults=faults, sample_s=sample_s))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"soak: {minutes:g} min at {result['speed']:g}x, faults {result['faults'] or 'none'}")
    print(f"{'t (s)':>8} {'RSS MiB':>8} {'tasks':>6} {'open':>5} {'alerts':>6}")
    for row in result["samples"]:
        print(f"{row['t_s']:>8} {row['rss_mib']:>8} {row['tasks']:>6} {row['open']:>5} {row['alerts']:>6}")
    safety = result["safety"]
    print(f"memory growth after warm-up: {result['memory_growth_mib']} MiB; tasks growth: {result['tasks_growth']}")
    print(f"alerts raised: {result['alerts']}; delivered: {result['alerts_delivered'] or 'no FRAMEWORK_ALERT_URLS'}")
    print(f"positions {safety['positions']}; orphans {safety['orphans']}; wrong-side orders "
          f"{safety['wrong_side_orders']}; unprotected ms {safety['unprotected_ms']}; closure latency ms "
          f"{safety['closure_latency_ms']}; errors {len(safety['errors'])}")
    unsafe = safety["orphans"] or safety["wrong_side_orders"] or safety["unprotected_ms"]["max"] > FILL_TO_STOP_MS
    return 1 if unsafe else 0
