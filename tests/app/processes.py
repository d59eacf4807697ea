"""Subprocess helpers of the app tests: an emulated venue in its own process (``framework venue``, the live path's
counterpart) and reading a child's output up to a line, each with an upper bound a healthy run never comes near
(a subprocess starting beside a loaded suite)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

BOUND_S = 150.0


async def start_venue(
    name: str, key: str, secret: str, *args: str
) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """``framework venue NAME`` in its own process, at 10× speed; its first stdout line (URLs, account)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", "venue", name, "--speed", "10", "--api-key", key,
        "--api-secret", secret, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    return process, json.loads(await asyncio.wait_for(process.stdout.readline(), BOUND_S))


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then wait for the exit."""
    if process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)


async def read_until(stream: asyncio.StreamReader, needle: str, seen: list[str] | None = None) -> str:
    """Read lines until one contains ``needle`` (appending them to ``seen`` when given); returns the lines read.

    :raises AssertionError: the stream ended first (naming what it said); ``TimeoutError`` after :data:`BOUND_S`.
    """
    lines = [] if seen is None else seen

    async def scan() -> str:
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"{needle!r} never came; got:\n{''.join(lines)[-3000:]}")
            lines.append(line)
            if needle in line:
                return "".join(lines)

    return await asyncio.wait_for(scan(), BOUND_S)


async def sigterm_after(process: asyncio.subprocess.Process, needle: str,
                        before: Callable[[], Awaitable[None]] | None = None) -> str:
    """Read ``process``'s stderr up to a line holding ``needle``, await ``before`` (when given), send SIGTERM and
    wait for the exit; returns everything it wrote on stderr.  The process is killed if any of that fails."""
    seen: list[str] = []
    try:
        assert process.stderr is not None
        await read_until(process.stderr, needle, seen)
        if before is not None:
            await before()
        process.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(process.communicate(), BOUND_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return "".join(seen) + rest.decode()
