"""The live terminal view of ``framework run`` (rich): a header (mode, venues, speed, elapsed, streams),
positions per venue, realized PnL, alerts, the event log, progress."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from framework.app.run import Run

REFRESH_S = 0.25


def header(run: Run) -> str:
    """``LIVE binance (mainnet) · emulated bybit · speed 100x · 00:01:05 · streams binance connected``."""
    modes = [f"[bold red]LIVE[/] {venue} ({'testnet' if config.testnet else 'mainnet'}, {config.account})"
             for venue, config in sorted(run.session.live_venues.items())]
    modes += [f"emulated {venue}" for venue in sorted(run.harnesses)]
    elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - run.started))
    streams = ", ".join(f"{v} {s}" for v, s in sorted(run.monitor.stream_states.items())) or "connecting"
    parts = [*modes, f"speed {run.options.speed:g}x" if run.harnesses else "", elapsed, f"streams {streams}"]
    return " · ".join(p for p in parts if p)


def pnl_line(run: Run) -> str:
    """Realized PnL totals per currency, from the closures the venues reported."""
    totals = run.monitor.realized_pnl
    return "realized PnL: " + (", ".join(f"{v:f} {c}" for c, v in sorted(totals.items())) or "0")


def positions_table(run: Run) -> Table:
    """Open positions: venue, symbol, side, size, entry, mark, stop, take-profit, unrealized PnL, protection."""
    table = Table(title="open positions", expand=True)
    numeric = ("contracts", "entry", "mark", "stop", "take-profit", "PnL")
    for column in ("venue", "symbol", "side", "contracts", "entry", "mark", "stop", "take-profit", "PnL",
                   "protection"):
        table.add_column(column, justify="right" if column in numeric else "left")
    assert run.engine is not None
    for venue, held in sorted(run.engine.positions().items()):
        harness = run.harnesses.get(venue)
        for symbol, position in sorted(held.items()):
            mark = pnl = None
            if harness is not None and harness.venue is not None:
                mark = harness.venue.mark_price(symbol)
                if position.entry_price is not None:
                    sign = 1 if position.side == "long" else -1
                    pnl = (mark - position.entry_price) * position.contracts * sign
                protected = harness.venue.is_protected(harness.config.account, symbol)
                protection = "[green]protected" if protected else "[bold red]NAKED"
            else:
                protection = "[green]stop resting" if position.stop_price else "[bold red]no stop"
            take = position.take_profit.trigger_price if position.take_profit is not None else None
            table.add_row(
                venue, symbol, position.side, str(position.contracts), str(position.entry_price or "-"),
                str(mark or "-"), str(position.stop_price or "-"), str(take or "-"),
                f"{pnl:.4f}" if pnl is not None else "-", protection,
            )
    return table


async def live_view(run: Run) -> None:
    """Redraw the view until cancelled."""
    progress = None
    task_id = None
    if run.options.duration_s:
        progress = Progress(TextColumn("run"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                            TimeRemainingColumn())
        task_id = progress.add_task("run", total=run.options.duration_s)

    def render() -> Group:
        parts: list[RenderableType] = [
            Panel(header(run), title="framework run"),
            positions_table(run),
            pnl_line(run),
            Panel("\n".join(run.monitor.alerts) or "none", title="alerts"),
            Panel("\n".join(run.monitor.log) or "waiting for events…", title="events"),
        ]
        if progress is not None and task_id is not None:
            progress.update(task_id, completed=min(time.monotonic() - run.started, run.options.duration_s or 0))
            parts.append(progress)
        return Group(*parts)

    with Live(render(), refresh_per_second=1 / REFRESH_S, transient=False) as live:
        while True:
            await asyncio.sleep(REFRESH_S)  # redraw cadence
            live.update(render())
