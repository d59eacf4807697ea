"""Many accounts per instance: a TOML file, validated by pydantic, lists the accounts an instance may
manage; ``framework run --accounts FILE`` runs one session per account in one process, and several
processes (on several machines) given the same file share one PostgreSQL and split the accounts by lease
(docs/scaling.md).

::

    lease_s = 10                       # optional, seconds (FRAMEWORK_LEASE_S otherwise)

    [[accounts]]
    venue = "binance"
    label = "main"                     # stable: the same account always has the same label
    key_env = "BINANCE_MAIN_API_KEY"   # names of variables holding the key and secret, never the secrets
    secret_env = "BINANCE_MAIN_API_SECRET"
    max_notional = 5000                # optional client-side limits, as FRAMEWORK_MAX_*
    max_open_positions = 5

    [[accounts]]
    venue = "bybit"
    label = "hedge"                    # no key_env: an emulated venue (a demo)

An account without ``key_env`` runs against its plugin's emulator (rows labelled ``emulated-<label>``).

Signals come in as for a one-account run (``--signals FILE``, ``--signals -``, ``--signals FILE --follow``;
read once, never looped, no demo) and go to the account their ``venue`` and ``account`` (the label) name;
without ``account``, to the only account listed on that venue.  An account this process is a standby for
refuses them (another instance acts on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from framework.app.run import DRAIN_TIMEOUT_S, feed, signal_source
from framework.errors import ConfigError
from framework.models import Signal
from framework.session import PositionInfo, Session, SignalRejected
from framework.settings import Settings, load_settings

if TYPE_CHECKING:
    from framework.store import Store

log = logging.getLogger(__name__)

#: database connections per account session at most: its hot write path, lease renewal, reconciliation and
#: an open's intent at once (a one-account run has 10); 20 accounts open at most 80, not 200
ACCOUNT_POOL_SIZE = 4
LABEL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class AccountConfig(BaseModel):
    """One venue account: where, its stable label, the variables holding its keys, its limits."""

    model_config = ConfigDict(extra="forbid")

    venue: str = Field(min_length=1, description="driver plugin name: binance, bybit…")
    label: str = Field(pattern=LABEL, description="stored with every row; never change it for an account")
    key_env: str | None = Field(default=None, pattern=ENV_NAME)
    secret_env: str | None = Field(default=None, pattern=ENV_NAME)
    rest_url_env: str | None = Field(default=None, pattern=ENV_NAME)
    ws_url_env: str | None = Field(default=None, pattern=ENV_NAME)
    testnet: bool = False
    max_contracts: Decimal | None = Field(default=None, gt=0)
    max_notional: Decimal | None = Field(default=None, gt=0)
    max_open_positions: int | None = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _pairs(self) -> AccountConfig:
        if (self.key_env is None) != (self.secret_env is None):
            raise ValueError("key_env and secret_env go together")
        if (self.rest_url_env is None) != (self.ws_url_env is None):
            raise ValueError("rest_url_env and ws_url_env go together")
        if self.rest_url_env is not None and self.key_env is None:
            raise ValueError("an endpoint (rest_url_env) needs key_env / secret_env")
        return self

    @property
    def live(self) -> bool:
        return self.key_env is not None

    def settings(self, base: Settings) -> Settings:
        """Process settings for this account: its label, keys (read from the variables named), endpoint
        and limits on top of ``base``.

        :raises ConfigError: a variable named here is not set (named, never its value).
        """
        prefix = self.venue.upper().replace("-", "_")
        values: dict[str, str] = {}
        pairs = {"API_KEY": self.key_env, "API_SECRET": self.secret_env, "REST_URL": self.rest_url_env,
                 "WS_URL": self.ws_url_env}
        for suffix, variable in pairs.items():
            if variable is None:
                values[f"{prefix}_{suffix}"] = ""  # not the process-wide variable: this account's only
                continue
            value = base.value(variable)
            if not value:
                raise ConfigError(f"account {self.venue}/{self.label}: {variable} is not set")
            values[f"{prefix}_{suffix}"] = value
        settings = base.model_copy(update={"account": self.label, "max_contracts": self.max_contracts,
                                           "max_notional": self.max_notional,
                                           "max_open_positions": self.max_open_positions,
                                           "testnet": self.testnet or base.testnet}, deep=True)
        extra = settings.model_extra
        assert extra is not None  # Settings allows extras: the plugin variables
        extra.update(values)
        return settings


class AccountsFile(BaseModel):
    """The accounts file: ``lease_s`` (optional) and ``[[accounts]]``; (venue, label) unique."""

    model_config = ConfigDict(extra="forbid")

    lease_s: float | None = Field(default=None, ge=4, le=300)  # a shorter lease leaves no receive window
    accounts: list[AccountConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> AccountsFile:
        seen: set[tuple[str, str]] = set()
        for account in self.accounts:
            key = (account.venue, account.label)
            if key in seen:
                raise ValueError(f"account {account.venue}/{account.label} is listed twice")
            seen.add(key)
        return self


def load_accounts(path: Path) -> AccountsFile:
    """Read and validate an accounts file.

    :raises ConfigError: unreadable, not TOML, or invalid (naming the file, the entry and the field).
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the accounts file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a TOML file: {exc}") from None
    try:
        return AccountsFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise ConfigError(f"{path}: invalid accounts file: {problems}") from None


