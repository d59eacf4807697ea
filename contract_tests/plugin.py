"""pytest plugin (entry point ``pytest11``): the ``--plugin`` option of the contract suite."""

from __future__ import annotations


def pytest_addoption(parser):
    group = parser.getgroup("framework contract suite")
    group.addoption(
        "--plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="driver plugin(s) to run the contract suite against (entry-point name, e.g. bybit)",
    )
