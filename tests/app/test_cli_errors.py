"""Bad input to the command line is a one-line error with exit status 2, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from framework import __version__
from framework.app.cli import main


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("speed", ["0", "-1", "nan", "inf", "5000"])
def test_a_bad_speed_is_refused(speed, capsys):
    assert main(["run", "--speed", speed, "--duration", "1"]) == 2
    assert "--speed must be a number above 0 and at most 1000" in one_line_error(capsys)


@pytest.mark.parametrize("duration", ["0", "-5", "nan"])
def test_a_bad_duration_is_refused(duration, capsys):
    assert main(["run", "--duration", duration]) == 2
    assert "--duration must be a number of seconds above 0" in one_line_error(capsys)


def test_follow_needs_a_file(capsys):
    assert main(["run", "--signals", "-", "--follow"]) == 2
    assert "--follow needs --signals FILE" in one_line_error(capsys)


def test_a_malformed_database_url_names_the_variable_not_its_value(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "mysql://root:hunter2@db/x")
    assert main(["run", "--duration", "1"]) == 2
    line = one_line_error(capsys)
    assert "DATABASE_URL must look like postgresql://" in line and "hunter2" not in line


def test_a_missing_signal_file_is_refused(tmp_path):
    from framework.app.run import read_signals
    from framework.errors import ConfigError

    with pytest.raises(ConfigError, match="nope.jsonl: cannot read the signal file"):
        read_signals(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("content", [None, b"{not json", b"[1, 2]", b"\xff\xfe\x00"])
def test_report_on_a_missing_or_malformed_file(tmp_path, capsys, content):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_bytes(content)
    assert main(["report", str(path)]) == 2
    line = one_line_error(capsys)
    assert str(path) in line and ("cannot read" in line or "not a run report" in line)


def test_replay_on_a_missing_file(tmp_path, capsys):
    assert main(["replay", "--plugin", "bybit", str(tmp_path / "nope.log")]) == 2
    assert "nope.log: cannot read" in one_line_error(capsys)


async def cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode, out.decode(), err.decode()


async def test_replay_on_a_binary_file(tmp_path):
    path = tmp_path / "frames.log"
    path.write_bytes(b"\xff\xfe\x00\x01garbage")
    code, _, err = await cli("replay", "--plugin", "binance", str(path))
    assert code == 2 and "Traceback" not in err and "not a text file of frames" in err


async def test_version():
    code, out, _ = await cli("--version")
    assert code == 0 and out.strip() == f"framework {__version__}"


async def test_verbose_is_honoured_by_run_and_piped_output_logs_events_line_by_line(tmp_path, database_url):
    signals = tmp_path / "s.jsonl"
    signals.write_text(json.dumps({"venue": "bybit", "symbol": "XRP/USDT:USDT", "side": "long", "contracts": "5",
                                   "stop_loss_pct": "2"}) + "\n")
    env = {**os.environ, "DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "framework.app.cli", "-v", "run", "--plugins", "bybit", "--signals", str(signals),
        "--duration", "3", "--speed", "1", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,  # piped: no live view
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    text = err.decode()
    assert " DEBUG " in text  # -v
    assert "INFO framework.app.run: opened bybit XRP/USDT:USDT long 5" in text  # one plain line per event
    assert "\x1b[" not in out.decode() + text  # no terminal drawing
    assert json.loads(out.decode().splitlines()[-1])["positions"]["opened"] == 1
