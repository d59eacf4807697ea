"""A signal file's every failure is one ConfigError naming the file, the line and the field (issue 14 item 7):
undecodable bytes, a directory, a missing file, absurd values; lines are split on "\\n" only, so a U+2028
inside a JSON string does not shift the line numbers."""

from __future__ import annotations

import json

import pytest

from framework.app.run import read_signals
from framework.errors import ConfigError

OPEN = {"at_ms": 0, "venue": "binance", "symbol": "XRP/USDT:USDT", "action": "open", "side": "long",
        "contracts": "20", "stop_loss_pct": "2"}


@pytest.mark.parametrize(("change", "named"), [
    ({"contracts": "1E-999999"}, "contracts"),
    ({"contracts": "1e30"}, "contracts"),
    ({"at_ms": 1e30}, "at_ms"),
    ({"venue": ""}, "venue"),
    ({"symbol": ""}, "symbol"),
    ({"take_profit_pct": "1e30"}, "take_profit_pct"),
])
def test_absurd_values_are_refused_naming_the_line_and_field(tmp_path, change, named):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(OPEN) + "\n" + json.dumps({**OPEN, **change}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"s\.jsonl:2: invalid signal: {named}"):
        read_signals(path)


def test_unreadable_files_are_one_line_errors(tmp_path):
    (tmp_path / "bytes.jsonl").write_bytes(b"\xff\xfe not text")
    (tmp_path / "a-directory").mkdir()
    for name in ("bytes.jsonl", "a-directory", "missing.jsonl"):
        with pytest.raises(ConfigError, match=name):
            read_signals(tmp_path / name)


def test_a_line_separator_inside_a_string_keeps_the_line_numbers(tmp_path):
    path = tmp_path / "s.jsonl"
    close = {"at_ms": 0, "venue": "binance", "symbol": "XRP\u2028USDT", "action": "close"}
    path.write_text(json.dumps(OPEN) + "\n" + json.dumps(close, ensure_ascii=False) + "\n{broken\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"s\.jsonl:3:"):
        read_signals(path)
