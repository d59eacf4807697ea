"""The alert delivery worker: a child process of :class:`framework.alerts.AlertDelivery` that sends through apprise.

It runs apart from the engine's process so that sending — apprise, requests, retries against a receiver that
is down or slow — never holds the engine's GIL, threads or event loop (issue 18: a dead receiver must not
slow closures).  Started as ``python -P <this file>``; it imports only the standard library and apprise.

Protocol, JSON lines:

* stdin: first ``{"urls": [...], "retries": n, "backoff_s": s, "drain_s": s}`` (the URLs hold tokens: they
  come through the pipe, never the command line or the environment), then one message per line
  ``{"title", "body", "type", "level"}``, optionally ``{"close": drain_s}`` last.
* stdout: one line per outcome: ``{"result": "sent", "level"}``, ``{"result": "retried"}`` (an attempt
  failed, the next one follows a backoff pause — unless the stop's deadline comes first),
  ``{"result": "failed", "title", "why"}`` (``why``: apprise's last warning, which the parent logs masked),
  ``{"result": "abandoned", ...}`` (the stop's deadline came before the message's first attempt).
  Nothing else is written: stderr only carries a crash, which the parent logs masked.

It stops when stdin ends (the parent closed it, or the parent died: the kernel closes its pipes): what is
queued is still sent for up to ``drain_s`` seconds (``close``'s value if given), then it exits — at the
latest ``drain_s`` + :data:`GRACE_S` after the end of stdin, whatever apprise is doing.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

GRACE_S = 5.0  # beyond the drain bound: a send under way (apprise's own timeouts) may end, then a hard exit
WHY_CHARS = 300  # a failure's reason is cut to this length


class _LastWarning(logging.Handler):
    """Keeps apprise's last warning (why a send failed) instead of printing it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text = record.getMessage()[:WHY_CHARS]


def _report(**result: Any) -> None:
    try:
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):  # the parent is gone: nobody counts, the drain goes on
        pass


def main() -> int:
    # Ctrl-C is the parent's to handle (it drains this worker by closing stdin); the worker also runs in a
    # process group of its own, this covers a signal sent to it by name
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    first = sys.stdin.buffer.readline()
    if not first:
        return 0
    config = json.loads(first)
    import apprise

    notifier = apprise.Apprise()
    for url in config["urls"]:
        notifier.add(url)
    last = _LastWarning()
    apprise_log = logging.getLogger("apprise")
    apprise_log.addHandler(last)
    apprise_log.setLevel(logging.WARNING)
    apprise_log.propagate = False
    retries: int = config["retries"]
    inbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
    deadline: list[float] = []  # set once stdin ended: the monotonic time to stop by
    ended = threading.Event()  # stdin ended: a backoff pause is cut to the deadline

    def read() -> None:
        drain_s: float = config["drain_s"]
        try:
            while line := sys.stdin.buffer.readline():
                try:
                    message = json.loads(line)
                except ValueError:  # a line cut short by the parent's death: not a message
                    continue
                if "close" in message:
                    drain_s = float(message["close"])
                else:
                    inbox.put(message)
        except OSError:  # stdin unreadable: as good as ended
            pass
        deadline.append(time.monotonic() + drain_s)
        ended.set()
        inbox.put(None)
        # a send stuck in apprise does not hold us: the hard stop (no clean-up is owed, the parent counts)
        stop = threading.Timer(drain_s + GRACE_S, os.kill, (os.getpid(), signal.SIGKILL))
        stop.daemon = True
        stop.start()

    threading.Thread(target=read, name="alert-worker-stdin", daemon=True).start()

    def time_left() -> bool:
        return not deadline or time.monotonic() < deadline[0]

    def pause(seconds: float) -> bool:
        """Sleep ``seconds`` unless that passes the deadline (then return False: no time for another try)."""
        until = time.monotonic() + seconds
        if not deadline:
            ended.wait(seconds)  # woken early when stdin ends
        if deadline and until > deadline[0]:
            return False
        time.sleep(max(0.0, until - time.monotonic()))
        return True

    # One backoff for the receivers, not one per message: after a failure every attempt — the same message's
    # next one or the next message's first — waits a pause that doubles up to backoff_s * 2**(retries-1) and
    # is reset by a success, so a receiver that is down sees one attempt per pause, never a burst.
    longest_s = config["backoff_s"] * 2 ** max(0, retries - 1)
    pause_s = 0.0
    while (message := inbox.get()) is not None and time_left():
        for attempt in range(1, retries + 1):
            if pause_s and not pause(pause_s):  # the stop's deadline comes first
                _report(result="failed" if attempt > 1 else "abandoned", title=message["title"],
                        why=last.text or "stopped before the next attempt")
                break
            last.text = ""
            try:
                ok = bool(notifier.notify(body=message["body"], title=message["title"], notify_type=message["type"]))
            except Exception as exc:  # an apprise plugin bug must not end the worker
                ok, last.text = False, f"apprise raised {type(exc).__name__}"
            if ok:
                pause_s = 0.0
                _report(result="sent", level=message["level"])
                break
            pause_s = min(pause_s * 2, longest_s) if pause_s else config["backoff_s"]
            if attempt < retries:
                _report(result="retried")
            else:
                _report(result="failed", title=message["title"], why=last.text or "the receiver refused it")
    return 0  # messages still queued at the deadline: the parent counts them abandoned


if __name__ == "__main__":
    sys.exit(main())
