"""Every hook and every session operation (:class:`framework.protocols.DriverSession`) is typed,
documented in the pytest style, and has a test of its own.

"A test of its own" is a test function decorated with ``@pytest.mark.hooks("<hook or operation name>", ...)``
anywhere in this repository's test trees (core, engine, plugins, contract suite).
"""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path

import pytest

from framework import hookspecs
from framework.driver import OPERATIONS
from framework.protocols import DriverSession

ROOT = Path(__file__).resolve().parents[2]
TEST_TREES = [ROOT / "tests", ROOT / "contract_tests", *sorted((ROOT / "plugins").glob("*/tests"))]
ALL_HOOKS = hookspecs.DRIVER_HOOKS + hookspecs.LIFECYCLE_HOOKS


def spec_functions() -> dict[str, object]:
    return {
        name: fn for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, "framework_spec")
    }


@functools.cache
def hooks_with_tests() -> dict[str, list[str]]:
    """Hook name -> tests marked with it, found by reading the test sources."""
    found: dict[str, list[str]] = {}
    for tree in TEST_TREES:
        for path in tree.rglob("*.py"):
            module = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(module):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for decorator in node.decorator_list:
                    if (
                        isinstance(decorator, ast.Call)
                        and isinstance(decorator.func, ast.Attribute)
                        and decorator.func.attr == "hooks"
                    ):
                        for arg in decorator.args:
                            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                                found.setdefault(arg.value, []).append(f"{path.relative_to(ROOT)}::{node.name}")
    return found


# Read at collection, before any test runs: on CPython 3.11.7 ``ast.parse`` was seen to fail with "SystemError:
# AST constructor recursion depth mismatch" late in a full run (after other tests had hit deep recursion).
hooks_with_tests()


def test_the_hook_lists_name_every_hookspec_exactly_once():
    assert sorted(ALL_HOOKS) == sorted(spec_functions())
    assert len(set(ALL_HOOKS)) == len(ALL_HOOKS)


def test_driver_hooks_are_firstresult_and_lifecycle_hooks_broadcast():
    specs = spec_functions()
    for name in hookspecs.DRIVER_HOOKS:
        assert specs[name].framework_spec.get("firstresult") is True, name
    for name in hookspecs.LIFECYCLE_HOOKS:
        assert not specs[name].framework_spec.get("firstresult"), name


def assert_typed_and_documented(name, fn, returns_documented):
    doc = inspect.getdoc(fn) or ""
    signature = inspect.signature(fn)
    assert doc.splitlines() and doc.splitlines()[0].strip(), f"{name}: no summary line"
    for param in signature.parameters.values():
        if param.name == "self":
            continue
        assert param.annotation is not inspect.Parameter.empty, f"{name}: {param.name} has no type"
        assert f":param {param.name}:" in doc, f"{name}: :param {param.name}: is not documented"
    assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return type"
    if returns_documented:
        assert ":returns:" in doc, f"{name}: :returns: is not documented"


@pytest.mark.parametrize("name", ALL_HOOKS)
def test_hook_is_typed_and_documented(name):
    assert_typed_and_documented(name, spec_functions()[name], name in hookspecs.DRIVER_HOOKS)


def test_session_operations_are_the_protocol_methods_and_no_hook_shares_a_name():
    assert set(OPERATIONS) == {
        "create_entry", "normalize_order", "set_stop_loss", "set_take_profit", "set_trailing_stop", "move_stop_loss",
        "cancel_stop_loss", "create_stop_loss_order", "close_position", "fetch_order", "fetch_snapshot",
        "market_limits", "run_stream", "watch_mark_prices", "disconnect",
    }
    assert not set(OPERATIONS) & set(ALL_HOOKS)


@pytest.mark.parametrize("name", OPERATIONS)
def test_session_operation_is_typed_and_documented(name):
    assert_typed_and_documented(name, getattr(DriverSession, name), True)


@pytest.mark.parametrize("name", ALL_HOOKS + OPERATIONS)
def test_hook_has_a_test_of_its_own(name):
    tests = hooks_with_tests()
    assert tests.get(name), f"no test is marked @pytest.mark.hooks({name!r})"