def route(sessions: Mapping[str, Session], sig: Signal) -> Session:
    """The session ``sig`` is for: ``"<venue>/<account>"``, or the only account listed on ``sig.venue``.

    :raises SignalRejected: no such account, or several on that venue and the signal names none.
    """
    if sig.account is not None:
        session = sessions.get(f"{sig.venue}/{sig.account}")
        if session is None:
            raise SignalRejected(f"no account {sig.account!r} on {sig.venue} in the accounts file; listed: "
                                 f"{sorted(sessions)}", venue=sig.venue, symbol=sig.symbol)
        return session
    candidates = [name for name in sessions if name.split("/", 1)[0] == sig.venue]
    if len(candidates) != 1:
        why = "none is listed" if not candidates else f"name one of {candidates} in the signal's \"account\""
        raise SignalRejected(f"signal for {sig.venue} without an account: {why}", venue=sig.venue,
                             symbol=sig.symbol)
    return sessions[candidates[0]]


class Accounts:
    """The sessions of an accounts run as one :class:`~framework.app.http.SignalTarget` for the HTTP API:
    a signal goes to its account (:func:`route`), positions and health are every account's."""

    def __init__(self, sessions: Mapping[str, Session]) -> None:
        self.sessions = sessions

    @property
    def store(self) -> Store | None:
        """A store on the one database every session shares (the API's record of signal ids)."""
        return next((s.store for s in self.sessions.values() if s.store is not None), None)

    async def submit(self, sig: Signal) -> PositionInfo | None:
        return await route(self.sessions, sig).submit(sig)

    async def close(self, venue: str, symbol: str) -> bool:
        """Close ``symbol`` on the account of ``venue`` that holds it (this process being its owner).

        :returns: ``False`` when none does.  :raises SignalRejected: several do (post a close signal that
            names the ``account``).
        """
        holding = [name for name, s in self.sessions.items() if name.split("/", 1)[0] == venue
                   and any(p.symbol == symbol for p in s.positions())]
        if len(holding) > 1:
            raise SignalRejected(f"{holding} all hold {symbol}: post a close signal naming the account",
                                 venue=venue, symbol=symbol)
        return bool(holding) and await self.sessions[holding[0]].close(venue, symbol)

    def positions(self) -> list[PositionInfo]:
        return [p for s in self.sessions.values() for p in s.positions()]

    def health(self) -> dict[str, Any]:
        """``{"accounts": {"venue/label": {venue: health}}}`` (see :meth:`Session.health`)."""
        return {"accounts": {name: s.health()["venues"] for name, s in self.sessions.items()}}


