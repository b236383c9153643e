"""Shared helpers: write mock racks to TOML and run them through the real harness."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.cli import main
from tests import code_capture

PROFILES = ("h100-sxm5-80gb", "rtx4090-blower-48gb", "ascend-910b")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def rack_toml(devices: list[dict[str, Any]], name: str = "test-rack", plan: str | None = None,
              extra_rack: str = "", host_extra: str = "") -> str:
    lines = ["[rack]", f'name = "{name}"']
    if plan:
        lines.append(f'plan = "{plan}"')
    lines += [extra_rack, "", "[[hosts]]", 'name = "local"', host_extra]
    for d in devices:
        lines += ["", "[[hosts.devices]]"] + [f"{k} = {_toml_value(v)}" for k, v in d.items()]
    return "\n".join(lines) + "\n"


def mock_card(serial: str, slot: int, profile: str = "h100-sxm5-80gb", faults: list[dict[str, Any]] | None = None,
              **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"backend": "mock", "profile": profile, "serial": serial, "slot": slot}
    if faults:
        d["faults"] = faults
    d.update(kw)
    return d


@pytest.fixture(autouse=True, scope="session")
def _private_db_and_locks(tmp_path_factory: pytest.TempPathFactory):
    """No test (module fixtures included) writes the user's default database or takes the
    machine's card locks, so suites running side by side never meet."""
    home = tmp_path_factory.mktemp("burnin-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BURNIN_DB", str(home / "default.db"))
        mp.setenv("BURNIN_LOCK_DIR", str(home / "locks"))
        yield


code_capture.install()


@pytest.fixture(autouse=True)
def _declared_finding_codes():
    """Fail the test in which burnin raised a finding code that neither its stage nor the harness
    declares (tests/code_capture.py); codes raised in a module fixture count at the module's first test."""
    yield
    bad = code_capture.undeclared()
    if bad:
        pytest.fail("finding codes raised that no stage (Stage.codes) nor the harness (harness/codes.py) "
                    "declares: " + "; ".join(bad), pytrace=False)


@pytest.fixture
def write_rack(tmp_path: Path):
    def _write(devices: list[dict[str, Any]], **kw: Any) -> Path:
        p = tmp_path / "rack.toml"
        p.write_text(rack_toml(devices, **kw), encoding="utf-8")
        return p
    return _write


@pytest.fixture
def burnin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run the CLI in-process (workers are real processes); returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def _run(*args: str) -> tuple[int, str, str]:
        res = CliRunner().invoke(main, list(args), catch_exceptions=False)
        return res.exit_code, res.stdout, res.stderr
    return _run


def wait_for(pred: Any, limit_s: float = 60.0) -> None:
    """Poll ``pred`` until it holds (a subprocess reached a state); fail after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.fixture(scope="session")
def pg_admin_url():
    """One real PostgreSQL server for the whole session (tests/pg_server.py); skipped, saying
    why, where neither pgserver nor the distribution's PostgreSQL is installed."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install '.[postgres]'")
    from tests.pg_server import postgres_server

    with postgres_server() as url:
        if url is None:
            pytest.skip("no PostgreSQL here: pip install pgserver (or apt-get install postgresql)")
        yield url


@pytest.fixture(scope="module")
def pg_url(pg_admin_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server for one test module."""
    from tests.pg_server import new_database

    return new_database(pg_admin_url, request.module.__name__.rsplit(".", 1)[-1])
