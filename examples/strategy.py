"""A strategy in the same process as the framework, through ``framework.Session``.

Run it against the emulated venues (no keys needed)::

    python examples/strategy.py

With ``BINANCE_API_KEY`` / ``BINANCE_API_SECRET`` set it would trade on that account instead, so it
refuses unless you also pass ``--live`` (read the README's "Live use" first).

It opens one protected long on Binance and one protected short on Bybit (stop-loss, take-profit and a
trailing stop, all as percent of the mark price), prints every lifecycle event, closes whatever is still
open after ``--hold`` seconds and prints the positions left (none).
"""

from __future__ import annotations

import argparse
import asyncio

from framework import Session
from framework.models import PositionEvent

SYMBOL = "XRP/USDT:USDT"


async def main(hold_s: float, live: bool) -> int:
    async with Session(["binance", "bybit"], live=live, speed=100) as session:
        events = session.events()  # subscribe before acting, so the opens' own events are seen

        async def show() -> None:
            async for event in events:
                print(f"event: {type(event).__name__} {event.model_dump(mode='json')}", flush=True)

        printer = asyncio.create_task(show())
        try:
            for venue, side in (("binance", "long"), ("bybit", "short")):
                position = await session.open(venue, SYMBOL, side, contracts=20, stop_loss_pct=1,
                                              take_profit_pct=2, trailing_activation_pct=0.2,
                                              trailing_callback_rate=0.3)
                print(f"opened: {position.venue} {position.symbol} {position.side} {position.contracts} "
                      f"@ {position.entry_price}, stop {position.stop_loss}, take-profit {position.take_profit}, "
                      f"protected {position.protected}", flush=True)
            try:  # the first closure by the venue (stop, take-profit, trailing) within hold_s, if any
                closed = await session.wait_for(lambda e: isinstance(e, PositionEvent) and e.event == "closed",
                                                timeout_s=hold_s)
                print(f"closed by the venue: {closed.venue} {closed.reason}", flush=True)
            except TimeoutError:
                pass
            for position in session.positions():
                await session.close(position.venue, position.symbol)
                print(f"closed: {position.venue} {position.symbol}", flush=True)
            print(f"left open: {len(session.positions())}", flush=True)
        finally:
            printer.cancel()
            events.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=5.0, help="seconds to hold the positions (default 5)")
    parser.add_argument("--live", action="store_true", help="confirm trading on accounts whose keys are set")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.hold, args.live)))
