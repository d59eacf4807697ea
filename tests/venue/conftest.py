"""Fixtures for the simulated venue: a venue on a fake clock the test advances by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from framework.venue import Venue

XRP = "XRP/USDT:USDT"
BTC = "BTC/USDT:USDT"
START_MS = 1_700_000_000_000


class FakeClock:
    """A millisecond clock that moves only when the test says so."""

    def __init__(self, start: int = START_MS) -> None:
        self.ms = start

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def venue(clock: FakeClock) -> Venue:
    """A venue named binance, account ``default`` (keys ``k`` / ``s``), XRP at 1.0000, BTC at 40000."""
    venue = Venue("binance", seed=7, clock=clock)
    venue.add_account("default", api_key="k", api_secret="s", balance=Decimal("10000"))
    venue.set_mark_price(XRP, Decimal("1.0000"))
    venue.set_mark_price(BTC, Decimal("40000"))
    return venue


@pytest.fixture
def events(venue: Venue) -> list:
    """Every event the venue emits from now on."""
    seen: list = []
    venue.subscribe(seen.append)
    return seen
