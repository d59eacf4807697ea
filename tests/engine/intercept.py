"""Fault injection around a driver session's operations (what a pluggy wrapper of a driver hook did when
the operations were hooks).

A :class:`SessionWrapper` subclass defines ``async def <operation>(self, call, *args)``, where ``call`` is
the session's own method: it may call it, or not (the driver never acts), and act before or after.
Registered as a plugin before the engine starts, it wraps the session ``connect`` returns (a pluggy
wrapper of hook ``connect``); :meth:`SessionWrapper.wrap` applies it to a session already connected.
"""

from __future__ import annotations

import functools
from typing import Any

from framework import hookimpl
from framework.driver import OPERATIONS


class SessionWrapper:
    def wrap(self, session: Any) -> Any:
        """Put this object's operations in front of ``session``'s (as instance attributes)."""
        for name in OPERATIONS:
            mine = getattr(self, name, None)
            if mine is not None:
                setattr(session, name, functools.partial(mine, getattr(session, name)))
        return session

    @hookimpl(wrapper=True)
    def connect(self, config):
        pending = yield

        async def wrapped():
            return self.wrap(await pending)

        return wrapped()
