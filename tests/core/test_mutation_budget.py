"""``tox -e mutation`` is time-boxed (issue 11: "the run must fit in about an hour"): when the budget runs out,
mutmut is interrupted and the run reports what it checked instead of running on."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tools.mutation import BudgetSpent, main, run_mutmut

SLEEPER = [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(600)"]


def test_a_command_within_the_budget_returns_its_exit_code(tmp_path: Path) -> None:
    log = tmp_path / "mutmut.log"
    command = [sys.executable, "-c", "print('judged'); raise SystemExit(3)"]
    assert run_mutmut(command, tmp_path, dict(os.environ), log, time.monotonic() + 600) == 3
    assert log.read_text().strip() == "judged"


def test_a_spent_budget_interrupts_the_run_and_leaves_no_process(tmp_path: Path) -> None:
    log = tmp_path / "mutmut.log"
    with pytest.raises(BudgetSpent):
        run_mutmut(SLEEPER, tmp_path, dict(os.environ), log, time.monotonic())
    pid = log.read_text().split()
    if pid:  # it got as far as printing its pid before SIGINT: that process is gone too
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid[0]), 0)


def test_a_budget_that_is_not_positive_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--budget-minutes", "0", "--report-only"])
    assert exit_.value.code == 2
    assert "--budget-minutes must be positive" in capsys.readouterr().err
