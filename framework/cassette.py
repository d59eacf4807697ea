"""Recorded sessions ("cassettes"): every REST request and response and every WebSocket frame a driver
exchanged with its venue, in order, with timestamps, as JSON lines.

Recording hooks the transports, once for every plugin: a driver hands its ccxt client to
:func:`record_transport` (its aiohttp session gets a middleware) and opens its sockets with
:func:`ws_connect` (a ``websockets`` connection that logs what it sends and receives).  Both do nothing
unless a :class:`Recorder` is active (``framework run --record FILE``, ``framework check --record FILE``).

One line per exchange (``t``: ms since the epoch, UTC; ``seq``: order of observation)::

    {"kind": "meta", "format": "framework-cassette/1", "t": ..., "source": "...", "venue": "binance"}
    {"kind": "rest", "t": ..., "seq": 1, "venue": "binance", "method": "POST", "path": "/fapi/v1/order",
     "query": {...}, "body": {...} | "text" | null, "status": 200, "response": {...} | "text"}
    {"kind": "ws", "t": ..., "seq": 2, "venue": "binance", "path": "/private/ws", "dir": "recv" | "send",
     "frame": "<the text frame, exactly as sent>"}

Secrets never reach the file: API keys and secrets (the ccxt client's own), signatures, listen keys and
account ids are replaced by ``"<redacted>"`` — by field name wherever they appear (query, bodies, frames,
URLs) and, as a last pass, by value on every line (a listen key a response handed out is redacted in the
socket URL and frames that follow).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from websockets.asyncio.client import ClientConnection, connect

log = logging.getLogger(__name__)

FORMAT = "framework-cassette/1"
KINDS = ("meta", "rest", "ws")
REDACTED = "<redacted>"
#: field names whose values are secrets or identify the account, wherever they appear (case-insensitive)
SECRET_FIELDS = frozenset(name.lower() for name in (
    "signature", "sign", "apiKey", "api_key", "X-MBX-APIKEY", "X-BAPI-API-KEY", "X-BAPI-SIGN", "listenKey",
    "secret", "uid", "userId", "user_id", "accountId", "account_id", "subUid", "subMemberId", "masterUid",
    "parentUid", "inviterID", "affiliateID", "ips",
))


class Recorder:
    """Writes cassette lines to ``path`` (or an open text stream), redacting secrets.

    :param secrets: values to redact wherever they appear (API keys and secrets); more are added as
        they are seen (the clients' keys, listen keys handed out by the venue).
    :param source: free text for the ``meta`` line (e.g. ``framework check --plugin bybit``).
    """

    def __init__(self, path: Path | str | IO[str], *, secrets: Iterable[str] = (), source: str = "") -> None:
        self._owned = isinstance(path, Path | str)
        self._out: IO[str] = open(path, "w", encoding="utf-8") if isinstance(path, Path | str) else path  # noqa: SIM115
        self._secrets: set[str] = set()
        self.seq = 0
        for value in secrets:
            self.add_secret(value)
        self._write({"kind": "meta", "format": FORMAT, "t": _now_ms(), "source": source})

    def add_secret(self, value: str | None) -> None:
        """Redact ``value`` from every later line (values shorter than 6 characters are too common)."""
        if value and len(value) >= 6:
            self._secrets.add(value)

    def rest(self, venue: str, method: str, url: str, body: str | None, status: int | None,
             response: str | None, error: str | None = None) -> None:
        """Record one REST exchange (``status``/``response`` ``None`` when no answer came: ``error``)."""
        parts = urlsplit(url)
        entry: dict[str, Any] = {
            "kind": "rest", "venue": venue, "method": method.upper(), "path": parts.path,
            "query": dict(parse_qsl(parts.query, keep_blank_values=True)), "body": _maybe_json(body),
            "status": status, "response": _maybe_json(response),
        }
        if error is not None:
            entry["error"] = error
        self._harvest(entry["response"])
        self._write(entry)

    def frame(self, venue: str, url: str, direction: str, frame: str | bytes) -> None:
        """Record one WebSocket frame (``direction``: ``recv`` or ``send``)."""
        text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
        self._write({"kind": "ws", "venue": venue, "path": urlsplit(url).path, "dir": direction,
                     "frame": _redact_frame(text)})

    def close(self) -> None:
        if self._owned:
            self._out.close()

    def _harvest(self, value: Any) -> None:
        """Remember secrets a venue hands out (a listen key) so later lines redact them."""
        if isinstance(value, dict):
            for key, item in value.items():
                if key.lower() in SECRET_FIELDS and isinstance(item, str):
                    self.add_secret(item)
                else:
                    self._harvest(item)
        elif isinstance(value, list):
            for item in value:
                self._harvest(item)

    def _write(self, entry: dict[str, Any]) -> None:
        self.seq += 1
        line = json.dumps({"t": _now_ms(), "seq": self.seq, **_redact(entry)}, separators=(",", ":"))
        for value in sorted(self._secrets, key=len, reverse=True):
            line = line.replace(value, REDACTED)
        self._out.write(line + "\n")
        self._out.flush()


_active: Recorder | None = None


def active_recorder() -> Recorder | None:
    """The recorder of this process, if one is recording."""
    return _active


@contextlib.contextmanager
def recording(path: Path | str | IO[str], *, secrets: Iterable[str] = (), source: str = "") -> Iterator[Recorder]:
    """Record every transport opened while the block runs into ``path`` (one recorder per process)."""
    global _active
    if _active is not None:
        raise RuntimeError("a recording is already active")
    recorder = Recorder(path, secrets=secrets, source=source)
    _active = recorder
    try:
        yield recorder
    finally:
        _active = None
        recorder.close()


# --- the transport hooks -----------------------------------------------------------------------------


def record_transport(exchange: Any, venue: str) -> None:
    """Record ``exchange``'s REST traffic (a ccxt async client) while a recorder is active.

    ccxt creates its aiohttp session on first use (``open``); this wraps ``open`` so that the session it
    gets carries a middleware logging each request with its response.  The client's keys are redacted.
    """
    original_open = exchange.open

    def open_recording(*args: Any, **kwargs: Any) -> Any:
        recorder = _active
        if recorder is not None and exchange.session is None:
            recorder.add_secret(exchange.apiKey)
            recorder.add_secret(exchange.secret)
            # ccxt's own connector (ccxt.async_support.base.exchange.open), plus the middleware
            if exchange.ssl_context is None:
                exchange.ssl_context = ssl.create_default_context(cafile=exchange.cafile) if exchange.verify \
                    else exchange.verify
            exchange.tcp_connector = aiohttp.TCPConnector(ssl=exchange.ssl_context, enable_cleanup_closed=True,
                                                          family=socket.AF_UNSPEC, happy_eyeballs_delay=0)
            exchange.session = aiohttp.ClientSession(connector=exchange.tcp_connector,
                                                     trust_env=exchange.aiohttp_trust_env,
                                                     middlewares=(_rest_middleware(recorder, venue),))
        return original_open(*args, **kwargs)

    exchange.open = open_recording


Handler = Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]]


def _rest_middleware(recorder: Recorder, venue: str) -> Callable[[aiohttp.ClientRequest, Handler],
                                                                  Awaitable[aiohttp.ClientResponse]]:
    async def middleware(request: aiohttp.ClientRequest, handler: Handler) -> aiohttp.ClientResponse:
        body = None
        if isinstance(request.body, aiohttp.payload.Payload):
            with contextlib.suppress(Exception):
                body = (await request.body.as_bytes()).decode("utf-8", "replace") or None
        try:
            response = await handler(request)
        except BaseException as exc:
            recorder.rest(venue, request.method, str(request.url), body, None, None, error=type(exc).__name__)
            raise
        text = (await response.read()).decode("utf-8", "replace")
        recorder.rest(venue, request.method, str(request.url), body, response.status, text)
        return response

    return middleware


class _RecordingConnection(ClientConnection):
    """A ``websockets`` client connection logging every text frame it sends and receives."""

    venue = ""
    url = ""

    async def recv(self, decode: bool | None = None) -> Any:
        message = await super().recv(decode)
        if (recorder := _active) is not None:
            recorder.frame(self.venue, self.url, "recv", message)
        return message

    async def send(self, message: Any, *, text: bool | None = None) -> None:
        if (recorder := _active) is not None and isinstance(message, str | bytes):
            recorder.frame(self.venue, self.url, "send", message)
        await super().send(message, text=text)


def ws_connect(url: str, venue: str, **kwargs: Any) -> connect:
    """``websockets.connect(url, **kwargs)``, recording the connection's frames while a recorder is
    active (use it exactly as ``websockets.connect``: ``async with ws_connect(...) as ws``)."""
    if _active is not None:
        kwargs["create_connection"] = type("RecordingConnection", (_RecordingConnection,),
                                           {"venue": venue, "url": url})
    return connect(url, **kwargs)


# --- reading -----------------------------------------------------------------------------------------


def is_cassette_line(line: str) -> bool:
    """Whether ``line`` is a cassette entry (a raw frame log holds venue frames, which have no ``kind``
    of ours)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and entry.get("kind") in KINDS and "seq" in entry


def read_cassette(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The entries of a cassette, in order.

    :raises ValueError: a line is not a cassette entry (the message gives its number).
    """
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not is_cassette_line(line):
            raise ValueError(f"line {number}: not a cassette entry")
        entries.append(json.loads(line))
    return entries


def received_frames(entries: Iterable[dict[str, Any]], venue: str | None = None) -> list[str]:
    """The frames a venue sent (``ws`` / ``recv``), in order, optionally of one venue only."""
    return [e["frame"] for e in entries if e["kind"] == "ws" and e.get("dir") == "recv"
            and (venue is None or e.get("venue") in (None, venue))]


# --- redaction ---------------------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _maybe_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        query = dict(parse_qsl(text, keep_blank_values=True)) if "=" in text and " " not in text else None
        return query or text


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and k.lower() in SECRET_FIELDS else _redact(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _redact_frame(text: str) -> str:
    """A frame with its secret fields redacted; a Bybit ``auth`` request's arguments (key, expiry,
    signature) go entirely.  A frame that is not JSON is kept as is (the value pass still applies)."""
    try:
        frame = json.loads(text)
    except ValueError:
        return text
    redacted = _redact(frame)
    if isinstance(redacted, dict) and redacted.get("op") == "auth":
        redacted = {**redacted, "args": [REDACTED for _ in redacted.get("args") or []]}
    return text if redacted == frame else json.dumps(redacted, separators=(",", ":"))
