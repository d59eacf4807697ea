"""Fixtures for the simulated venue: a venue on a fake clock the test advances by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from framework.venue import Venue
from framework.venue.harness import FakeClock

XRP = "XRP/USDT:USDT"
BTC = "BTC/USDT:USDT"
START_MS = 1_700_000_000_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START_MS)


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
