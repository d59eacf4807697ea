"""The README starts with exactly two commands, and CI runs the second one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

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
