"""No traceback, ever, for input: every bad config or plan is one line, exit 2 (or 3).

The fuzz test mutates the README's example rack (values, keys, bytes) with a fixed seed and runs
``burnin validate`` on each; every case the bench report listed is a test of its own below.
"""

from __future__ import annotations

import copy
import os
import random
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.cli import main
from tests.conftest import _toml_value, mock_card, rack_toml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "rack_configs" / "bench-mock.toml"
NASTY: list[Any] = [
    -1, 0, 2**63 - 1, -(2**63), 1.5, float("inf"), float("-inf"), float("nan"), "", " ", " x ", "\t",
    "../../pyproject", "/etc/passwd", "a" * 5000, "\u00e9\u2603", True, [], [1, -1], {}, {"kind": 1},
    "\x1b[2J", 65536, 1e308,
]


def _invoke(*args: str) -> tuple[int, str, BaseException | None]:
    res = CliRunner().invoke(main, list(args))
    exc = res.exception if not isinstance(res.exception, SystemExit) else None
    return res.exit_code, res.stderr, exc


def _toml(data: dict[str, Any]) -> str:
    """A nested dict as TOML (tables and arrays of tables; values as conftest writes them)."""
    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any], header: str | None) -> None:
        if header:
            lines.append(header)
        subs = []
        for k, v in d.items():
            key = k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)
            if isinstance(v, dict) and v and all(isinstance(x, (dict, list)) for x in v.values()):
                subs.append((key, v, False))
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                subs.append((key, v, True))
            else:
                lines.append(f"{key} = {_toml_value(v)}")
        for key, v, many in subs:
            name = f"{prefix}.{key}" if prefix else key
            if many:
                for item in v:
                    table(name, item, f"[[{name}]]")
            else:
                table(name, v, f"[{name}]")

    table("", data, None)
    return "\n".join(lines) + "\n"


def _leaves(d: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.append(path + (k,))
            out += _leaves(v, path + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out.append(path + (i,))
            out += _leaves(v, path + (i,))
    return out


def _mutate(rng: random.Random, base: dict[str, Any], text: str) -> bytes:
    """One random mutation: a value, a key, a duplicated table, or the bytes themselves."""
    roll = rng.random()
    if roll < 0.15:  # byte-level damage
        data = bytearray(text.encode())
        op = rng.choice(["flip", "cut", "insert", "bom", "latin1"])
        if op == "flip":
            for _ in range(rng.randint(1, 5)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == "cut":
            data = data[: rng.randrange(len(data))]
        elif op == "insert":
            pos = rng.randrange(len(data))
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == "bom":
            data = bytearray(b"\xef\xbb\xbf") + data
        else:
            data = bytearray(text.replace("local", "l\u00f6cal").encode("latin-1"))
        return bytes(data)
    d = copy.deepcopy(base)
    paths = _leaves(d)
    path = rng.choice(paths)
    parent = d
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if roll < 0.7:
        parent[last] = copy.deepcopy(rng.choice(NASTY))
    elif roll < 0.8 and isinstance(parent, dict):
        del parent[last]
    elif roll < 0.9 and isinstance(parent, dict):
        parent[rng.choice(["colour", "cards", "slot", "seed", "memory_mib", "db", "plan", "faults"])] = rng.choice(NASTY)
    else:
        d["hosts"].append(copy.deepcopy(rng.choice(d["hosts"])))
    return _toml(d).encode()


def test_fuzzed_configs_never_traceback(tmp_path):
    """400 seeded mutations of the example rack: exit 0, 2 or 3, one line, never an exception."""
    text = EXAMPLE.read_text(encoding="utf-8")
    base = tomllib.loads(text)
    rng = random.Random(20261130)
    seen: dict[int, int] = {}
    for i in range(400):
        p = tmp_path / f"fuzz{i}.toml"
        p.write_bytes(_mutate(rng, base, text))
        code, err, exc = _invoke("validate", str(p))
        assert exc is None, (i, p.read_bytes()[:300], repr(exc))
        assert code in (0, 2, 3), (i, code, err)
        if code:
            assert err.count("\n") == 1 and "Traceback" not in err, (i, err)
            assert str(p) in err, (i, err)
        seen[code] = seen.get(code, 0) + 1
    assert seen.get(2, 0) > 100 and seen.get(0, 0) > 10, seen  # the mutations do reach both sides


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 2**63 - 1 + 0}, None),
        ({"memory_mib": 65536}, "memory_mib"),
        ({"profile": "../../pyproject"}, "profile"),
        ({"profile": "x" * 5000}, "profile"),
        ({"slot": -1}, "slot"),
        ({"serial": ""}, "serial"),
        ({"serial": "   "}, "serial"),
        ({"serial": "A\x07"}, "serial"),
        ({"faults": [{"kind": "pcie.replays", "per_minute": float("inf")}]}, "per_minute"),
        ({"faults": [{"kind": "power.capped", "watts": float("inf")}]}, "watts"),
        ({"faults": [{"kind": "power.capped", "watts": float("nan")}]}, "watts"),
        ({"faults": [{"kind": "bus.fall_off", "at_s": 1e300}]}, "at_s"),
    ],
)
def test_bad_numbers_names_and_serials_are_exit_2(tmp_path, extra, expect):
    card = {**mock_card("S1", 0), **extra}
    p = tmp_path / "r.toml"
    p.write_text(rack_toml([card]), encoding="utf-8")
    code, err, exc = _invoke("validate", str(p))
    assert exc is None
    if expect is None:
        assert code == 0, err
        return
    assert code == 2 and err.count("\n") == 1 and str(p) in err and expect in err, err


