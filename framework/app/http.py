"""The HTTP API of ``framework run --http PORT``, for strategies in another process (aiohttp).

Every route but the OpenAPI description needs ``Authorization: Bearer <FRAMEWORK_HTTP_TOKEN>`` (401
otherwise).  The server binds ``FRAMEWORK_HTTP_HOST`` (``127.0.0.1`` by default).

==========================================  ===============================================================
route                                       what
==========================================  ===============================================================
``POST /v1/signals``                        a :class:`SignalRequest` (the signal schema plus a client
                                            ``id``), or a TradingView-alert body (:func:`from_tradingview`);
                                            acts now (``at_ms`` is ignored).  201 done; 200 the same ``id``
                                            again (nothing done twice); 422 invalid (names the field); 409
                                            refused by a client-side limit or one-way mode; 502 the venue
                                            failed.  The signal is persisted on receipt, before acting;
                                            one a crash left ``received`` is not acted on again (the
                                            reconciliation adopts whatever the venue holds).
``GET /v1/positions``                       open positions (:class:`framework.session.PositionInfo`)
``POST /v1/positions/{venue}/{symbol}/close``  reduce-only close; ``symbol`` unified (``XRP/USDT:USDT``,
                                            URL-encoded or not); 404 when no position is held
``GET /v1/health``                          per venue: mode, stream state, last reconciliation, open and
                                            unprotected positions
``GET /v1/openapi.json``                    this API as OpenAPI 3.1
==========================================  ===============================================================
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import Field, ValidationError

from framework.errors import ConfigError, FrameworkError
from framework.models import Signal
from framework.session import PositionInfo, SignalRejected

if TYPE_CHECKING:
    from framework.app.run import Run
    from framework.settings import Settings
    from framework.store import Store

log = logging.getLogger(__name__)

TRADINGVIEW_FIELDS = ("stop_loss", "stop_loss_pct", "take_profit", "take_profit_pct", "trailing_activation_pct",
                      "trailing_callback_rate")


class SignalRequest(Signal):
    """A signal sent over HTTP: the signal schema plus the client's ``id`` (1–64 characters), which makes a
    retry (a webhook sent twice) a duplicate instead of a second order."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")


def from_tradingview(body: dict[str, Any]) -> dict[str, Any]:
    """Map a TradingView-alert-style body to :class:`SignalRequest` fields.

    An alert message such as ``{"id": "{{strategy.order.id}}-{{timenow}}", "exchange": "{{exchange}}",
    "ticker": "{{ticker}}", "action": "{{strategy.order.action}}", "contracts": "{{strategy.order.contracts}}",
    "market_position": "{{strategy.market_position}}", "stop_loss_pct": "1"}``: ``exchange`` ``BINANCE`` /
    ``BYBIT`` → venue; ``ticker`` ``XRPUSDT`` or ``XRPUSDT.P`` → ``XRP/USDT:USDT``; ``market_position``
    ``flat`` (or ``action`` ``close`` / ``exit``) → close, else open ``long`` / ``short`` (from
    ``market_position``, or ``buy`` / ``sell``).  Stops and trailing keep their signal names.
    """
    ticker = str(body.get("ticker", "")).upper().split(":")[-1].removesuffix(".P")
    symbol = ticker
    for quote in ("USDT", "USDC"):
        if ticker.endswith(quote) and len(ticker) > len(quote):
            symbol = f"{ticker[:-len(quote)]}/{quote}:{quote}"
    action = str(body.get("action", "")).lower()
    position = str(body.get("market_position", "")).lower()
    mapped: dict[str, Any] = {"venue": str(body.get("exchange", "")).lower(), "symbol": symbol}
    if "id" in body:
        mapped["id"] = body["id"]
    if position == "flat" or action in ("close", "exit"):
        mapped["action"] = "close"
    else:
        mapped["action"] = "open"
        side = position if position in ("long", "short") else {"buy": "long", "sell": "short"}.get(action)
        if side is not None:
            mapped["side"] = side
        if body.get("contracts") is not None:
            mapped["contracts"] = body["contracts"]
        mapped.update({k: body[k] for k in TRADINGVIEW_FIELDS if body.get(k) is not None})
    return mapped


