"""The run report (``framework run --report PATH``) and its rendering (``framework report PATH``).

Keys (all counts are integers, times in milliseconds)::

    positions            {"opened", "closed", "open"}
    venues               {venue: {"opened", "closed", "open"}}
    closures_by_reason   {reason: n}
    closure_latency_ms   {"p50", "p99", "max"}    venue close -> on_position_closed
    unprotected_ms       {"max", "total"}         from the venues' ground truth
    orphans              open in the DB / book but flat on the venue at the end (after convergence), or the
                         reverse; ground truth on emulated venues, a last snapshot on live ones
    wrong_side_orders    orders meant to reduce that would have increased a position (ground truth)
    rest_calls           {"<venue> <METHOD> <path>": n}
    stream_reconnects    {venue: n}
    reconciliation       {action: n}              passes, and what they did: closed, adopted, reprotected,
                                                  stale / duplicate stops cancelled, database_unavailable
    mode                 "live" when any venue traded on a real account (or its endpoint), else "emulated"
    venues.*.mode        "live" / "emulated"
    realized_pnl         {currency: str}          sum of the closures' realized PnL the venues reported
    stream_states        {venue: state}           last private-stream state (connected, disconnected…)
    open_positions       [{"venue", "symbol", "side", "contracts", "entry_price", "stop_loss",
                           "take_profit", "protected"}]   left open at the end
    failed_signals       [{"signal", "error", "type"}]   refused or failed signals (also in errors)
    listener_errors      [str]                    lifecycle listeners that raised (also in errors)
    errors               [str]                    anything that makes the exit status 1
    fatal                str | null               what ended the run early, if anything
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TextIO

#: The longest a position may be unprotected before a run counts it as a safety failure: the window between
#: an entry's fill and its stop on a venue that can rest no stop before the entry (Binance, -4509,
#: docs/conformance.md B7) is one stream latency plus one stop placement, far below this.
FILL_TO_STOP_MS = 1_000


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
        ("reconciliation", report.get("reconciliation")),
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
    for line in left_lines(report):
        console.print(line, markup=False)
    for error in report.get("errors", []):
        console.print(f"[red]error:[/] {error}")


def left_lines(report: dict[str, Any]) -> list[str]:
    """What a run leaves, as plain lines: open positions with their stop and protection, failed
    signals, listener errors, stream states, a fatal error."""
    lines = []
    positions = report.get("open_positions", [])
    if "open_positions" in report:  # reports from before this key say nothing about what was left
        lines.append(f"left open: {len(positions)} position(s)")
    for p in positions:
        state = "protected" if p.get("protected") else "UNPROTECTED"
        lines.append(f"  {p['venue']} {p['symbol']} {p['side']} {p['contracts']} entry {p.get('entry_price') or '?'} "
                     f"stop {p.get('stop_loss') or 'none'} tp {p.get('take_profit') or 'none'} {state}")
    failed = report.get("failed_signals", [])
    if failed:
        lines.append(f"failed signals: {len(failed)}")
        lines += [f"  {f['error']}" for f in failed]
    errors = report.get("listener_errors", [])
    if errors:
        lines.append(f"listener errors: {len(errors)}")
        lines += [f"  {e}" for e in errors]
    states = report.get("stream_states", {})
    if states:
        lines.append("streams: " + ", ".join(f"{venue} {state}" for venue, state in sorted(states.items())))
    if report.get("fatal"):
        lines.append(f"fatal: {report['fatal']}")
    return lines


def print_left(report: dict[str, Any], file: TextIO) -> None:
    """Print :func:`left_lines` to ``file``."""
    for line in left_lines(report):
        print(line, file=file, flush=True)
