"""The accounts file (issue 19): validated by pydantic, one process runs several accounts, several
processes given the same file split the accounts by lease, two files with other accounts share one
database without interference."""

from __future__ import annotations

import asyncio

import pytest

from framework.app.accounts import AccountsFile, load_accounts, run_accounts
from framework.errors import ConfigError
from framework.settings import Settings

TWO = """
lease_s = 5
[[accounts]]
venue = "binance"
label = "{first}"
[[accounts]]
venue = "bybit"
label = "{second}"
"""


@pytest.mark.parametrize(("text", "words"), [
    ("[[accounts]]\nvenue = 'binance'\nlabel = 'a'\n[[accounts]]\nvenue = 'binance'\nlabel = 'a'\n",
     "binance/a is listed twice"),
    ("[[accounts]]\nvenue = 'binance'\nlabel = 'no spaces'\n", "accounts.0.label"),
    ("[[accounts]]\nvenue = 'binance'\nlabel = 'a'\nkey_env = 'K'\n", "key_env and secret_env go together"),
    ("[[accounts]]\nvenue = 'binance'\nlabel = 'a'\napi_key = 'secret'\n", "accounts.0.api_key: Extra inputs"),
    ("accounts = [\n", "not a TOML file"),
    ("lease_s = 5\n", "accounts: Field required"),
])
def test_an_invalid_accounts_file_is_refused_naming_the_field(tmp_path, text, words):
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_accounts(path)


def test_an_account_takes_its_keys_from_the_variables_named_and_never_echoes_them(tmp_path):
    path = tmp_path / "accounts.toml"
    path.write_text("[[accounts]]\nvenue = 'binance'\nlabel = 'main'\nkey_env = 'MAIN_KEY'\n"
                    "secret_env = 'MAIN_SECRET'\nmax_notional = 500\n[[accounts]]\nvenue = 'bybit'\nlabel = 'demo'\n")
    config = load_accounts(path)
    base = Settings(MAIN_KEY="k" * 16, MAIN_SECRET="s" * 32, BYBIT_API_KEY="process-wide")
    live = config.accounts[0].settings(base)
    assert live.account == "main" and live.limits().max_notional == 500
    assert live.live_config("binance").api_key.get_secret_value() == "k" * 16
    assert config.accounts[1].settings(base).live_config("bybit") is None  # no key_env: emulated, not the env's
    with pytest.raises(ConfigError, match="MAIN_KEY is not set") as missing:
        config.accounts[0].settings(Settings(MAIN_SECRET="s" * 32))
    assert "s" * 32 not in str(missing.value)


async def test_instances_given_one_accounts_file_split_its_accounts_and_others_do_not_interfere(database_url):
    base = Settings(DATABASE_URL=database_url)
    same = AccountsFile.model_validate({"lease_s": 5, "accounts": [{"venue": "binance", "label": "a"},
                                                                    {"venue": "bybit", "label": "b"}]})
    other = AccountsFile.model_validate({"lease_s": 5, "accounts": [{"venue": "binance", "label": "c"},
                                                                     {"venue": "bybit", "label": "d"}]})
    stop = asyncio.Event()
    runs, readies = [], []
    for config in (same, same, other):  # started one after the other: the first of `same` gets its leases
        ready = asyncio.Event()
        runs.append(asyncio.create_task(run_accounts(config, base=base, ready=ready, stop=stop, speed=10)))
        await asyncio.wait_for(ready.wait(), 120)
        readies.append(ready)
    stop.set()
    first, second, third = [await asyncio.wait_for(run, 120) for run in runs]

    def states(result):
        return {name: venues[name.split("/")[0]]["lease"]["state"] for name, venues in result.items()}

    assert states(first) == {"binance/a": "owner", "bybit/b": "owner"}
    assert states(second) == {"binance/a": "standby", "bybit/b": "standby"}
    assert states(third) == {"binance/c": "owner", "bybit/d": "owner"}
    assert first["binance/a"]["binance"]["account"] == "emulated-a"


