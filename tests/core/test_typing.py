"""The core type-checks under ``mypy --strict`` (run as part of the suite, so CI runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_core_is_clean_under_mypy_strict():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(ROOT / ".mypy_cache"), "framework"],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_in_tree_drivers_sessions_are_driver_sessions_to_mypy(tmp_path):
    # the protocol is the one written signature the driver's methods must match (docs/architecture.md)
    check = tmp_path / "sessions_check.py"
    check.write_text(
        "from framework.protocols import DriverSession\n"
        "from framework_binance.plugin import BinanceSession\n"
        "from framework_bybit.plugin import BybitSession\n"
        "binance: type[DriverSession] = BinanceSession\n"
        "bybit: type[DriverSession] = BybitSession\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--cache-dir", str(ROOT / ".mypy_cache"),
         str(check)],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
        env={**os.environ, "MYPYPATH": os.pathsep.join(str(ROOT / "plugins" / name) for name in ("binance", "bybit"))},
    )
    assert result.returncode == 0, result.stdout + result.stderr