class SignalLog:
    """What became of the signals of an accounts run: counts and the failures (``accepted`` / ``failed``)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.failed: list[dict[str, Any]] = []

    async def act(self, sessions: Mapping[str, Session], sig: Signal) -> None:
        try:
            await route(sessions, sig).submit(sig)
        except Exception as exc:  # refused or failed: recorded, the feed goes on
            self.failure(sig, exc)
            return
        self.accepted += 1
        log.info("signal carried out: %s %s %s", sig.venue, sig.account or "", sig.action)

    def failure(self, sig: Signal | None, exc: Exception) -> None:
        what = f"{sig.venue}/{sig.account or '?'} {sig.symbol} {sig.action}" if sig is not None else "signal"
        log.warning("signal failed %s: %s", what, exc)
        self.failed.append({"signal": sig.model_dump(mode="json") if sig is not None else None,
                            "error": str(exc), "type": type(exc).__name__})


async def run_accounts(config: AccountsFile, *, base: Settings | None = None, duration_s: float | None = None,
                       speed: float = 100.0, ready: asyncio.Event | None = None,
                       stop: asyncio.Event | None = None, signals: Path | None = None,
                       follow: bool = False, http_port: int | None = None,
                       serving: Callable[[str], object] | None = None) -> dict[str, Any]:
    """Run one :class:`~framework.session.Session` per account in this process until ``duration_s`` passes
    or ``stop`` is set (SIGTERM / Ctrl-C too): each account is managed while this process holds its lease
    (adopted, protected, trailed, reconciled) and waited for as a standby otherwise.

    :param signals: a JSONL signal file (read once), ``-`` for stdin, ``None``: no signals; each goes to its
        account (:func:`route`).  :param follow: tail ``signals`` for new lines.
    :param http_port: serve the HTTP API over every account (:class:`Accounts`) on this port (0: any free
        port; ``FRAMEWORK_HTTP_TOKEN`` needed); ``serving`` is called with its URL.
    :returns: ``{"venue/label": health}`` at the end (see :meth:`Session.health`), and ``"signals"``:
        ``{"accepted": n, "failed": [{"signal", "error", "type"}]}`` when signals were given.
    :raises ConfigError: a bad signal file (before anything connects).
    """
    base = base or load_settings()
    if config.lease_s is not None:
        base = base.model_copy(update={"lease_s": config.lease_s})
    sessions: dict[str, Session] = {}
    for account in config.accounts:
        session = Session([account.venue], settings=account.settings(base), live=account.live, speed=speed,
                          pool_size=ACCOUNT_POOL_SIZE)
        session.emulated_account = f"emulated-{account.label}"
        sessions[f"{account.venue}/{account.label}"] = session
    source, _ = signal_source(signals, follow=follow, live=True, demo=False)  # once, in order, never looped
    outcomes = SignalLog()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    if http_port is not None and not (base.http_token and base.http_token.get_secret_value()):
        raise ConfigError("--http needs FRAMEWORK_HTTP_TOKEN (a bearer token) to be set")
    async with contextlib.AsyncExitStack() as stack:
        for name, session in sessions.items():
            await stack.enter_async_context(session)
            state = session.health()["venues"][session.plugins[0] if session.plugins else ""]["lease"]
            print(f"account {name}: {state['state'] if state else 'no lease'}", file=sys.stderr, flush=True)
        if http_port is not None:
            from framework.app.http import serve_target

            url = await stack.enter_async_context(serve_target(Accounts(sessions), outcomes.failure, base, http_port))
            print(f"HTTP API on {url} (OpenAPI: {url}/v1/openapi.json)", file=sys.stderr, flush=True)
            if serving is not None:
                serving(url)
        feeding = None if source is None else asyncio.create_task(
            feed(source, functools.partial(outcomes.act, sessions), functools.partial(outcomes.failure, None),
                 time.monotonic()), name="feed")
        if ready is not None:
            ready.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration_s)
        finally:
            if feeding is not None:  # no new signal from here on; those under way finish before the sessions stop
                feeding.cancel()
                await asyncio.gather(feeding, return_exceptions=True)
                for session in sessions.values():
                    await session.drain(DRAIN_TIMEOUT_S)
        result: dict[str, Any] = {name: session.health()["venues"] for name, session in sessions.items()}
        if signals is not None or http_port is not None:
            result["signals"] = {"accepted": outcomes.accepted, "failed": outcomes.failed}
        return result


def run_accounts_main(path: Path, duration_s: float | None, speed: float, signals: Path | None = None,
                      follow: bool = False, http_port: int | None = None) -> int:
    """``framework run --accounts FILE [--signals FILE|- [--follow]] [--http PORT]``: :func:`run_accounts`, the
    final health printed as JSON.  :returns: 0; 1 when a signal failed."""
    config = load_accounts(path)
    result = asyncio.run(run_accounts(config, duration_s=duration_s, speed=speed, signals=signals, follow=follow,
                                      http_port=http_port))
    print(json.dumps(result, default=str))
    return 1 if result.get("signals", {}).get("failed") else 0