async def test_signals_go_to_the_account_their_venue_and_label_name(database_url, tmp_path):
    """``--accounts`` with ``--signals``: each signal to its account (by venue and label; without a label,
    the venue's only account); an ambiguous or unknown account is a failed signal, the feed goes on."""
    import json
    import time

    import asyncpg

    base = Settings(DATABASE_URL=database_url)
    config = AccountsFile.model_validate({"lease_s": 5, "accounts": [
        {"venue": "binance", "label": "a"}, {"venue": "binance", "label": "b"}, {"venue": "bybit", "label": "c"}]})
    opening = {"symbol": "XRP/USDT:USDT", "action": "open", "side": "short", "contracts": "20",
               "stop_loss_pct": "5"}
    signals = [{"venue": "binance", **opening},  # two binance accounts: which one?
               {"venue": "binance", "account": "zz", **opening},  # not in the file
               {"venue": "binance", "account": "a", **opening},
               {"venue": "bybit", **opening, "side": "long"},  # the only bybit account: c
               {"venue": "binance", "account": "a", "symbol": "XRP/USDT:USDT", "action": "close"}]
    path = tmp_path / "signals.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in signals))
    stop, ready = asyncio.Event(), asyncio.Event()
    run = asyncio.create_task(run_accounts(config, base=base, ready=ready, stop=stop, speed=10, signals=path))
    await asyncio.wait_for(ready.wait(), 120)
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 120
        while True:  # the feed is sequential: when a's row is closed and c's open, every signal was handled
            rows = {(r["account"], r["venue"], r["side"], r["status"]) for r in await conn.fetch(
                "SELECT account, venue, side, status FROM positions")}
            if rows == {("emulated-a", "binance", "short", "closed"), ("emulated-c", "bybit", "long", "open")}:
                break
            assert time.monotonic() < deadline and not run.done(), rows
            await asyncio.sleep(0.1)  # another task's writes: polled
    finally:
        await conn.close()
    stop.set()
    result = await asyncio.wait_for(run, 120)
    assert result["signals"]["accepted"] == 3
    failed = [(f["signal"]["account"], f["type"], f["error"]) for f in result["signals"]["failed"]]
    assert [(account, kind) for account, kind, _ in failed] == [(None, "SignalRejected"), ("zz", "SignalRejected")]
    assert "name one of ['binance/a', 'binance/b']" in failed[0][2] and "no account 'zz'" in failed[1][2]
    assert {name: venues[name.split("/")[0]]["open"] for name, venues in result.items() if name != "signals"} == \
        {"binance/a": 0, "binance/b": 0, "bybit/c": 1}


async def test_the_http_api_of_an_accounts_run_routes_signals_by_account(database_url):
    """``--accounts`` with ``--http``: a signal posted for ``binance`` account ``b`` opens there, one without
    an account where the venue has two is refused (409); positions, close and health span the accounts."""
    import aiohttp

    token = "test-token-1234"
    auth = {"Authorization": f"Bearer {token}"}
    base = Settings(DATABASE_URL=database_url, FRAMEWORK_HTTP_TOKEN=token)
    config = AccountsFile.model_validate({"lease_s": 5, "accounts": [{"venue": "binance", "label": "a"},
                                                                      {"venue": "binance", "label": "b"}]})
    urls: list[str] = []
    stop, ready = asyncio.Event(), asyncio.Event()
    run = asyncio.create_task(run_accounts(config, base=base, ready=ready, stop=stop, speed=10, http_port=0,
                                           serving=urls.append))
    await asyncio.wait_for(ready.wait(), 120)
    [url] = urls
    opening = {"venue": "binance", "symbol": "XRP/USDT:USDT", "action": "open", "side": "short",
               "contracts": "20", "stop_loss_pct": "5"}
    async with aiohttp.ClientSession(headers=auth) as client:
        async with client.post(f"{url}/v1/signals", json={**opening, "id": "s1"}) as response:
            assert response.status == 409, await response.text()
            assert "name one of ['binance/a', 'binance/b']" in (await response.json())["error"]
        async with client.post(f"{url}/v1/signals", json={**opening, "account": "b", "id": "s2"}) as response:
            assert response.status == 201, await response.text()
        async with client.get(f"{url}/v1/positions") as response:
            assert [(p["account"], p["side"]) for p in await response.json()] == [("emulated-b", "short")]
        async with client.get(f"{url}/v1/health") as response:
            accounts = (await response.json())["accounts"]
            assert {name: venues["binance"]["open"] for name, venues in accounts.items()} == \
                {"binance/a": 0, "binance/b": 1}
        async with client.post(f"{url}/v1/positions/binance/XRP/USDT:USDT/close") as response:
            assert response.status == 200 and (await response.json())["closed"], await response.text()
        async with client.get(f"{url}/v1/positions") as response:
            assert await response.json() == []
    stop.set()
    result = await asyncio.wait_for(run, 120)
    assert result["signals"]["accepted"] == 0 and len(result["signals"]["failed"]) == 1  # HTTP: the refusal


def test_framework_run_accounts_refuses_a_bad_file_and_options_it_does_not_take(tmp_path, capsys):
    from framework.app.cli import main

    path = tmp_path / "accounts.toml"
    path.write_text("[[accounts]]\nvenue = 'binance'\nlabel = 'a'\n")
    assert main(["run", "--accounts", str(path), "--metrics-port", "0"]) == 2
    assert "not with --metrics-port" in capsys.readouterr().err
    assert main(["run", "--accounts", str(path), "--signals", str(path)]) == 2  # not a signal file
    assert "accounts.toml:1: invalid signal" in capsys.readouterr().err  # before anything connects
    path.write_text("[[accounts]]\nvenue = 'binance'\n")
    assert main(["run", "--accounts", str(path)]) == 2
    assert "accounts.0.label: Field required" in capsys.readouterr().err
