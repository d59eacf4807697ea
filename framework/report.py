"""The run report (``framework run --report PATH``) and its rendering (``framework report PATH``).

Keys (all counts are integers, times in milliseconds)::

    positions            {"opened", "closed", "open"}
    venues               {venue: {"opened", "closed", "open"}}
    closures_by_reason   {reason: n}
    closure_latency_ms   {"p50", "p99", "max"}    venue close -> on_position_closed
    unprotected_ms       {"max", "total"}         from the venues' ground truth
    orphans              open in the DB / book but flat on the venue at the end (after convergence)
    wrong_side_orders    orders meant to reduce that would have increased a position (ground truth)
    rest_calls           {"<venue> <METHOD> <path>": n}
    stream_reconnects    {venue: n}
    errors               [str]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by nearest rank; 0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def latency_summary(values: Iterable[float]) -> dict[str, float]:
    """``{"p50", "p99", "max"}`` of ``values`` in ms, rounded to 0.1 ms."""
    values = list(values)
    return {
        "p50": round(percentile(values, 50), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values, default=0), 1),
    }


def print_report(report: dict[str, Any]) -> None:
    """Render ``report`` as rich tables on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="positions by venue")
    for column in ("venue", "opened", "closed", "open"):
        table.add_column(column, justify="right" if column != "venue" else "left")
    for venue, counts in sorted(report.get("venues", {}).items()):
        table.add_row(venue, *(str(counts.get(k, 0)) for k in ("opened", "closed", "open")))
    totals = report.get("positions", {})
    table.add_row("[b]all", *(f"[b]{totals.get(k, 0)}" for k in ("opened", "closed", "open")))
    console.print(table)

    safety = Table(title="safety")
    safety.add_column("figure")
    safety.add_column("value", justify="right")
    latency = report.get("closure_latency_ms", {})
    unprotected = report.get("unprotected_ms", {})
    for label, value in (
        ("closure latency p50 / p99 / max (ms)", f"{latency.get('p50')} / {latency.get('p99')} / {latency.get('max')}"),
        ("unprotected max / total (ms)", f"{unprotected.get('max')} / {unprotected.get('total')}"),
        ("orphans", report.get("orphans")),
        ("wrong-side orders", report.get("wrong_side_orders")),
        ("stream reconnects", report.get("stream_reconnects")),
        ("errors", len(report.get("errors", []))),
    ):
        safety.add_row(label, str(value))
    console.print(safety)

    for title, key in (("closures by reason", "closures_by_reason"), ("REST calls", "rest_calls")):
        counts = report.get(key, {})
        if counts:
            t = Table(title=title)
            t.add_column("key")
            t.add_column("n", justify="right")
            for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                t.add_row(k, str(n))
            console.print(t)
    for error in report.get("errors", []):
        console.print(f"[red]error:[/] {error}")
