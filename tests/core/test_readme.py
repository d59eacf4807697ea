"""The README starts with exactly two commands, and CI runs the second one verbatim; its table
"guarantee → home → contract tests" names code and tests that exist."""

from __future__ import annotations

import ast
import fnmatch
import functools
import re
from pathlib import Path

from framework.driver import OPERATIONS

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index(block.group(0)) < text.index("\n## "), "the commands must come first"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_two_commands_run_then_tests():
    run, tests = readme_commands()
    assert "framework run --plugins binance,bybit" in run
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    match = re.search(r'^TEST_COMMAND="(.*)"$', ci, re.M)
    assert match, ".ci/run must define TEST_COMMAND"
    assert match.group(1) == readme_commands()[1]


def guarantee_table() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("| guarantee | home")
    return text[start:text.index("\n\n", start)]


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def defines(path: Path, dotted: str) -> bool:
    node: ast.AST = parsed(path)
    for part in dotted.split("."):
        found = [n for n in ast.iter_child_nodes(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                          ast.ClassDef)) and n.name == part]
        if not found:
            return False
        node = found[0]
    return True


# Parsed at collection, before any test runs (see tests/core/test_hookspecs.py: ast.parse on CPython 3.11.7).
for _path in {ROOT / p for p, _ in re.findall(r"`((?:framework|plugins)/[\w/]+\.py):([\w.]+)`", guarantee_table())}:
    if _path.exists():
        parsed(_path)


def test_the_guarantee_table_names_code_and_contract_tests_that_exist():
    table = guarantee_table()
    homes = re.findall(r"`((?:framework|plugins)/[\w/]+\.py):([\w.]+)`", table)
    assert len(homes) >= 7
    assert [f"{path}:{name}" for path, name in homes if not defines(ROOT / path, name)] == []
    operations = re.findall(r"`DriverSession\.(\w+)`", table)
    assert operations and set(operations) <= set(OPERATIONS)
    contract = ROOT / "contract_tests"
    tests = {path.name: re.findall(r"def (test_\w+)", path.read_text(encoding="utf-8"))
             for path in contract.glob("test_*.py")}
    modules = set(re.findall(r"`(test_\w+\.py)(?:::[\w*]+)?`", table))
    assert modules and modules <= set(tests)
    qualified = re.findall(r"`(test_\w+\.py)::(test_[\w*]+)`", table)
    assert [f"{m}::{p}" for m, p in qualified if not fnmatch.filter(tests[m], p)] == []
    bare = re.findall(r"(?<![:\w])`(test_[\w*]+)`", table)
    every = [name for names in tests.values() for name in names]
    assert [p for p in bare if not fnmatch.filter(every, p)] == []
