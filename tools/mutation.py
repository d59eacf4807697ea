"""Mutation testing of the safety-critical code, with mutmut (``tox -e mutation``; not part of CI).

Three mutmut scopes, each configured in its own ``pyproject.toml`` (``[tool.mutmut]``): the core
(``framework/engine/*`` and ``framework/driverkit.py``), the Binance plugin and the Bybit plugin. One
embedded PostgreSQL serves every mutant's tests (``DATABASE_URL``), because an initdb per mutant would
cost more than the tests. The report is one table per module: killed, survived, timeouts, no tests, score.
``docs/testing.md`` explains the scope and every surviving mutant.

Usage: ``python tools/mutation.py [--scope core|binance|bybit ...] [--first-only] [--mutant NAME ...]
[--budget-minutes M] [--pytest-timeout S] [--report-only] [--json PATH]``. On a shared machine run it as
``nice -n 19 python tools/mutation.py ...``.

``--budget-minutes`` (``tox -e mutation``: 60) bounds the whole run: when it runs out, mutmut is interrupted,
every verdict reached so far stays in ``mutants/`` (mutmut saves each one as it comes), and the report covers
them. The next run goes on with the mutants not yet checked, FIRST patterns first.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCOPES = {"core": ROOT, "binance": ROOT / "plugins" / "binance", "bybit": ROOT / "plugins" / "bybit"}
# Run first, so that a time-boxed run always covers them: the code of the classes that are never
# "equivalent" (a stop's direction, a rollback's proof of flatness, a closure's exactly-once, secrets).
FIRST = {
    "core": [
        "framework.engine.protection.*", "framework.engine.closing.*", "framework.engine.trailing.*",
        "framework.engine.opener.xǁOpenerǁ_rollback*", "framework.engine.opener.xǁOpenerǁ_close_for_rollback*",
        "framework.engine.opener.xǁOpenerǁ_proven_flat*", "framework.engine.opener.xǁOpenerǁ_observed_fill*",
        "framework.engine.book.xǁPositionBookǁclose*", "framework.engine.book.xǁPositionBookǁ_close_locked*",
        "framework.engine.book.xǁPositionBookǁ_apply_position_update*",
        "framework.engine.book.xǁPositionBookǁ_apply_order_update*",
    ],
    # the stop code (a stop's side, trigger and trail), then what the decoder reads a side, a size or a
    # closure from; bybit's error translation (what an exception built from a venue's answer carries)
    "binance": [
        *(f"framework_binance.operations.x_{name}*" for name in (
            "place_trigger", "place_trailing_stop", "_confirm_open", "move_stop_loss", "cancel_stop_loss",
            "_trailing_trigger")),
        *(f"framework_binance.decoder.{name}*" for name in (
            "x__side", "xǁBinanceDecoderǁ_account_update", "xǁBinanceDecoderǁ_order_trade_update",
            "xǁBinanceDecoderǁ_algo_update", "x__one_state_per_symbol")),
    ],
    "bybit": [
        *(f"framework_bybit.rest.x_{name}*" for name in (
            "set_trigger", "set_trailing", "create_stop_loss_order", "cancel_trigger", "_trading_stop",
            "_confirm_not_modified", "_stream_shows_open", "_trail_start", "limit_reset_ms")),
        "framework_bybit.rest.xǁBybitClientǁhandle_errors*", "framework_bybit.rest.xǁBybitIpBannedǁ*",
        *(f"framework_bybit.decoder.xǁBybitDecoderǁ{name}*" for name in (
            "_position", "_order_side", "_execution", "_order_fields")),
    ],
}
# mutmut's verdict per exit code of a mutant's test run (as mutmut.stats.status_by_exit_code, which cannot be
# imported outside a configured directory); anything else is "suspicious".
STATUS = {0: "survived", 1: "killed", 3: "killed", 5: "no_tests", 33: "no_tests", 34: "skipped",
          35: "suspicious", 36: "timeout", 37: "caught_by_type_check", -24: "timeout", 24: "timeout",
          152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault", None: "not_checked"}


def module_results(scope_dir: Path, by_function: bool = False) -> dict[str, Counter[str]]:
    """``{module path: Counter(status)}`` from mutmut's ``mutants/**/*.meta`` files of one scope; with
    ``by_function``, keyed ``module path: function`` for the functions with at least one mutant checked."""
    results: dict[str, Counter[str]] = defaultdict(Counter)
    mutants = scope_dir / "mutants"
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = meta.relative_to(mutants).as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text(encoding="utf-8")).get("exit_code_by_key", {})
        for name, code in codes.items():
            function = name.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0].replace("ǁ", ".").removeprefix("x_")
            results[f"{module}: {function.removeprefix('x.')}" if by_function else module][
                STATUS.get(code, "suspicious")] += 1
    if by_function:
        return {key: counts for key, counts in results.items() if counts["not_checked"] < sum(counts.values())}
    return results


def survivors(scope_dir: Path) -> list[str]:
    """Names of the surviving mutants of one scope (``mutmut show NAME`` prints one)."""
    mutants = scope_dir / "mutants"
    names = []
    for meta in sorted(mutants.rglob("*.py.meta")):
        codes = json.loads(meta.read_text(encoding="utf-8")).get("exit_code_by_key", {})
        names += [name for name, code in codes.items() if code == 0]
    return names


def table(rows: dict[str, Counter[str]]) -> str:
    """Per module: the score is killed / (killed + survived + no tests), over the mutants checked so far."""
    lines = ["| module | mutants | checked | killed | survived | no tests | score |", "|---|---|---|---|---|---|---|"]
    for module, counts in rows.items():
        total = sum(counts.values())
        killed = counts["killed"] + counts["timeout"]  # a mutant that hangs the tests is caught by them
        judged = killed + counts["survived"] + counts["no_tests"] + counts["suspicious"]
        score = f"{100 * killed / judged:.1f} %" if judged else "-"
        lines.append(f"| `{module}` | {total} | {total - counts['not_checked']} | {killed} | {counts['survived']} "
                     f"| {counts['no_tests']} | {score} |")
    return "\n".join(lines)


class BudgetSpent(Exception):
    """The run's time budget ran out; mutmut was interrupted and its verdicts so far are saved."""