def test_bad_rack_and_host_values_are_exit_2(tmp_path):
    p = tmp_path / "r.toml"
    for extra_rack, host_extra, expect in [
        ("parallel = 0", "", "parallel"),
        ("", "cards = 0", "cards"),
        ("", "cards = [1, 1]", "cards"),
        ("", "cards = 1", "slot 1"),  # the second card's slot is not one of the host's
        ("", '[[hosts.instruments]]\nport = "sim"\ntimeout_s = inf', "timeout_s"),
    ]:
        p.write_text(rack_toml([mock_card("A", 0), mock_card("B", 1)], extra_rack=extra_rack, host_extra=host_extra))
        code, err, exc = _invoke("validate", str(p))
        assert exc is None and code == 2 and expect in err and err.count("\n") == 1, (extra_rack, host_extra, err)


def test_two_hosts_with_one_name_are_exit_2(tmp_path):
    p = tmp_path / "r.toml"
    text = rack_toml([mock_card("A", 0)])
    text += '\n[[hosts]]\nname = "local"\n[[hosts.devices]]\nbackend = "mock"\nprofile = "h100-sxm5-80gb"\nserial = "B"\n'
    p.write_text(text)
    code, err, _ = _invoke("validate", str(p))
    assert code == 2 and "'local'" in err and "twice" in err, err


def test_serial_is_trimmed_so_a_trailing_space_is_the_same_card(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(rack_toml([mock_card("A1", 0), mock_card("A1 ", 1)]))
    code, err, _ = _invoke("validate", str(p))
    assert code == 2 and "'A1' already used" in err, err


def test_utf8_bom_is_read(tmp_path):
    p = tmp_path / "r.toml"
    p.write_bytes(b"\xef\xbb\xbf" + rack_toml([mock_card("A", 0)]).replace("\n", "\r\n").encode())
    code, err, _ = _invoke("validate", str(p))
    assert code == 0, err


@pytest.mark.parametrize("data", [b"\xff\xfe[rack]\n", bytes(range(256)), "[rack]\nname = \"caf\u00e9\"\n".encode("latin-1")])
def test_non_utf8_or_binary_config_is_exit_2(tmp_path, data):
    p = tmp_path / "r.toml"
    p.write_bytes(data)
    code, err, exc = _invoke("validate", str(p))
    assert exc is None and code == 2 and str(p) in err and err.count("\n") == 1, err


def test_special_files_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # opening it to read would block forever
    for path in (str(fifo), "/dev/zero"):
        code, err, exc = _invoke("validate", path)
        assert exc is None and code == 2 and "not a regular file" in err and err.count("\n") == 1, (path, err)
    code, err, exc = _invoke("validate", str(tmp_path))
    assert exc is None and code == 2 and "Traceback" not in err


def test_plan_names_and_files_are_checked(tmp_path):
    rack = tmp_path / "r.toml"
    rack.write_text(rack_toml([mock_card("A", 0)]))
    for plan, expect in [("x" * 5000, "not a plan name"), ("../../pyproject", "plan file not found"),
                         ("nope", "not found")]:
        code, err, exc = _invoke("validate", str(rack), "--plan", plan)
        assert exc is None and code == 2 and expect in err and err.count("\n") == 1, (plan, err)
    bad = tmp_path / "p.toml"
    for text, expect in [('[[stages]]\nstage = "health"\nobserve_s = inf\n', "observe_s"),
                         ('[[stages]]\nstage = ":nothing"\n', "stage"),
                         ("repeat = 100000000\n[[stages]]\nstage = \"health\"\n", "repeat"),
                         ('[[stages]]\nstage = 5\n', "stage")]:
        bad.write_text(text)
        code, err, exc = _invoke("validate", str(rack), "--plan", str(bad))
        assert exc is None and code == 2 and expect in err and err.count("\n") == 1, (text, err)


def test_config_plan_is_relative_to_the_config(tmp_path, monkeypatch):
    sub = tmp_path / "racks"
    sub.mkdir()
    (sub / "mine.toml").write_text('[[stages]]\nstage = "health"\nobserve_s = 0\n')
    (sub / "r.toml").write_text(rack_toml([mock_card("A", 0)], plan="mine.toml"))
    monkeypatch.chdir(tmp_path)
    code, err, _ = _invoke("validate", "racks/r.toml")
    assert code == 0, err
