"""The seams issue 12 asks for, kept by reading the sources (``ast``): the library imports neither a
driver plugin nor the application, ``framework.driver`` does not load the simulated venue, and no module
uses another module's ``_private`` name (``self._x`` is the object's own, whichever base class set it)."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORK = ROOT / "framework"
LIBRARY = sorted(p for p in FRAMEWORK.rglob("*.py") if (FRAMEWORK / "app") not in p.parents)
APPLICATION = sorted((FRAMEWORK / "app").rglob("*.py"))
DRIVERS = sorted(ROOT.glob("plugins/*/framework_*/*.py"))


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


# Parsed at collection, before any test runs (see tests/core/test_hookspecs.py: ast.parse on CPython 3.11.7).
for _path in LIBRARY + APPLICATION + DRIVERS:
    parsed(_path)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (absolute names)."""
    modules = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def test_the_library_imports_neither_a_driver_plugin_nor_the_application():
    assert LIBRARY and APPLICATION
    found = sorted(
        f"{path.relative_to(ROOT)} imports {module}" for path in LIBRARY for module in imported_modules(path)
        if module.startswith("framework_") or module == "framework.app" or module.startswith("framework.app.")
    )
    assert found == []


def test_the_driver_handle_does_not_load_the_simulated_venue():
    assert not any(m.startswith("framework.venue") for m in imported_modules(FRAMEWORK / "driver.py"))
    code = "import sys, framework.driver; sys.exit(any(m.startswith('framework.venue') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def defined_private_names(tree: ast.Module) -> set[str]:
    """``_names`` a module defines: functions, classes, assignments, attributes set on anything, slots,
    and keyword arguments of the dataclasses / models it declares."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries, setattr / getattr names
    return {name for name in names if name.startswith("_")}


def private_uses_from_elsewhere(path: Path) -> list[str]:
    tree = parsed(path)
    own = defined_private_names(tree)
    found = []
    for node in ast.walk(tree):
        names: list[tuple[int, str]] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0].startswith("framework"):
            names = [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue  # the object's own state, defined in its class or a base class
            names = [(node.lineno, node.attr)]
        for line, name in names:
            dunder = name.startswith("__") and name.endswith("__")
            if name.startswith("_") and not dunder and (isinstance(node, ast.ImportFrom) or name not in own):
                found.append(f"{path.relative_to(ROOT)}:{line} uses {name}")
    return found


def test_no_module_uses_another_modules_private_names():
    found = sorted(use for path in LIBRARY + APPLICATION + DRIVERS for use in private_uses_from_elsewhere(path))
    assert found == []
