"""Settings from the environment or a ``.env`` file (pydantic-settings).

================================  ===================================================================
variable                          meaning
================================  ===================================================================
``DATABASE_URL``                  PostgreSQL ≥ 14 (``postgresql://…``); unset → the embedded server
``<PLUGIN>_API_KEY``              with ``<PLUGIN>_API_SECRET``: that plugin trades on a real account
                                  (``BINANCE_API_KEY``, ``BYBIT_API_KEY``, or a third-party plugin's name)
``<PLUGIN>_REST_URL``             with ``<PLUGIN>_WS_URL`` and the keys: the endpoint to drive instead of
                                  the venue's own (a ``framework venue`` process, a proxy); live path
``FRAMEWORK_LIVE``                ``true`` → confirm live mode (same as ``--live``)
``FRAMEWORK_TESTNET``             ``true`` → live plugins use the venue's test network (``--testnet``)
``FRAMEWORK_ACCOUNT``             account label stored with every row (default ``default``); the same
                                  account must keep the same label (a restart finds its rows by it)
``FRAMEWORK_LEASE_S``             lease of each venue account in the database, seconds (default 10): one
                                  instance acts on an account, others wait as standby (docs/scaling.md)
``FRAMEWORK_MAX_CONTRACTS``       client-side limit: contracts per open signal (default: none)
``FRAMEWORK_MAX_NOTIONAL``        client-side limit: contracts × mark price per open, quote currency
``FRAMEWORK_MAX_OPEN_POSITIONS``  client-side limit: open positions per venue account (default 10)
``FRAMEWORK_HTTP_TOKEN``          bearer token of the HTTP API (required to serve it)
``FRAMEWORK_HTTP_HOST``           address the HTTP API binds (default ``127.0.0.1``)
``FRAMEWORK_METRICS_HOST``        address ``--metrics-port`` binds (default ``127.0.0.1``)
``FRAMEWORK_ALERT_URLS``          apprise URLs (comma- or space-separated) that alerts are sent to
                                  (``tgram://…``, ``ntfy://…``, ``json://host/path``); a secret
``FRAMEWORK_ALERT_MIN_LEVEL``     ``info``, ``warning`` (default) or ``critical``: lower alerts are not sent
``FRAMEWORK_ALERT_POSITIONS``     ``true`` → also send a message for each opened and closed position
``FRAMEWORK_ALERT_WINDOW_S``      repeats of an unresolved incident are not sent for this long (300)
================================  ===================================================================

A plugin without keys runs against its emulator.  Secrets are ``SecretStr``: never printed.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from framework.errors import ConfigError
from framework.models import DriverConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Client-side limits checked before anything reaches a venue (``None`` = no limit).

    :ivar max_contracts: contracts per open; ``max_notional``: contracts × mark price per open, in the
        quote currency; ``max_open_positions``: open (or opening) positions per venue account.
    """

    max_contracts: Decimal | None = None
    max_notional: Decimal | None = None
    max_open_positions: int | None = None