def run_mutmut(command: list[str], cwd: Path, env: dict[str, str], log: Path, deadline: float | None) -> int:
    """Run ``command`` (mutmut) in ``cwd`` with its output in ``log``; return its exit code.

    :raises BudgetSpent: ``deadline`` (a ``time.monotonic()`` value) passed first. mutmut then gets SIGINT,
        which it handles by stopping its workers without recording their unfinished mutants; what is
        still running a minute later is killed with its process group.
    """
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            return process.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            raise BudgetSpent from None


def run_scope(name: str, env: dict[str, str], *, first_only: bool = False,
              mutants: list[str] | None = None, max_children: int | None = None,
              deadline: float | None = None) -> int:
    """``mutmut run`` on the scope's FIRST patterns, then on every mutant not yet checked (unless
    ``first_only``); or only on the named ``mutants`` (mutmut re-runs a named mutant even if already judged).
    mutmut's output goes to ``mutmut-<step>.log`` in the scope's directory, beside its ``mutants/`` (a run in
    another checkout writes its own).

    :raises BudgetSpent: ``deadline`` passed (see :func:`run_mutmut`).
    """
    steps = [("first", FIRST.get(name, []))] + ([] if first_only else [("rest", [])])
    if mutants:
        steps = [("named", mutants)]
    for step, patterns in steps:
        if step == "first" and not patterns:
            continue
        log = SCOPES[name] / f"mutmut-{step}.log"
        print(f"mutation: {name} ({step}) in {SCOPES[name]} (log: {log})", flush=True)
        children = ["--max-children", str(max_children)] if max_children else []
        rc = run_mutmut([sys.executable, "-m", "mutmut", "run", *children, *patterns], SCOPES[name], env, log,
                        deadline)
        if rc != 0:
            return rc
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scope", action="append", choices=sorted(SCOPES), help="default: all three")
    parser.add_argument("--report-only", action="store_true", help="print the last run's results")
    parser.add_argument("--first-only", action="store_true", help="only the FIRST patterns (never-equivalent classes)")
    parser.add_argument("--mutant", action="append", help="re-run only these mutants (names or globs, one scope)")
    # pytest-timeout reads --timeout, then PYTEST_TIMEOUT, then the ini's 180 s: the variable raises it for the
    # mutants' runs only (two forked pytest runs per core under nice 19 are much slower than CI's).
    parser.add_argument("--max-children", type=int, help="mutants tested at once (mutmut's default: the CPUs)")
    parser.add_argument("--mutant-file", type=Path, help="like --mutant, one name or glob a line")
    parser.add_argument("--pytest-timeout", type=int, default=900, help="seconds per test (default 900)")
    parser.add_argument("--budget-minutes", type=float, help="stop mutmut after this long and report (default: none)")
    parser.add_argument("--json", type=Path, help="also write the per-module counts here")
    parser.add_argument("--by-function", action="store_true", help="one row per function checked, not per module")
    args = parser.parse_args(argv)
    scopes = args.scope or list(SCOPES)
    if args.mutant_file:
        args.mutant = (args.mutant or []) + args.mutant_file.read_text(encoding="utf-8").split()
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        parser.error("--budget-minutes must be positive")
    deadline = None if args.budget_minutes is None else time.monotonic() + 60 * args.budget_minutes
    if not args.report_only:
        from framework.store.database import embedded_server

        with tempfile.TemporaryDirectory(prefix="framework-mutation-") as tmp:
            server = embedded_server(Path(tmp) / "pgdata", cleanup_mode="delete")
            # PYTHONPATH: the plugin scopes run the root's tests/engine, which import ``tests.engine``.
            env = {**os.environ, "DATABASE_URL": server.get_uri(), "PYTHONPATH": str(ROOT),
                   "PYTEST_TIMEOUT": str(args.pytest_timeout)}
            try:
                for name in scopes:
                    rc = run_scope(name, env, first_only=args.first_only, mutants=args.mutant,
                                   max_children=args.max_children, deadline=deadline)
                    if rc != 0:
                        print(f"mutation: mutmut failed in scope {name} (exit {rc})", file=sys.stderr)
                        return rc
            except BudgetSpent:
                print(f"mutation: the budget of {args.budget_minutes:g} minutes ran out in scope {name}; the "
                      "report covers the mutants checked so far, and the next run goes on with the rest",
                      flush=True)
            finally:
                server.cleanup()
    rows: dict[str, Counter[str]] = {}
    for name in scopes:
        rows.update({f"{name}: {module}": counts
                     for module, counts in module_results(SCOPES[name], args.by_function).items()})
    print(table(rows))
    for name in scopes:
        for mutant in survivors(SCOPES[name]):
            print(f"survived ({name}): {mutant}")
    if args.json:
        args.json.write_text(json.dumps({k: dict(v) for k, v in rows.items()}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
