"""``framework`` command line: run | check | plugins | venue | replay | report | bench.

Every sub-command is a thin layer over the library; exit status 0 on success, 2 on bad usage or
configuration (unknown plugin, bad fault spec), 1 on a failed run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework import __version__
from framework.app.logs import configure_logging
from framework.errors import ConfigError, FrameworkError

if TYPE_CHECKING:
    from framework.venue import Faults

log = logging.getLogger("framework")


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [part for part in value.split(",") if part.strip()]


def _faults(spec: str) -> Faults:
    from framework.venue import parse_faults

    try:
        return parse_faults(spec)
    except ValueError as exc:
        raise ConfigError(f"--faults: {exc}") from exc


# --- framework run -----------------------------------------------------------------------------------


MAX_SPEED = 1000.0


def _check_speed(speed: float) -> None:
    if not math.isfinite(speed) or not 0 < speed <= MAX_SPEED:
        raise ConfigError(f"--speed must be a number above 0 and at most {MAX_SPEED:g}, not {speed}")


def cmd_run(args: argparse.Namespace) -> int:
    from framework.app.run import RunOptions, run_main
    from framework.settings import load_settings

    _check_speed(args.speed)
    if args.duration is not None and (not math.isfinite(args.duration) or args.duration <= 0):
        raise ConfigError(f"--duration must be a number of seconds above 0, not {args.duration}")
    if args.follow and (args.signals is None or str(args.signals) == "-"):
        raise ConfigError("--follow needs --signals FILE")
    if args.http is not None and not 0 <= args.http <= 65535:
        raise ConfigError(f"--http must be a TCP port (0-65535), not {args.http}")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise ConfigError(f"--metrics-port must be a TCP port (0-65535), not {args.metrics_port}")
    if args.faults:
        _faults(args.faults)  # fail fast, before anything starts
    if args.accounts is not None:
        from framework.app.accounts import run_accounts_main

        unsupported = [flag for flag, given in (("--metrics-port", args.metrics_port is not None),
                                                ("--plugins", args.plugins)) if given]
        if unsupported:
            raise ConfigError(f"--accounts runs the listed accounts (positions, signals from --signals or --http); "
                              f"not with {', '.join(unsupported)} yet")
        return run_accounts_main(args.accounts, args.duration, args.speed, args.signals, args.follow, args.http)
    settings = load_settings()
    from framework.app.logs import secrets_of
    from framework.plugins import installed_plugins

    args.redact.add(secrets_of(settings, installed_plugins()))  # masked in every log line from here on
    tui = args.tui and sys.stdout.isatty()  # piped output logs events line by line instead
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING if tui else logging.INFO)
    options = RunOptions(
        plugins=_split(args.plugins), disabled_plugins=args.disable_plugin, duration_s=args.duration,
        speed=args.speed, seed=args.seed, signals=args.signals, follow=args.follow, faults=args.faults,
        report=args.report, tui=tui, flatten_on_exit=args.flatten_on_exit, testnet=args.testnet, live=args.live,
        http_port=args.http, metrics_port=args.metrics_port,
    )
    with _recording(args.record, "framework run"):
        return run_main(options, settings)


@contextlib.contextmanager
def _recording(path: Path | None, source: str) -> Iterator[None]:
    """Record every REST exchange and WebSocket frame into ``path`` (``--record``) while the block runs."""
    from framework.cassette import recording

    with contextlib.ExitStack() as stack:
        if path is not None:
            try:
                stack.enter_context(recording(path, source=source))
            except OSError as exc:
                raise ConfigError(f"--record {path}: cannot write: {exc.strerror or exc}") from None
        yield


# --- framework check ---------------------------------------------------------------------------------


async def _run_check(args: argparse.Namespace) -> int:
    from framework.app.check import Check
    from framework.app.logs import secrets_of
    from framework.driver import Driver
    from framework.plugins import installed_plugins, load_plugins
    from framework.settings import load_settings

    settings = load_settings()
    args.redact.add(secrets_of(settings, installed_plugins()))
    pm = load_plugins([args.plugin])
    config = settings.live_config(args.plugin)
    if config is None:
        prefix = args.plugin.upper()
        raise ConfigError(f"framework check trades on an account: set {prefix}_API_KEY and {prefix}_API_SECRET "
                          f"(a test-network account by default)")
    config = config.model_copy(update={"testnet": not args.mainnet})
    driver = Driver(pm, args.plugin)
    where = config.rest_url or ("mainnet" if args.mainnet else "test network")
    print(f"framework check: {args.plugin} account {config.account} on {where}, {args.symbol}", file=sys.stderr)
    check = Check(driver, config, args.symbol, budget_s=args.budget,
                  progress=lambda line: print(f"check: {line}", file=sys.stderr, flush=True))
    task = asyncio.ensure_future(check.run())
    loop = asyncio.get_running_loop()

    def interrupt() -> None:  # the first signal stops the steps; the cleanup always runs to its end
        if check.result.interrupted or task.done():
            print("check: cleaning up, please wait", file=sys.stderr, flush=True)
            return
        check.result.interrupted = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    result = check.result
    if args.json is not None:
        args.json.write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"framework check: {result.venue} {result.symbol}"
                        + (" (interrupted)" if result.interrupted else ""))
    for column in ("guarantee", "result", "evidence"):
        table.add_column(column, overflow="fold")
    styles = {"pass": "green", "fail": "bold red", "not supported": "yellow", "not run": "dim"}
    for row in (*result.rows, result.cleanup):
        table.add_row(row.guarantee, f"[{styles[row.status]}]{row.status}[/]", row.evidence)
    Console(width=160).print(table)
    if result.interrupted:
        return 130
    return 0 if result.passed else 1


def cmd_check(args: argparse.Namespace) -> int:
    if args.mainnet and not args.i_understand:
        raise ConfigError("--mainnet trades real money: add --i-understand to confirm")
    if args.testnet and args.mainnet:
        raise ConfigError("--testnet and --mainnet exclude each other")
    if not (math.isfinite(args.budget) and 0 < args.budget <= 300):
        raise ConfigError(f"--budget must be above 0 and at most 300 seconds, not {args.budget}")
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)  # the steps and the table, not every request
    with _recording(args.record, f"framework check --plugin {args.plugin}"):
        return asyncio.run(_run_check(args))


# --- framework plugins -------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    from framework.plugins import describe, load_plugins

    rows = describe(load_plugins(_split(args.plugins)))
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="framework plugins")
    for column in ("name", "version", "venue", "capabilities", "conformance", "hooks"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row.name, row.version, row.venue or "-", ", ".join(row.capabilities) or "-",
                      f"conformance: {row.conformance}" if row.conformance else "-", ", ".join(row.hooks))
    Console().print(table if rows else "no plugins installed")
    return 0


# --- framework venue ---------------------------------------------------------------------------------


def venue_truth(harness: Any) -> dict[str, Any]:
    """What an emulated venue did, as JSON (``framework venue --truth PATH``): every order submitted, the
    closures, the intervals a position had no stop (ms since the epoch, venue clock = wall clock), the
    positions and resting conditional orders now."""
    import dataclasses

    venue, account = harness.venue, harness.config.account

    def plain(record: Any) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Decimal) else v for k, v in dataclasses.asdict(record).items()}

    return {
        "account": account,
        "now": venue.now(),
        "orders": [plain(o) for o in venue.truth.orders],
        "closures": [plain(c) for c in venue.truth.closures],
        "unprotected": [list(i) for i in venue.truth.unprotected_intervals(account)],
        "positions": [{"symbol": p.symbol, "side": p.side, "contracts": str(p.contracts),
                       "protected": venue.is_protected(account, p.symbol)} for p in venue.positions(account)],
        "resting_conditional": [plain(o) for o in venue.orders(account, conditional=True)],
    }


def _write_truth(path: Path, harness: Any) -> None:
    """Write :func:`venue_truth` to ``path`` atomically (a reader never sees half a file)."""
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(venue_truth(harness), default=str), encoding="utf-8")
    partial.replace(path)


PARENT_POLL_S = 0.5  # how often ``framework venue`` checks that the process that started it still runs


async def _exit_with_parent(stop: asyncio.Event, parent_pid: int) -> None:
    """Set ``stop`` once the process that started this one is gone.

    POSIX re-parents an orphan (to init or a subreaper), so ``os.getppid()`` changes when the parent dies,
    whatever killed it (a SIGKILLed pytest or tool cannot clean up its children).  Polled, because no portable
    call waits for another process's end; the venue then stops as on SIGTERM (``--truth`` still written).
    """
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("framework venue: parent process %d gone; stopping", parent_pid)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PARENT_POLL_S)


async def _serve_venue(args: argparse.Namespace) -> int:
    from framework.driver import Driver
    from framework.plugins import load_plugins
    pm = load_plugins([args.name])
    options: dict[str, object] = {"port": args.port, "seed": args.seed, "speed": args.speed}
    if args.faults:
        options["faults"] = _faults(args.faults)
    if args.api_key:
        options["api_key"] = args.api_key
    if args.api_secret:
        options["api_secret"] = args.api_secret
    harness = Driver(pm, args.name).venue_harness(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchdog = None if args.outlive_parent else asyncio.create_task(_exit_with_parent(stop, os.getppid()))
    async with harness:
        if args.truth is not None:  # SIGUSR1: write it now too, the venue goes on
            loop.add_signal_handler(signal.SIGUSR1, _write_truth, args.truth, harness)
        config = harness.config
        print(json.dumps({
            "venue": args.name,
            "rest_url": config.rest_url,
            "ws_url": config.ws_url,
            "api_key": config.api_key.get_secret_value(),
            "api_secret": config.api_secret.get_secret_value(),
            "symbols": sorted(harness.venue.instruments) if harness.venue else [harness.symbol],
        }), flush=True)
        await stop.wait()
        if args.truth is not None:  # ground truth for a test or benchmark driving this venue from outside
            _write_truth(args.truth, harness)
    if watchdog is not None:
        await watchdog  # it ends once stop is set
    return 0


def cmd_venue(args: argparse.Namespace) -> int:
    _check_speed(args.speed)
    return asyncio.run(_serve_venue(args))


# --- framework replay ---------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from framework.plugins import load_plugins
    from framework.replay import event_json, replay

    pm = load_plugins([args.plugin])
    try:
        with open(args.file, encoding="utf-8") as lines:
            result = asyncio.run(replay(pm, args.plugin, lines))
    except OSError as exc:
        raise ConfigError(f"{args.file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{args.file}: not a text file of frames (one JSON frame per line)") from None
    if args.json:
        for event in result.events:
            print(json.dumps(event_json(event)))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{args.plugin}: {result.frames} frames replayed")
        for column in ("time (UTC)", "event", "symbol", "side", "contracts", "price", "reason"):
            table.add_column(column)
        for event in result.events:
            table.add_row(_utc(event.timestamp), event.event, event.symbol, event.side, str(event.contracts),
                          str(event.price or "-"), event.reason)
        Console().print(table)
    for number, error in result.malformed:
        print(f"line {number}: malformed frame: {error}", file=sys.stderr)
    return 0


def _utc(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# --- framework soak ----------------------------------------------------------------------------------


def cmd_soak(args: argparse.Namespace) -> int:
    from framework.app.soak import run_soak

    if not (math.isfinite(args.minutes) and args.minutes > 0):
        raise ConfigError(f"--minutes must be above 0, not {args.minutes}")
    faults = None if args.faults == "none" else args.faults
    if faults:
        _faults(faults)
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)  # the figures, not every event
    return run_soak(args.minutes, plugins=_split(args.plugins), faults=faults, sample_s=args.sample,
                    json_path=args.json)


# --- framework health --------------------------------------------------------------------------------


def cmd_health(args: argparse.Namespace) -> int:
    """``GET /v1/health`` of a running ``framework run --http``: 0 when it answers 200 (container and
    service health checks), 1 otherwise; the token comes from ``FRAMEWORK_HTTP_TOKEN``."""
    import urllib.error
    import urllib.request

    from framework.settings import load_settings

    token = load_settings().http_token
    if token is None or not token.get_secret_value():
        raise ConfigError("framework health needs FRAMEWORK_HTTP_TOKEN (the HTTP API's bearer token)")
    request = urllib.request.Request(f"{args.url.rstrip('/')}/v1/health",
                                     headers={"Authorization": f"Bearer {token.get_secret_value()}"})
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:  # noqa: S310 - a local URL
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"framework health: {args.url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    print(json.dumps(body))
    return 0


# --- framework report --------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from framework.app.report import print_report

    try:
        report = json.loads(Path(args.path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{args.path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{args.path}: not a run report (framework run --report PATH writes one): {exc}") from None
    if not isinstance(report, dict) or "positions" not in report:
        raise ConfigError(f"{args.path}: not a run report (framework run --report PATH writes one)")
    print_report(report)
    return 0


# --- framework bench ---------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from framework.app.bench import SECTIONS, run_bench

    unknown = sorted(set(_split(args.only) or ()) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"--only: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    return run_bench(quick=args.quick, json_path=args.json, plugins=_split(args.plugins), sections=_split(args.only))


# --- wiring ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framework", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the framework: emulated venues unless API keys are set")
    p.add_argument("--plugins", help="comma-separated driver plugins (default: every installed one); "
                                     "lifecycle plugins load unless disabled")
    p.add_argument("--disable-plugin", action="append", default=[], metavar="NAME",
                   help="do not load this installed plugin (repeatable)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--speed", type=float, default=100.0,
                   help="emulated price replay speed, above 0, at most 1000 (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the emulated venues' random faults")
    p.add_argument("--signals", type=Path, help="JSONL signal file, or - for stdin (default: the packaged demo "
                                                "on emulated venues; none when live)")
    p.add_argument("--follow", action="store_true", help="tail the --signals file for new lines")
    p.add_argument("--live", action="store_true", help="confirm trading on the accounts whose API keys are set")
    p.add_argument("--http", type=int, metavar="PORT", help="serve the HTTP API on this port (token: "
                                                            "FRAMEWORK_HTTP_TOKEN; 0: any free port)")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus /metrics on this port "
                                                                      "(FRAMEWORK_METRICS_HOST, default 127.0.0.1)")
    p.add_argument("--faults", help="fault knobs for the emulated venues, e.g. rest_position_lag_ms=5000")
    p.add_argument("--report", type=Path, help="write the run report (JSON) here")
    p.add_argument("--no-tui", dest="tui", action="store_false", help="logs only, no live view")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log lines as text (default) or one JSON object each (venue, symbol, client_order_id, "
                        "event fields)")
    p.add_argument("--accounts", type=Path, metavar="FILE", help="TOML file of accounts to manage in this "
                                                                 "process, shared with other instances by lease "
                                                                 "(docs/scaling.md)")
    p.add_argument("--flatten-on-exit", action="store_true", help="close every position on exit")
    p.add_argument("--testnet", action="store_true", help="live plugins use the venue's test network")
    p.add_argument("--record", type=Path, metavar="FILE", help="write every REST exchange and WebSocket frame "
                                                               "here (JSONL cassette, secrets removed)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="walk a scripted lifecycle at the venue's minimum size and print each "
                                     "guarantee as pass / fail / not supported (keys required)")
    p.add_argument("--plugin", required=True, help="driver plugin to check, e.g. binance or bybit")
    p.add_argument("--symbol", default="XRP/USDT:USDT", help="unified symbol to trade (default XRP/USDT:USDT)")
    p.add_argument("--testnet", action="store_true", help="the venue's test network (the default)")
    p.add_argument("--mainnet", action="store_true", help="the real venue: needs --i-understand")
    p.add_argument("--i-understand", action="store_true", help="confirm --mainnet: real orders, real fees")
    p.add_argument("--budget", type=float, default=10.0,
                   help="seconds the venue may take to list what was done before a row fails (default 10)")
    p.add_argument("--record", type=Path, metavar="FILE", help="write a cassette of the session here")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the rows as JSON here")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("plugins", help="list installed plugins: name, version, venue, capabilities, hooks")
    p.add_argument("--plugins", help="comma-separated names to load (default: every installed plugin)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("venue", help="start one emulated venue on 127.0.0.1 (first stdout line: JSON with URLs)")
    p.add_argument("name", help="plugin whose emulator to start, e.g. binance or bybit")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    p.add_argument("--speed", type=float, default=1.0, help="price replay speed, above 0, at most 1000 (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random fault (default 0)")
    p.add_argument("--faults", help="fault knobs, e.g. rest_position_lag_ms=5000,drop_closing_frames=1")
    p.add_argument("--api-key", help="API key the venue accepts (default: generated)")
    p.add_argument("--api-secret", help="API secret the venue accepts (default: generated)")
    p.add_argument("--truth", type=Path, help="on SIGUSR1 and on stop, write what the venue did here (JSON: "
                                              "orders, closures, unprotected intervals, positions)")
    p.add_argument("--outlive-parent", action="store_true",
                   help="keep running when the process that started it ends (default: stop within "
                        f"{PARENT_POLL_S:g} s, so a killed test run or tool leaves no venue behind)")
    p.set_defaults(func=cmd_venue)

    p = sub.add_parser("replay", help="feed a captured private-stream log or a cassette through a plugin's decoder")
    p.add_argument("--plugin", required=True, help="driver plugin whose decoder to use, e.g. bybit")
    p.add_argument("file", help="one raw frame per line, exactly as the socket delivered it, or a cassette "
                                "(--record FILE of framework run / check)")
    p.add_argument("--json", action="store_true", help="one JSON object per lifecycle event")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("bench", help="measure latency, protection gaps, REST cost, throughput (emulators)")
    p.add_argument("--quick", action="store_true", help="smaller sample sizes (CI)")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    p.add_argument("--plugins", help="comma-separated driver plugins (default: binance,bybit)")
    p.add_argument("--only", metavar="SECTIONS", help="comma-separated sections to measure (default: all): "
                                                      "closure, moves, stream, reconcile, scale, memory, cold_start")
    p.set_defaults(func=cmd_bench)

    from framework.app.soak import DEFAULT_FAULTS

    p = sub.add_parser("soak", help="run N minutes at 100x on the emulators with faults on; report memory, tasks, "
                                    "alerts and safety over time")
    p.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    p.add_argument("--plugins", help="comma-separated driver plugins (default: every installed one)")
    p.add_argument("--faults", default=DEFAULT_FAULTS, help=f"fault knobs, or none (default {DEFAULT_FAULTS})")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    p.set_defaults(func=cmd_soak)

    p = sub.add_parser("health", help="GET /v1/health of a running framework run --http (exit 0 when healthy)")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="base URL of the HTTP API")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("report", help="print a run report (framework run --report PATH) as tables")
    p.add_argument("path", help="report JSON file")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.redact = configure_logging(logging.DEBUG if args.verbose else logging.INFO,
                                    getattr(args, "log_format", "text"))
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # its INFO lines are start-up chatter
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"framework: error: {exc}", file=sys.stderr)
        return 2
    except FrameworkError as exc:
        print(f"framework: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
