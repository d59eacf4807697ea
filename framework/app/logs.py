"""Logging set-up of the command line: plain text or one JSON object per line (``--log-format json``,
python-json-logger), with context fields and every known secret masked.

Every line carries ``venue``, ``symbol``, ``client_order_id`` and ``event`` (``null`` where not known): a
caller gives them through ``extra`` (``log.info("…", extra={"venue": "bybit", "symbol": s})``), and
:class:`ContextFilter` fills in the missing ones.  :class:`Redactor` replaces the value of every secret
the settings hold (API keys and secrets, the HTTP token, the alert URLs, the database password) with
``***`` in the finished line — message, arguments and traceback alike — whatever library wrote it (a
websockets debug line shows an authentication frame with the API key in it).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr
from pythonjsonlogger.json import JsonFormatter

from framework.alerts import url_secrets

__all__ = ["CONTEXT_FIELDS", "ContextFilter", "Redactor", "configure_logging", "secrets_of"]

CONTEXT_FIELDS = ("venue", "symbol", "client_order_id", "event")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MIN_SECRET_LEN = 4  # shorter values would mask ordinary words


class ContextFilter(logging.Filter):
    """Give every record the :data:`CONTEXT_FIELDS` attributes (``None`` unless passed in ``extra``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, None)
        return True


class Redactor:
    """Masks known secret values in formatted text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values too (longest first, so a secret containing another is masked whole)."""
        merged = set(self._secrets) | {s for s in secrets if s and len(s) >= MIN_SECRET_LEN}
        self._secrets = sorted(merged, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secret(s))"


class _RedactingText(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class _RedactingJson(JsonFormatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__(["asctime", "levelname", "name", "message", *CONTEXT_FIELDS],
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def secrets_of(settings: Any, plugins: Iterable[str] = ()) -> list[str]:
    """Every secret value ``settings`` hold: its ``SecretStr`` fields, the database URL's password and each
    plugin's ``<PLUGIN>_API_KEY`` / ``<PLUGIN>_API_SECRET``; each alert URL whole and by path segment."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
    for url in settings.alert_url_list():
        found += url_secrets(url)
    if settings.database_url:
        password = urlsplit(settings.database_url).password
        if password:
            found.append(password)
    for plugin in plugins:
        prefix = plugin.upper().replace("-", "_")
        found += [v for v in (settings.value(f"{prefix}_API_KEY"), settings.value(f"{prefix}_API_SECRET")) if v]
    return found


def configure_logging(level: int, fmt: Literal["text", "json"] = "text", secrets: Iterable[str] = ()) -> Redactor:
    """Give the root logger one stderr handler in ``fmt`` masking ``secrets`` (replacing an earlier call's).

    :returns: the redactor (``add()`` more secrets once the settings are read).
    """
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(_RedactingJson(redact) if fmt == "json" else _RedactingText(redact))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "framework_cli", False)]:
        root.removeHandler(old)  # an earlier call's (tests call main() repeatedly); others' handlers stay
    handler.framework_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return redact
