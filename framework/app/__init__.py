"""The application over the library: ``framework run`` and the other commands.

:mod:`~framework.app.cli` (the ``framework`` command), :mod:`~framework.app.run` (one run: a
:class:`~framework.session.Session`, a signal feed, the view and the report), :mod:`~framework.app.http`
(HTTP API), :mod:`~framework.app.metrics` (Prometheus), :mod:`~framework.app.logs`,
:mod:`~framework.app.view`, :mod:`~framework.app.report`, :mod:`~framework.app.bench` and
:mod:`~framework.app.soak`.  The library (engine, store, driver, venue, session, and :mod:`framework.replay`,
which ``framework replay`` and the conformance check share) never imports this package.
"""
