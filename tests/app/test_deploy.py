"""``deploy/``: the systemd unit, the Dockerfile and the compose file are read and validated (no daemon here),
and every ``framework`` command line in them is one the CLI accepts."""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path

import yaml

from framework.app.cli import build_parser
from framework.app.run import DRAIN_TIMEOUT_S

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def accepted(argv: list[str]) -> str:
    """The sub-command of a ``framework`` command line, which must parse (argparse exits otherwise)."""
    return str(build_parser().parse_args(argv).command)


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_the_systemd_unit():
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read(DEPLOY / "framework.service", encoding="utf-8")
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    start = shlex.split(service["ExecStart"])
    assert start[0].endswith("/framework") and accepted(start[1:]) == "run"
    assert "--http" in start and "--log-format" in start
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) > DRAIN_TIMEOUT_S
    assert service["User"] not in ("root", "0") and service["Restart"] == "on-failure"
    assert "framework health" in service["ExecStartPost"]
    assert service["EnvironmentFile"].startswith("/etc/")  # secrets outside the unit
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_dockerfile():
    rows = dockerfile_instructions()
    [base] = [rest for keyword, rest in rows if keyword == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), f"base image must be a pinned python:3.11 tag: {base}"
    users = [rest for keyword, rest in rows if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    [health] = [rest for keyword, rest in rows if keyword == "HEALTHCHECK"]
    command = json.loads(health.split(" CMD ", 1)[1])
    assert command[0] == "framework" and accepted(command[1:]) == "health"
    [entry] = [json.loads(rest) for keyword, rest in rows if keyword == "ENTRYPOINT"]
    [cmd] = [json.loads(rest) for keyword, rest in rows if keyword == "CMD"]
    assert entry == ["framework"] and accepted(cmd) == "run" and "--http" in cmd and "--metrics-port" in cmd
    assert ("STOPSIGNAL", "SIGTERM") in rows


def test_the_compose_file():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"postgres", "framework"}
    postgres, app = services["postgres"], services["framework"]
    assert re.fullmatch(r"postgres:1[4-9][\d.]*(-\w+)?", postgres["image"])  # PostgreSQL ≥ 14, pinned
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert app["environment"]["DATABASE_URL"].startswith("postgresql://framework:${POSTGRES_PASSWORD}@postgres:")
    test = app["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "framework" and accepted(test[2:]) == "health"
    assert all(port.startswith("127.0.0.1:") for port in app["ports"])  # the API and metrics stay local
    assert app["stop_signal"] == "SIGTERM"
    grace = re.fullmatch(r"(\d+)s", app["stop_grace_period"])
    assert grace and int(grace.group(1)) > DRAIN_TIMEOUT_S
    assert "API_KEY" not in json.dumps(app.get("environment", {}))  # keys only from .env


async def test_framework_health_answers_0_for_a_running_api_and_1_otherwise(database_url, monkeypatch, capsys):
    import asyncio

    from framework.app.cli import main
    from framework.app.run import Run, RunOptions
    from framework.settings import Settings
    from tools.degraded import dead_alert_url

    run = Run(RunOptions(plugins=["binance"], http_port=0, tui=False, speed=1),
              Settings(DATABASE_URL=database_url, FRAMEWORK_HTTP_TOKEN="health-token"))
    task = asyncio.create_task(run.execute())
    ready = asyncio.create_task(run.http_ready.wait())
    await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    assert ready.done() and run.http_url is not None
    try:
        monkeypatch.setenv("FRAMEWORK_HTTP_TOKEN", "health-token")
        assert await asyncio.to_thread(main, ["health", "--url", run.http_url]) == 0
        assert json.loads(capsys.readouterr().out)["venues"]["binance"]["mode"] == "emulated"
        monkeypatch.setenv("FRAMEWORK_HTTP_TOKEN", "wrong-token")
        assert await asyncio.to_thread(main, ["health", "--url", run.http_url]) == 1  # 401
        down = dead_alert_url().replace("json://", "http://").removesuffix("/hook/x")
        assert await asyncio.to_thread(main, ["health", "--url", down]) == 1
        assert "wrong-token" not in capsys.readouterr().err
    finally:
        run.stop_requested.set()
        await asyncio.wait_for(task, 60)