def _problem(status: int, error: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status)


def _fields(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(map(str, e["loc"])) or "signal", "message": e["msg"]}
            for e in exc.errors(include_url=False)]


class SignalTarget(Protocol):
    """What the API acts on: a :class:`~framework.session.Session` (one account per venue), or the sessions
    of an accounts file (``framework.app.accounts.Accounts``: signals routed by venue and account label)."""

    @property
    def store(self) -> Store | None: ...

    async def submit(self, sig: Signal) -> PositionInfo | None: ...

    async def close(self, venue: str, symbol: str) -> bool: ...

    def positions(self) -> list[PositionInfo]: ...

    def health(self) -> dict[str, Any]: ...


class Api:
    """The routes over what a run acts on (``session``: a :class:`SignalTarget`); ``on_failed`` records a
    refused or failed signal (the run's monitor)."""

    def __init__(self, session: SignalTarget, token: str, on_failed: Callable[[Signal, Exception], object]) -> None:
        self.session = session
        self.on_failed = on_failed
        self._token = token.encode()

    @web.middleware
    async def auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/v1/openapi.json":
            return await handler(request)
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._token):
            return _problem(401, "missing or wrong bearer token")
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.auth])
        app.router.add_post("/v1/signals", self.post_signal)
        app.router.add_get("/v1/positions", self.get_positions)
        app.router.add_post("/v1/positions/{venue}/{symbol:.+}/close", self.close_position)
        app.router.add_get("/v1/health", self.health)
        app.router.add_get("/v1/openapi.json", self.openapi)
        return app

    async def post_signal(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _problem(422, "the body is not JSON", fields=[{"field": "body", "message": str(exc)}])
        if not isinstance(body, dict):
            return _problem(422, "the body must be a JSON object",
                            fields=[{"field": "body", "message": "not an object"}])
        source = "http"
        if "ticker" in body:
            source, body = "tradingview", from_tradingview(body)
        try:
            request_signal = SignalRequest.model_validate(body)
        except ValidationError as exc:
            return _problem(422, "invalid signal", fields=_fields(exc))
        sig = Signal.model_validate(request_signal.model_dump(exclude={"id"}))
        store = self.session.store
        assert store is not None
        stored = sig.model_dump(mode="json")
        earlier = await store.receive_signal(request_signal.id, source, stored)
        if earlier is not None:
            if earlier.body != stored:
                return _problem(409, f"id {request_signal.id!r} was already used for a different signal",
                                id=request_signal.id)
            return web.json_response({"id": request_signal.id, "state": earlier.state, "duplicate": True,
                                      "result": earlier.result}, status=200)
        try:
            position = await self.session.submit(sig)
        except SignalRejected as exc:
            return await self._failed(request_signal.id, sig, exc, "rejected", 409)
        except FrameworkError as exc:
            return await self._failed(request_signal.id, sig, exc, "failed", 502)
        result = {"position": position.model_dump(mode="json") if position is not None else None}
        await store.finish_signal(request_signal.id, "done", result)
        return web.json_response({"id": request_signal.id, "state": "done", "duplicate": False, **result}, status=201)

    async def _failed(self, signal_id: str, sig: Signal, exc: FrameworkError, state: str, status: int) -> web.Response:
        self.on_failed(sig, exc)
        assert self.session.store is not None
        await self.session.store.finish_signal(signal_id, state, {"error": str(exc), "type": type(exc).__name__})
        return _problem(status, str(exc), id=signal_id, state=state, type=type(exc).__name__)

    async def get_positions(self, request: web.Request) -> web.Response:
        return web.json_response([p.model_dump(mode="json") for p in self.session.positions()])

    async def close_position(self, request: web.Request) -> web.Response:
        venue, symbol = request.match_info["venue"], request.match_info["symbol"]
        try:
            closed = await self.session.close(venue, symbol)
        except ConfigError as exc:
            return _problem(404, str(exc))
        except FrameworkError as exc:
            return _problem(502, str(exc), type=type(exc).__name__)
        if not closed:
            return _problem(404, "no open position", venue=venue, symbol=symbol)
        return web.json_response({"venue": venue, "symbol": symbol, "closed": True})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(self.session.health())

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi())


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API; the schemas come from the pydantic models."""
    def ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    error = ok("error", {"$ref": "#/components/schemas/Error"})
    auth: list[dict[str, list[str]]] = [{"bearer": []}]

    position = {"$ref": "#/components/schemas/PositionInfo"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "framework HTTP API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "SignalRequest": SignalRequest.model_json_schema(),
                "PositionInfo": PositionInfo.model_json_schema(),
                "Error": {"type": "object", "properties": {"error": {"type": "string"}, "fields": {
                    "type": "array", "items": {"type": "object", "properties": {
                        "field": {"type": "string"}, "message": {"type": "string"}}}}}},
            },
        },
        "paths": {
            "/v1/signals": {"post": {
                "summary": "act on a signal now (idempotent by id); a TradingView-alert body is accepted too",
                "security": auth,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/SignalRequest"}}}},
                "responses": {"201": ok("done", {"type": "object"}), "200": ok("duplicate id", {"type": "object"}),
                              "401": error, "409": error, "422": error, "502": error},
            }},
            "/v1/positions": {"get": {"summary": "open positions", "security": auth,
                                      "responses": {"200": ok("open positions", {"type": "array", "items": position}),
                                                    "401": error}}},
            "/v1/positions/{venue}/{symbol}/close": {"post": {
                "summary": "close a position reduce-only", "security": auth,
                "parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                               for n in ("venue", "symbol")],
                "responses": {"200": ok("closed", {"type": "object"}), "401": error, "404": error, "502": error},
            }},
            "/v1/health": {"get": {"summary": "streams, last reconciliation, unprotected positions", "security": auth,
                                   "responses": {"200": ok("health", {"type": "object"}), "401": error}}},
            "/v1/openapi.json": {"get": {"summary": "this description",
                                         "responses": {"200": ok("OpenAPI", {"type": "object"})}}},
        },
    }


@contextlib.asynccontextmanager
async def serve(run: Run, port: int) -> AsyncIterator[str]:
    """Serve the API for ``run`` on ``FRAMEWORK_HTTP_HOST:port`` (0: any free port); yields the base URL.

    :raises ConfigError: ``FRAMEWORK_HTTP_TOKEN`` is not set, or the address cannot be bound.
    """
    settings = run.session.settings
    assert settings is not None
    async with serve_target(run.session, run.monitor.signal_failed, settings, port) as url:
        yield url


@contextlib.asynccontextmanager
async def serve_target(target: SignalTarget, on_failed: Callable[[Signal, Exception], object], settings: Settings,
                       port: int) -> AsyncIterator[str]:
    """Serve the API over ``target`` on ``settings.http_host:port`` (0: any free port); yields the base URL.

    :raises ConfigError: ``FRAMEWORK_HTTP_TOKEN`` is not set, or the address cannot be bound.
    """
    if settings.http_token is None or not settings.http_token.get_secret_value():
        raise ConfigError("the HTTP API needs FRAMEWORK_HTTP_TOKEN (a bearer token) to be set")
    async with serve_app(Api(target, settings.http_token.get_secret_value(), on_failed).app(), settings.http_host,
                         port, "the HTTP API") as url:
        yield url


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, host: str, port: int, what: str) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (0: any free port) while the block runs; yields the base URL.

    :raises ConfigError: the address cannot be bound (named with ``what``).
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"{what} cannot listen on {host}:{port}: {exc.strerror}") from None
        bound = runner.addresses[0]
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        await runner.cleanup()
