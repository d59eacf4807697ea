"""The live terminal view of ``framework run`` (rich): positions per venue, the event log, progress."""

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
    from framework.app import Run

REFRESH_S = 0.25


def positions_table(run: Run) -> Table:
    """Open positions: venue, symbol, side, size, entry, mark, stop, unrealized PnL, protection."""
    table = Table(title="open positions", expand=True)
    for column in ("venue", "symbol", "side", "contracts", "entry", "mark", "stop", "PnL", "protection"):
        table.add_column(column, justify="right" if column in ("contracts", "entry", "mark", "stop", "PnL") else "left")
    assert run.engine is not None
    for venue, parts in sorted(run.engine.venues.items()):
        harness = run.harnesses.get(venue)
        for symbol, position in sorted(parts.book.positions().items()):
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
            table.add_row(
                venue, symbol, position.side, str(position.contracts), str(position.entry_price or "-"),
                str(mark or "-"), str(position.stop_price or "-"), f"{pnl:.4f}" if pnl is not None else "-",
                protection,
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
        events = Panel("\n".join(run.monitor.log) or "waiting for events…", title="events")
        parts: list[RenderableType] = [positions_table(run), events]
        if progress is not None and task_id is not None:
            progress.update(task_id, completed=min(time.monotonic() - run.started, run.options.duration_s or 0))
            parts.append(progress)
        return Group(*parts)

    with Live(render(), refresh_per_second=1 / REFRESH_S, transient=False) as live:
        while True:
            await asyncio.sleep(REFRESH_S)  # redraw cadence
            live.update(render())
