"""pytest plugin (entry point ``pytest11``): the ``--plugin`` option of the contract suite and the
parametrisation of every contract test by driver plugin name (test ids read ``test_x[bybit]``)."""

from __future__ import annotations

import pytest

#: the fixture every contract test reaches through ``contract``; parametrised here by plugin name
PLUGIN_ARGNAME = "contract_plugin"


def pytest_addoption(parser):
    group = parser.getgroup("framework contract suite")
    group.addoption(
        "--plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="driver plugin(s) to run the contract suite against (entry-point name, e.g. bybit)",
    )


def pytest_configure(config):
    # Registered here too so a third-party project running the suite with --strict-markers needs no ini.
    config.addinivalue_line(
        "markers", "hooks(*names): the test exercises these hooks or session operations (every one needs a test: "
        "tests/core/test_hookspecs.py)"
    )
    config.addinivalue_line("markers", "capability(name): the test exercises an optional driver capability")


def installed_driver_names() -> list[str]:
    """Entry points of group ``framework`` that are driver plugins (implement ``driver_info``).

    A plugin that fails to import is kept, so its contract tests fail with the import error instead of
    silently disappearing from the run.
    """
    from framework import hookspecs
    from framework.plugins import installed_plugins

    names = []
    for name, entry_point in sorted(installed_plugins().items()):
        try:
            plugin = entry_point.load()
        except Exception:
            names.append(name)
            continue
        impl_attr = f"{hookspecs.PROJECT}_impl"
        if any(hasattr(getattr(plugin, attr, None), impl_attr) for attr in ("driver_info",)):
            names.append(name)
    return names


def pytest_generate_tests(metafunc):
    if PLUGIN_ARGNAME not in metafunc.fixturenames:
        return
    config = metafunc.config
    names = config.getoption("plugin") or None
    if names is None:
        cache_key = "_framework_contract_plugins"
        if not hasattr(config, cache_key):
            setattr(config, cache_key, installed_driver_names())
        names = getattr(config, cache_key)
    if not names:
        metafunc.parametrize(
            PLUGIN_ARGNAME,
            [pytest.param(None, marks=pytest.mark.skip(
                reason="no driver plugin installed (entry-point group 'framework'); pass --plugin NAME"))],
            ids=["no-plugin"],
        )
        return
    metafunc.parametrize(PLUGIN_ARGNAME, names, ids=names, scope="session")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line per driver plugin: ``conformance: verified by N cassette(s)`` or ``conformance: unverified``."""
    names = config.getoption("plugin") or getattr(config, "_framework_contract_plugins", None)
    if not names:
        return
    from framework.conformance import conformance_status
    from framework.plugins import load_plugins

    terminalreporter.section("framework conformance")
    for name in names:
        try:
            status = conformance_status(load_plugins([name]), name)
        except Exception as exc:  # a plugin that does not load already failed its tests
            status = f"unknown ({type(exc).__name__})"
        terminalreporter.write_line(f"{name}: conformance: {status}")
