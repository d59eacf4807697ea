"""Settings from the environment or a ``.env`` file (pydantic-settings).

=========================  ==========================================================================
variable                   meaning
=========================  ==========================================================================
``DATABASE_URL``           PostgreSQL ≥ 14 to use; unset → the embedded server in the state directory
``BINANCE_API_KEY``        with ``BINANCE_API_SECRET``: trade on the real Binance USDⓈ-M (live mode)
``BYBIT_API_KEY``          with ``BYBIT_API_SECRET``: trade on the real Bybit v5 linear (live mode)
``<PLUGIN>_API_KEY``       the same for a third-party plugin named ``<plugin>``
``FRAMEWORK_TESTNET``      ``true`` → live plugins use the venue's test network (same as ``--testnet``)
``FRAMEWORK_ACCOUNT``      account label stored with every row (default ``default``)
=========================  ==========================================================================

A plugin without keys runs against its emulator.  Secrets are ``SecretStr``: never printed.
"""

from __future__ import annotations

import os

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from framework.models import DriverConfig


class Settings(BaseSettings):
    """Process-wide settings; see the module docstring for the variables."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    testnet: bool = Field(default=False, validation_alias="FRAMEWORK_TESTNET")
    account: str = Field(default="default", validation_alias="FRAMEWORK_ACCOUNT")
    binance_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("BINANCE_API_KEY"))
    binance_api_secret: SecretStr | None = Field(default=None, validation_alias="BINANCE_API_SECRET")
    bybit_api_key: SecretStr | None = Field(default=None, validation_alias="BYBIT_API_KEY")
    bybit_api_secret: SecretStr | None = Field(default=None, validation_alias="BYBIT_API_SECRET")

    def live_config(self, plugin: str) -> DriverConfig | None:
        """A live :class:`DriverConfig` for ``plugin`` when both its key and secret are set, else ``None``."""
        key = getattr(self, f"{plugin}_api_key", None) or _env_secret(f"{plugin.upper()}_API_KEY")
        secret = getattr(self, f"{plugin}_api_secret", None) or _env_secret(f"{plugin.upper()}_API_SECRET")
        if key is None or secret is None:
            return None
        return DriverConfig(account=self.account, api_key=key, api_secret=secret, testnet=self.testnet)


def _env_secret(name: str) -> SecretStr | None:
    value = os.environ.get(name)
    return SecretStr(value) if value else None
