"""The contract suite catches the known bugs (docs/incidents.md): each deliberately broken variant of a real
plugin (``tests/broken_plugins/variants.py``) FAILS the contract it breaks, with a message naming it,
while the real plugin passes that same test (the control: a failure that the real plugin shares proves
nothing about the bug).

The variants are made loadable the way any third-party plugin is: an installed distribution's entry
point of group ``framework`` (a ``*.dist-info`` on ``PYTHONPATH``); the suite then runs in a fresh
interpreter, ``python -m pytest <contract test ids> --plugin <variant> ...``, and its JUnit report is read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from framework.plugins import installed_plugins

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from broken_plugins.variants import BUGS, entry_point_names  # noqa: E402 (after the sys.path entry above)

BASES = [name for name in ("bybit", "binance") if name in installed_plugins()]

#: bug -> (contract test module, test function, parameter suffix, phrase the failure message must contain)
EXPECTED = {
    "closure": ("test_closure", "test_manual_close_on_the_venue_fires_one_closure", "",
                "no flat PositionUpdate"),
    "guessed_side": ("test_orders", "test_minimal_response_without_intent_is_not_guessed", "",
                     "guessed instead of asking the venue"),
    "rest_lookup": ("test_stops", "test_stop_loss_right_after_fill_succeeds_while_rest_lags", "-long",
                    "REST"),
    "cancel_then_create": ("test_stops", "test_moving_a_stop_never_leaves_the_venue_unprotected", "-long",
                           "without a resting stop"),
    "close_side": ("test_orders", "test_close_after_minimal_entry_goes_the_right_way_and_leaves_the_venue_flat",
                   "-long", "wrong direction"),
}
assert set(EXPECTED) == set(BUGS)


def _node(module: str, test: str, plugin: str, suffix: str) -> str:
    return f"contract_tests/{module}.py::{test}[{plugin}{suffix}]"


@pytest.fixture(scope="module")
def suite_results(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Run the relevant contract tests on every variant and on the real plugins, once.

    :returns: ``{node id: (outcome, failure message + output)}``, outcome ``passed`` / ``failed`` / ``skipped``.
    """
    if not BASES:
        pytest.skip("no real driver plugin (bybit / binance) installed to break")
    where = tmp_path_factory.mktemp("broken-plugins")
    dist_info = where / "framework_broken_plugins-0.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: framework-broken-plugins\nVersion: 0.0.0\n")
    entry_points = {name: value for base in BASES for name, value in entry_point_names(base).items()}
    (dist_info / "entry_points.txt").write_text(
        "[framework]\n" + "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    )
    nodes = []
    for base in BASES:
        for bug, (module, test, suffix, _) in EXPECTED.items():
            nodes.append(_node(module, test, f"{base}-broken-{bug.replace('_', '-')}", suffix))
            nodes.append(_node(module, test, base, suffix))
    plugins = [arg for name in [*BASES, *entry_points] for arg in ("--plugin", name)]
    report = where / "report.xml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *plugins,
         *dict.fromkeys(nodes)],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    if not report.exists():
        pytest.fail(f"the contract suite did not run:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        node = f"{case.get('classname').replace('.', '/')}.py::{case.get('name')}"
        outcome, text = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                text = f"{element.get('message', '')}\n{element.text or ''}"
        results[node] = (outcome, text)
    return results


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("bug", list(EXPECTED))
def test_broken_variant_fails_the_contract_it_breaks(suite_results, base, bug):
    module, test, suffix, phrase = EXPECTED[bug]
    variant = f"{base}-broken-{bug.replace('_', '-')}"
    broken = _node(module, test, variant, suffix)
    control = _node(module, test, base, suffix)
    outcome, message = suite_results.get(broken, ("not run", ""))
    assert outcome == "failed", f"{variant}: {broken} {outcome}; the suite missed the bug ({BUGS[bug].__doc__})"
    assert f"{variant}:" in message and phrase in message, (
        f"{variant}: {broken} failed, but its message does not name the broken contract ({phrase!r}):\n{message}"
    )
    control_outcome, control_message = suite_results.get(control, ("not run", ""))
    assert control_outcome == "passed", (
        f"control {control} {control_outcome}: the real {base} plugin fails this contract too, so the variant's "
        f"failure proves nothing about the bug:\n{control_message}"
    )
