"""``framework.__all__`` is the plugin author's surface: every name resolves, and the in-tree drivers
(their non-emulator modules) import nothing from the core that it does not export."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import framework

ROOT = Path(__file__).resolve().parents[2]


def test_every_exported_name_resolves():
    missing = [name for name in framework.__all__ if not hasattr(framework, name)]
    assert missing == []


@functools.cache
def core_imports(path: Path) -> set[str]:
    """Names a module imports from ``framework`` or a ``framework.*`` module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "framework":
            names |= {f"{node.module}:{alias.name}" for alias in node.names}
    return names


DRIVER_SOURCES = [p for p in ROOT.glob("plugins/*/framework_*/*.py") if p.name not in ("emulator.py", "__init__.py")]
# Parsed at collection, before any test runs (see tests/core/test_hookspecs.py: ast.parse on CPython 3.11.7).
for _path in DRIVER_SOURCES:
    core_imports(_path)


def test_the_drivers_use_only_the_public_surface():
    sources = DRIVER_SOURCES
    assert sources, "no driver sources found"
    outside = sorted(
        f"{path.relative_to(ROOT)} {name}" for path in sources for name in core_imports(path)
        if name.split(":")[1] not in framework.__all__ and not name.startswith("framework.venue")
    )
    assert outside == [], "driver code imports core names that framework.__all__ does not export"


def test_a_live_import_of_a_driver_does_not_load_its_emulator():
    code = ("import sys, framework_binance.plugin, framework_bybit.plugin; "
            "loaded = [m for m in sys.modules if m.endswith('.emulator') or m.startswith('framework.venue')]; "
            "print(loaded); sys.exit(1 if loaded else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"a driver's import loads its test double: {result.stdout}{result.stderr}"
