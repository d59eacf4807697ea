"""pytest plugin for the plugin scopes' mutation runs (loaded by their ``[tool.mutmut]`` ``pytest_add_cli_args``).

mutmut runs pytest inside ``plugins/<name>/mutants`` with ``--rootdir=.`` and later re-runs single tests by the
node ids it recorded. The scopes also run the root's ``tests/engine`` and ``contract_tests``, which lie outside
that rootdir; pytest names their tests relative to the command-line argument (``test_rollback.py::...``), an id
that cannot be run from there. This gives every test outside the rootdir an id relative to the working
directory (``../../../tests/engine/test_rollback.py::...``), which pytest can run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

try:  # pytest 9 keeps a structured id (private, hence this file only); pytest 8 a string
    from _pytest.nodeid import NodeId
except ImportError:  # pragma: no cover
    NodeId = None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path.cwd()
    for item in items:
        if here not in item.path.parents:
            nodeid = os.path.relpath(item.path, here) + "::" + item.nodeid.split("::", 1)[1]
            if NodeId is None:
                item._nodeid = nodeid
            else:
                item._id = NodeId.parse(nodeid)
