"""The engine's tunables (pydantic), with the defaults used by ``framework run``."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class EngineSettings(BaseModel):
    """Time budgets and rate limits of the position lifecycle.  Times in ms unless the name says ``_s``.

    :ivar verify_budget_ms: how long ``verify_position`` may look for the entry's position.
    :ivar flat_budget_ms: how long a rollback waits for proof that the venue is flat.
    :ivar reconcile_interval_s: period of the reconciliation backstop.
    :ivar orphan_grace_ms: a position missing from the venue snapshot is closed only when it is still
        missing in a snapshot taken at least this much later (REST lag is not absence), or when the
        stream said it is flat.
    :ivar unresolved_order_grace_ms: an entry order the venue does not know is declared expired only
        after this age.
    :ivar protect_attempts / protect_retry_ms: bounded retries of a stop placement on transient errors.
    :ivar adopt_stop_pct: stop distance (percent of the mark / entry price) for an adopted position
        whose intended stop is unknown.
    :ivar trailing_min_interval_ms / trailing_min_change_pct: rate limit of trailing-stop moves.
    :ivar native_trailing_stop: let the venue run a position's trailing stop when the driver declares
        ``native_trailing_stop`` and the spec fits its limits (it then trails while this process is down);
        ``False``: the engine always trails.
    :ivar reprotect_settle_ms: after the stream reports a position's stop gone, how long the frames of a
        closure may take to arrive (a venue cancels a closed position's stops) before a new stop is placed.
    :ivar mark_jump_band_pct / mark_confirm_ticks: a mark price more than the band away from the last
        accepted one is held (and alerted), not acted on, until this many ticks in a row confirm the new level.
    :ivar fill_grace_ms: how long a flat position frame waits for the closing fill's frame, so the closure
        carries its reason and price whichever the venue sends first (``PositionBook``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    verify_budget_ms: Annotated[int, Field(ge=0)] = 10_000
    flat_budget_ms: Annotated[int, Field(ge=0)] = 3_000
    reconcile_interval_s: Annotated[float, Field(gt=0)] = 30.0
    orphan_grace_ms: Annotated[int, Field(ge=0)] = 30_000  # > the worst REST lag seen (24 s, I-4)
    unresolved_order_grace_ms: Annotated[int, Field(ge=0)] = 60_000
    protect_attempts: Annotated[int, Field(ge=1)] = 3
    protect_retry_ms: Annotated[int, Field(ge=0)] = 200
    adopt_stop_pct: Annotated[Decimal, Field(gt=0, lt=100)] = Decimal("2")
    trailing_min_interval_ms: Annotated[int, Field(ge=0)] = 1_000
    trailing_min_change_pct: Annotated[Decimal, Field(ge=0)] = Decimal("0.05")
    native_trailing_stop: bool = True
    fill_grace_ms: Annotated[int, Field(ge=0)] = 500
    reprotect_settle_ms: Annotated[int, Field(ge=0)] = 200
    mark_jump_band_pct: Annotated[Decimal, Field(gt=0)] = Decimal("5")
    mark_confirm_ticks: Annotated[int, Field(ge=1)] = 3