class Settings(BaseSettings):
    """Process-wide settings; see the module docstring for the variables.

    Variables named after a plugin (``<PLUGIN>_API_KEY``…) are read for any plugin name, from keyword
    arguments, the environment or ``.env``.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="allow")

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL", repr=False)
    live: bool = Field(default=False, validation_alias="FRAMEWORK_LIVE")
    testnet: bool = Field(default=False, validation_alias="FRAMEWORK_TESTNET")
    account: str = Field(default="default", min_length=1, validation_alias="FRAMEWORK_ACCOUNT")
    lease_s: float = Field(default=10.0, ge=4, le=300, validation_alias="FRAMEWORK_LEASE_S")  # fencing: docs/scaling.md
    max_contracts: Decimal | None = Field(default=None, gt=0, validation_alias="FRAMEWORK_MAX_CONTRACTS")
    max_notional: Decimal | None = Field(default=None, gt=0, validation_alias="FRAMEWORK_MAX_NOTIONAL")
    max_open_positions: int | None = Field(default=10, gt=0, validation_alias="FRAMEWORK_MAX_OPEN_POSITIONS")
    http_token: SecretStr | None = Field(default=None, validation_alias="FRAMEWORK_HTTP_TOKEN")
    http_host: str = Field(default="127.0.0.1", validation_alias="FRAMEWORK_HTTP_HOST")
    metrics_host: str = Field(default="127.0.0.1", validation_alias="FRAMEWORK_METRICS_HOST")
    alert_urls: SecretStr | None = Field(default=None, validation_alias="FRAMEWORK_ALERT_URLS")
    alert_min_level: Literal["info", "warning", "critical"] = Field(
        default="warning", validation_alias="FRAMEWORK_ALERT_MIN_LEVEL")
    alert_positions: bool = Field(default=False, validation_alias="FRAMEWORK_ALERT_POSITIONS")
    alert_window_s: float = Field(default=300.0, gt=0, validation_alias="FRAMEWORK_ALERT_WINDOW_S")

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        # extras are plugin variables, keys among them: a repr shows the declared (safe) fields only
        return [(k, v) for k, v in super().__repr_args__() if k in type(self).model_fields]

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgres", "postgresql") or not (parts.hostname or "host=" in parts.query):
            # never echo the URL: it may carry a password
            raise ValueError("DATABASE_URL must look like postgresql://user:password@host:port/database")
        return value

    def value(self, name: str) -> str | None:
        """The variable ``name`` (e.g. ``OKX_API_KEY``) from keyword arguments, the environment or ``.env``."""
        for field_name, info in type(self).model_fields.items():
            if info.validation_alias == name:
                raw = getattr(self, field_name)
                return raw.get_secret_value() if isinstance(raw, SecretStr) else raw
        extra = self.model_extra or {}
        for key in (name, name.lower()):
            if key in extra:  # given here (an empty value too: an account of the accounts file without keys)
                return str(extra[key]) or None
        return os.environ.get(name) or None

    def live_config(self, plugin: str) -> DriverConfig | None:
        """A live :class:`DriverConfig` for ``plugin`` when its key and secret are set, else ``None``.

        ``<PLUGIN>_REST_URL`` / ``<PLUGIN>_WS_URL`` point the driver at another endpoint (both or neither).

        :raises ConfigError: a key without its secret (or the reverse), an endpoint without keys or
            without its other half; the message names the variable.
        """
        prefix = plugin.upper().replace("-", "_")
        names = {k: f"{prefix}_{k}" for k in ("API_KEY", "API_SECRET", "REST_URL", "WS_URL")}
        values = {k: self.value(n) for k, n in names.items()}
        key, secret, rest_url, ws_url = (values[k] for k in ("API_KEY", "API_SECRET", "REST_URL", "WS_URL"))
        if bool(key) != bool(secret):
            given, missing = ("API_KEY", "API_SECRET") if key else ("API_SECRET", "API_KEY")
            raise ConfigError(f"{names[given]} is set but {names[missing]} is not")
        if bool(rest_url) != bool(ws_url):
            given, missing = ("REST_URL", "WS_URL") if rest_url else ("WS_URL", "REST_URL")
            raise ConfigError(f"{names[given]} is set but {names[missing]} is not")
        if not key:
            if rest_url:
                raise ConfigError(f"{names['REST_URL']} is set but {names['API_KEY']} / {names['API_SECRET']} are not")
            return None
        for k in ("REST_URL", "WS_URL"):
            scheme = urlsplit(values[k] or "").scheme
            if values[k] and scheme not in (("http", "https") if k == "REST_URL" else ("ws", "wss")):
                raise ConfigError(f"{names[k]} must be an {'http(s)' if k == 'REST_URL' else 'ws(s)'} URL")
        return DriverConfig(account=self.account, api_key=SecretStr(key), api_secret=SecretStr(secret or ""),
                            rest_url=rest_url, ws_url=ws_url, testnet=self.testnet)

    def alert_url_list(self) -> list[str]:
        """The apprise URLs of ``FRAMEWORK_ALERT_URLS`` (empty when unset)."""
        raw = self.alert_urls.get_secret_value() if self.alert_urls is not None else ""
        return [url for url in re.split(r"[\s,]+", raw) if url]

    def limits(self) -> Limits:
        """The client-side limits (:class:`Limits`)."""
        return Limits(self.max_contracts, self.max_notional, self.max_open_positions)

    def warn_unused_keys(self, installed: list[str], loaded: list[str]) -> list[str]:
        """Warn (one line each) about keys set for an installed plugin that this run does not load.

        :returns: the warnings.
        """
        warnings = []
        for plugin in sorted(set(installed) - set(loaded)):
            prefix = plugin.upper().replace("-", "_")
            if self.value(f"{prefix}_API_KEY") or self.value(f"{prefix}_API_SECRET"):
                warnings.append(f"{prefix}_API_KEY is set but plugin {plugin!r} is not loaded: its keys are unused")
        for text in warnings:
            log.warning(text)
        return warnings


def load_settings(**overrides: object) -> Settings:
    """:class:`Settings` from the environment, turning a validation error into a :class:`ConfigError`
    that names the variable (never its value: it may be a secret)."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        raise ConfigError(f"invalid settings: {problems}") from None
