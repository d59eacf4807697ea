"""``EmulatorHarness``: a :class:`framework.driver.VenueHarness` built from a wire façade class.

Each exchange plugin's ``venue_harness`` hook returns one of these with its own façade; the contract suite
and ``framework venue`` use it as ``async with harness: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic import SecretStr

from framework.models import DriverConfig
from framework.venue.core import Venue
from framework.venue.faults import Faults, parse_faults
from framework.venue.model import default_instruments
from framework.venue.prices import PricePath, Replayer

DEFAULT_SYMBOL = "XRP/USDT:USDT"
ACCOUNT = "default"


class FakeClock:
    """A millisecond clock for a :class:`Venue` (the harness option ``clock``) that moves only when told to:
    tests spend an hour of venue time (listen keys, connection lifetimes, request windows) without waiting.

    :param start: ms since the epoch (default: a minute boundary, 2027-01-15).
    """

    def __init__(self, start: int = 1_800_000_000_000) -> None:
        self.ms = start

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


class EmulatorHarness:
    """A simulated venue plus its wire façade, started on loopback.

    :param venue_name: ``binance`` / ``bybit``.
    :param emulator_factory: ``factory(venue, host=..., port=...)`` returning a façade with
        ``async start()``, ``async stop()``, ``rest_url`` and ``ws_url`` (e.g. ``BinanceEmulator``).
    :param options: ``api_key`` / ``api_secret`` (random when absent), ``seed`` (0), ``faults`` (a
        :class:`Faults`, a dict or a ``"knob=value,..."`` string), ``speed`` (start a :class:`Replayer` at
        that multiple of real time; ``None`` = prices stay put), ``port`` (0 = any free port), ``symbol``
        (``XRP/USDT:USDT``), ``balance`` (USDT, 10000), ``clock`` (ms clock for the venue).
    :raises ValueError: bad ``faults`` (the message names the knob).

    :ivar config: how a driver connects (set inside ``async with``).
    :ivar venue: the :class:`Venue` (ground truth and controls); ``emulator``: the façade;
        ``replayer``: the :class:`Replayer` or ``None``.
    """

    def __init__(
        self, venue_name: str, emulator_factory: Callable[..., Any], options: dict[str, Any] | None = None
    ) -> None:
        self.options = dict(options or {})
        self.venue_name = venue_name
        self.emulator_factory = emulator_factory
        self.symbol: str = self.options.get("symbol") or DEFAULT_SYMBOL
        faults = self.options.get("faults")
        self.faults: Faults = faults.model_copy() if isinstance(faults, Faults) else parse_faults(faults)
        self.venue: Venue | None = None
        self.emulator: Any = None
        self.replayer: Replayer | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self.config: DriverConfig | None = None

    def __repr__(self) -> str:
        return (
            f"EmulatorHarness({self.venue_name!r}, symbol={self.symbol!r}, running={self.venue is not None})"
        )

    async def __aenter__(self) -> EmulatorHarness:
        options = self.options
        api_key = options.get("api_key") or secrets.token_hex(16)
        api_secret = options.get("api_secret") or secrets.token_hex(32)
        venue_kwargs: dict[str, Any] = {"seed": options.get("seed") or 0}
        if options.get("clock") is not None:
            venue_kwargs["clock"] = options["clock"]
        venue = Venue(self.venue_name, default_instruments(), **venue_kwargs)
        venue.faults = self.faults
        venue.add_account(ACCOUNT, api_key, api_secret, Decimal(str(options.get("balance", "10000"))))
        paths = {symbol: PricePath.default(symbol) for symbol in venue.instruments}
        for symbol, path in paths.items():
            venue.set_mark_price(symbol, path.first_price)
        self.venue = venue
        self.emulator = self.emulator_factory(venue, host="127.0.0.1", port=options.get("port") or 0)
        await self.emulator.start()
        try:
            self.config = DriverConfig(
                account=ACCOUNT,
                api_key=SecretStr(api_key),
                api_secret=SecretStr(api_secret),
                rest_url=self.emulator.rest_url,
                ws_url=self.emulator.ws_url,
            )
            if options.get("speed"):
                self.replayer = Replayer(venue, paths, float(options["speed"]))
                self._replay_task = asyncio.create_task(self.replayer.run(), name="venue-replayer")
        except BaseException:
            await self.emulator.stop()
            raise
        return self

    def rest_calls(self) -> Counter[str]:
        """REST calls the emulator served so far, by ``"<METHOD> <path>"`` (a copy)."""
        return Counter(self.emulator.rest_calls) if self.emulator is not None else Counter()

    async def __aexit__(self, *exc: object) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
            self._replay_task = None
        if self.emulator is not None:
            await self.emulator.stop()
