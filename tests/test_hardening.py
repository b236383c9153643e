"""Issue 23, hardening items 1-5: hostile strings from devices and configs, crashes, exposure.

Each test feeds the issue's own hostile input: the serials ``SN-1[/bold]`` and
``[bold red]X[/bold red][link=file:///etc/passwd]click[/link]`` (valid serials: printable text),
ESC sequences and newlines in names and reported strings, a 100 kB process name, a crash after
the results are stored, ``--metrics 0.0.0.0:PORT``.
"""

from __future__ import annotations

import io
import json
import sqlite3
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt
from rich.console import Console

from drivers.api import DeviceProcess, Identity
from drivers.mock import default_serial
from drivers.registry import SERIAL_MAX
from harness.cli import main
from harness.crash import EXIT_CRASH
from harness.views.html import to_html
from harness.views.junit import to_junit
from harness.views.metrics import exposure_warning, metrics_url, parse_addr
from harness.views.safe import cell, html, line, markdown, visible
from harness.views.table import print_verdicts
from tests.conftest import mock_card, rack_toml

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "ascend"
LINK = "[bold red]X[/bold red][link=file:///etc/passwd]click[/link]"
CLOSE = "SN-1[/bold]"
RACK = "<i>rack</i> [bold]x[/i]"
MD = "<b>*x*</b>|`y`"
BUSY = "[/red]evil"
PLAN = '[[stages]]\nstage = "preflight"\n[[stages]]\nstage = "health"\nobserve_s = 0\n'
ESC_NAME = "evil\x1b]0;PWNED\x07\x1b[2J\nFAKE LINE: PASS\u202e"


def _cli(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def _no_raw_controls(text: str) -> None:
    """Nothing a terminal would obey: no ESC, BEL or CR, no bidi override."""
    assert not any(c in text for c in "\x1b\x07\r\u202e"), ascii(text[:300])


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One short run of two mock cards with markup in their serials, the rack name and a busy
    process's name; its database, config and reports."""
    d = tmp_path_factory.mktemp("marked")
    rack = d / "rack.toml"
    rack.write_text(rack_toml([mock_card(CLOSE, 0, memory_mib=16),
                               mock_card(LINK, 1, memory_mib=16, faults=[{"kind": "host.busy", "pid": 42,
                                                                         "name": BUSY}]),
                               mock_card(MD, 2, memory_mib=16)],
                              name=RACK), encoding="utf-8")
    plan = d / "plan.toml"
    plan.write_text(PLAN, encoding="utf-8")
    out = {"rack": rack, "plan": plan, "db": d / "r.db", "json": d / "r.json", "junit": d / "r.xml",
           "html": d / "r.html"}
    code, stdout, stderr = _cli("run", str(rack), "--plan", str(plan), "--db", str(out["db"]), "--json",
                                str(out["json"]), "--junit", str(out["junit"]), "--html", str(out["html"]))
    assert code == 1, stderr  # the busy card is retest; not a crash (70), not a traceback
    (d / "stdout.txt").write_text(stdout, encoding="utf-8")
    (d / "stderr.txt").write_text(stderr, encoding="utf-8")
    out["stdout"], out["stderr"] = d / "stdout.txt", d / "stderr.txt"
    return out


# 1 ---------------------------------------------------------------------------------------------

def test_run_shows_markup_serials_literally(marked):
    out = marked["stdout"].read_text()
    for s in (CLOSE, LINK, RACK, BUSY):
        assert s in out, s  # read as markup, the brackets would be gone (or MarkupError)
    err = marked["stderr"].read_text()
    assert CLOSE in err and LINK[:30] in err  # the progress lines name the cards as written


@pytest.mark.parametrize("verb", ["report", "history", "devices"])
def test_report_history_devices_show_markup_literally(marked, verb):
    args = {"report": ["report", str(marked["json"])],
            "history": ["history", CLOSE, "--db", str(marked["db"])],
            "devices": ["devices", str(marked["rack"]), "--plan", str(marked["plan"])]}[verb]
    code, out, err = _cli(*args)
    assert code == 0, err
    assert CLOSE in out and "Traceback" not in err
    if verb != "history":
        assert LINK in out


def test_verdict_table_on_a_terminal_draws_no_hyperlink_and_obeys_no_escape():
    """On a real terminal (colours on), the hostile strings are text: no OSC 8 hyperlink, no style
    from the serial, no ESC of theirs; newlines shown as \\n, so no forged row."""
    doc = _doc(serial=LINK, rack="r\x1b]0;PWNED\x07", message="ok\nFAKE LINE: PASS\x1b[2J")
    buf = io.StringIO()
    print_verdicts(doc, Console(file=buf, force_terminal=True, width=400, color_system="standard"))
    out = buf.getvalue()
    assert "\x1b]8;" not in out and "file:///etc/passwd" in out and "[link=" in out
    assert "PWNED\x07" not in out and "\x1b[2J" not in out and "\\x1b[2J" in out
    assert not any(ln.lstrip("│ ").startswith("FAKE LINE") for ln in out.splitlines())


def test_report_of_a_hostile_document_keeps_controls_off_the_terminal(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(_doc(serial="A\x1b[2J\nFAKE LINE: PASS", rack="r\x1b]0;PWNED\x07",
                                 message="m\r\x1b[31m")), encoding="utf-8")
    code, out, err = _cli("report", str(p))
    assert code == 0, err
    _no_raw_controls(out)
    assert "\\x1b[2J\\nFAKE LINE: PASS" in out
    assert not any(ln.lstrip("│ ").startswith("FAKE LINE") for ln in out.splitlines())


def test_error_lines_show_control_characters_as_escapes(tmp_path):
    """A config key and a file name with ESC and a newline: one line, escapes visible."""
    p = tmp_path / "r.toml"
    p.write_text(rack_toml([mock_card("A", 0)]) + '"x\\u001b[2J\\nFAKE" = 1\n', encoding="utf-8")
    code, _, err = _cli("validate", str(p))
    assert code == 2 and err.count("\n") == 1 and "unknown key" in err and "x\\x1b[2J\\nFAKE" in err, err
    _no_raw_controls(err)
    missing = tmp_path / "no\x1b[2Jsuch\nfile.toml"
    code, _, err = _cli("validate", str(missing))
    assert code == 2 and err.count("\n") == 1 and "\\x1b[2Jsuch\\nfile" in err, err
    _no_raw_controls(err)


def test_profiles_and_stages_listings_are_literal():
    for verb in ("profiles", "plans", "stages"):
        code, out, err = _cli(verb)
        assert code == 0, (verb, err)
        _no_raw_controls(out)


def test_safe_helpers():
    assert visible("a\x1b[2J\nb\t\u202e\x00") == "a\\x1b[2J\\nb\\t\\u202e\\x00"
    assert visible("plain [bold] é ☃") == "plain [bold] é ☃"
    assert cell(CLOSE).plain == CLOSE and cell("x" * 5000).cell_len <= 1000
    assert line("a\nb") == "a\\nb"
    assert html("<b>&\x1b") == "&lt;b&gt;&amp;\\x1b" and html("a\nb", multiline=True) == "a\nb"
    assert "<" not in MarkdownIt().render(markdown("<script>x</script> *a* [l](u) `c`")).replace("<p>", "")\
        .replace("</p>", "")


# 2 ---------------------------------------------------------------------------------------------

def test_a_crash_exits_70_with_one_line_and_the_traceback_in_a_file(marked, tmp_path, monkeypatch):
    """A bug in a view (here: the verdict table raising) after the run is stored: exit 70, not 1,
    one line naming where the traceback went; the results stay in the database."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    def boom(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom\x1b[2J")
    monkeypatch.setattr("harness.views.table.print_verdicts", boom)
    db = tmp_path / "crash.db"
    res = CliRunner().invoke(main, ["run", str(marked["rack"]), "--plan", str(marked["plan"]), "--db", str(db),
                                    "-q", "--only", CLOSE])
    assert res.exit_code == EXIT_CRASH == 70, res.stderr
    err = res.stderr
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" in err, err
    assert "RuntimeError: boom\\x1b[2J" in err
    _no_raw_controls(err)
    saved = Path(err.split("traceback in ", 1)[1].split(";", 1)[0])
    assert saved.parent == tmp_path / "state" / "burnin" / "crashes"
    text = saved.read_text()
    assert text.startswith("burnin ") and "Traceback (most recent call last)" in text
    assert "RuntimeError: boom\\x1b[2J" in text and "\x1b" not in text  # safe to cat, too
    assert (saved.stat().st_mode & 0o077) == 0  # only its user reads it
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT status FROM runs").fetchone()[0] == "finished"
        assert c.execute("SELECT COUNT(*) FROM tests").fetchone()[0] > 0


def test_a_crash_with_no_state_folder_saves_the_traceback_in_the_temp_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state folder would be")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))

    def boom(*_: Any, **__: Any) -> None:
        raise KeyError("card")
    monkeypatch.setattr("harness.views.profiles.profiles_document", boom)
    res = CliRunner().invoke(main, ["profiles"])
    assert res.exit_code == 70 and res.stderr.count("\n") == 1, res.stderr
    saved = Path(res.stderr.split("traceback in ", 1)[1].split(";", 1)[0])
    assert saved.parent == tmp_path and "KeyError" in saved.read_text()


def test_exit_codes_are_documented_together():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "`70`" in readme and "EX_SOFTWARE" in readme
    assert "70" in (main.help or "")


# 3 ---------------------------------------------------------------------------------------------

def _doc(serial: str = "S1", rack: str = "r", message: str = "m", process: str = "p") -> dict[str, Any]:
    finding = {"code": "host.busy", "severity": "fail", "action": "fix_host", "test": "preflight",
               "message": message, "location": {"process": process}, "evidence": {"name": process}}
    return {"schema": "burnin.result/1", "run_id": "r1", "rack": rack, "plan": "quick", "started_at": "t0",
            "finished_at": "t1", "cards": [{
                "host": "local", "slot": 0, "backend": "mock", "model": "m", "serial": serial, "key": "local/0",
                "verdict": "retest", "actions": ["fix_host"], "findings": [finding],
                "tests": [{"name": "preflight", "status": "fail", "duration_s": 1.0, "metrics": {},
                           "error": f"err {process}"}]}]}


def test_junit_is_well_formed_whatever_the_strings():
    doc = _doc(serial="S\x00\x1b[2J", rack="r\x01\x0b", message="m\x07\nFAKE\ufffe", process="p\x1b\x08\ud800")
    text = to_junit(doc)
    root = ET.fromstring(text.encode("utf-8"))  # a CI server's parser
    assert root.get("name") == "burnin quick r\\x01\\x0b"
    failure = root.find(".//failure")
    assert failure is not None and "\\x07\\nFAKE\\ufffe" in (failure.text or "")


def test_html_escapes_the_same_strings():
    out = to_html(_doc(serial="<script>alert(1)</script>", rack="<img src=x onerror=alert(1)>",
                       message="m\x1b[2J", process="<b>p</b>"))
    assert "<script>alert" not in out and "<img src=x" not in out and "<b>p</b>" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "\x1b" not in out and "\\x1b[2J" in out


def test_the_junit_and_html_of_the_run_parse(marked):
    ET.parse(marked["junit"])
    html_text = marked["html"].read_text()
    assert LINK in html_text.replace("&#x27;", "'") and "\x1b" not in html_text


def test_evidence_readme_renders_no_inline_html_or_markup(marked, tmp_path):
    code, _, err = _cli("evidence", MD, "--out", str(tmp_path / "pack"), "--db", str(marked["db"]))
    assert code == 0, err
    readme = (tmp_path / "pack" / "README.md").read_text()
    rendered = MarkdownIt("commonmark").enable("table").render(readme)
    assert "<b>" not in rendered and "<i>" not in rendered and "<em>" not in rendered
    assert "&lt;b&gt;*x*&lt;/b&gt;|`y`" in rendered and "&lt;i&gt;rack&lt;/i&gt;" in rendered
    header = next(ln for ln in readme.splitlines() if ln.startswith("| file"))
    assert all(ln.count("|") - ln.count("\\|") == header.count("|")
               for ln in readme.splitlines() if ln.startswith("| "))  # no cell split by a serial's |


# 4 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rack_extra", "host", "device", "field"), [
    ('name = "r\\u001b]0;PWNED\\u0007"', "local", {}, "rack.name"),
    ('name = "r\\nFAKE LINE"', "local", {}, "rack.name"),
    ('name = "r"', "gpu 07 [bold]", {}, "hosts[0].name"),
    ('name = "r"', "gpu\\u001b[2J", {}, "hosts[0].name"),
    ('name = "r"', "local", {"faults": [{"kind": "host.busy", "pid": 7, "name": "a\nFAKE LINE"}]}, "name"),
    ('name = "r"', "local", {"faults": [{"kind": "host.busy", "pid": 7, "name": "x" * 100_000}]}, "name"),
    ('name = "r"\nray_interface = "eth0; rm -rf /"', "local", {}, "rack.ray_interface"),
    ('name = "r"\nray_address = "host:6379\\u001b"', "local", {}, "rack.ray_address"),
])
def test_names_are_checked_where_they_enter(tmp_path, rack_extra, host, device, field):
    card = {**mock_card("A", 0), **device}
    text = rack_toml([card]).replace('name = "test-rack"', rack_extra).replace('name = "local"', f'name = "{host}"')
    p = tmp_path / "r.toml"
    p.write_text(text, encoding="utf-8")
    code, _, err = _cli("validate", str(p))
    assert code == 2 and err.count("\n") == 1 and field in err, err
    assert len(err) < 1000, len(err)
    _no_raw_controls(err)


def test_a_mock_card_without_serial_gets_a_valid_one_even_on_a_long_host():
    assert default_serial("local", 3) == "SIM-local-03"
    long_a, long_b = "a" * 200 + "x", "a" * 200 + "y"
    sa, sb = default_serial(long_a, 0), default_serial(long_b, 0)
    assert len(sa) <= SERIAL_MAX and sa != sb and sa.startswith("SIM-aaa")


def test_what_a_driver_reports_is_bounded_and_visible_where_it_enters():
    p = DeviceProcess(pid=1, name="x" * 100_000 + "\x1b[2J")
    assert p.name is not None and len(p.name) <= 256
    p = DeviceProcess(pid=1, name="py\x1b]0;PWNED\x07")
    assert p.name == "py\\x1b]0;PWNED\\x07"
    ident = Identity(vendor="nvidia", model="H100\nFAKE", serial="S\x1b[2J", firmware={"vbios": "9" * 5000})
    assert ident.serial == "S\\x1b[2J" and ident.model == "H100\\nFAKE" and len(ident.firmware["vbios"]) <= 256


def test_a_100kb_process_name_from_npu_smi_stays_small_in_every_report(tmp_path):
    """A real backend (the npu-smi simulator) reports one NPU busy with a 100 kB process name full
    of ESC sequences and markup: the reports stay small, the terminal gets none of it raw."""
    state = json.loads((FIX / "sim_state.json").read_text(encoding="utf-8"))
    state["cards"] = state["cards"][:1]
    state["cards"][0]["processes"] = [{"pid": 7, "name": "[bold]" + ESC_NAME.replace("\n", " ") + "A" * 100_000,
                                       "memory_mb": 10}]
    state["writable"] = True
    sp = tmp_path / "state.json"
    sp.write_text(json.dumps(state), encoding="utf-8")
    rack = tmp_path / "r.toml"
    npu_smi = f"{sys.executable} -S -E {FIX / 'npu_smi_sim.py'} --state {sp}"
    rack.write_text('[rack]\nname = "npu"\n[[hosts]]\nname = "local"\n[[hosts.devices]]\nbackend = "ascend"\n'
                    f"npu_smi = {json.dumps(npu_smi)}\n", encoding="utf-8")
    plan = tmp_path / "p.toml"
    plan.write_text(PLAN)
    out = {k: tmp_path / f"r.{k}" for k in ("json", "html", "xml")}
    code, stdout, err = _cli("run", str(rack), "--plan", str(plan), "--db", str(tmp_path / "r.db"),
                             "--json", str(out["json"]), "--html", str(out["html"]), "--junit", str(out["xml"]))
    assert code == 1, err
    doc = json.loads(out["json"].read_text())
    (f,) = [f for f in doc["cards"][0]["findings"] if f["code"] == "host.busy"]
    assert "[bold]evil\\x1b]0;PWNED\\x07" in f["message"]
    sizes = {k: p.stat().st_size for k, p in out.items()}
    assert all(n < 60_000 for n in sizes.values()), sizes
    ET.parse(out["xml"])
    _no_raw_controls(stdout)
    _no_raw_controls(err)


# 5 ---------------------------------------------------------------------------------------------

def test_metrics_on_every_interface_warns_and_ipv6_prints_in_brackets():
    assert metrics_url("::", 9403) == "http://[::]:9403/metrics"
    assert metrics_url("0.0.0.0", 9403) == "http://0.0.0.0:9403/metrics"
    assert parse_addr("[::]:9403") == ("::", 9403) and parse_addr(":::9403") == ("::", 9403)
    for host in ("0.0.0.0", "::", "192.0.2.7"):
        w = exposure_warning(host, 9403)
        assert w is not None and "without authentication" in w and "--metrics 9403" in w
    for host in ("127.0.0.1", "::1", "localhost"):
        assert exposure_warning(host, 9403) is None


def test_the_metrics_warning_reaches_the_user(capsys):
    pytest.importorskip("prometheus_client")
    from harness.cli import _serve_metrics
    from harness.plans import load_plan

    with _serve_metrics("0.0.0.0:0", [], load_plan("quick")):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("burnin: metrics on http://0.0.0.0:") and len(lines) == 2
    assert lines[1].startswith("burnin: warning: --metrics serves") and "every network interface" in lines[1]


def test_ray_interface_resolves_to_its_address_or_names_the_field(tmp_path):
    import psutil

    from harness.config import load_rack

    lo = next((n for n, addrs in psutil.net_if_addrs().items()
               if any(a.address == "127.0.0.1" for a in addrs)), None)
    if lo is None:
        pytest.skip("no loopback interface with 127.0.0.1 here")
    p = tmp_path / "r.toml"
    p.write_text(rack_toml([mock_card("A", 0)], extra_rack=f'engine = "ray"\nray_interface = "{lo}"'))
    assert load_rack(p).ray_node_ip() == "127.0.0.1"
    p.write_text(rack_toml([mock_card("A", 0)], extra_rack='engine = "ray"\nray_interface = "nosuch9"'))
    from harness.errors import UsageError

    with pytest.raises(UsageError) as e:
        load_rack(p).ray_node_ip()
    assert str(p) in str(e.value) and "rack.ray_interface" in str(e.value) and lo in str(e.value)


def test_connect_passes_the_interface_address_to_ray(monkeypatch):
    from harness.engines import ray_engine

    calls: list[dict[str, Any]] = []

    class FakeRay:
        @staticmethod
        def is_initialized() -> bool:
            return False

        @staticmethod
        def init(**kw: Any) -> None:
            calls.append(kw)
    monkeypatch.setattr(ray_engine, "_import_ray", lambda: FakeRay)
    ray_engine.connect("auto", "10.1.2.3")
    ray_engine.connect("auto")
    assert calls[0]["_node_ip_address"] == "10.1.2.3" and "_node_ip_address" not in calls[1]


def test_readme_says_configs_plans_and_ray_are_code():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Security", 1)[1].split("\n## ", 1)[0]
    for needle in ("run code", "pkg.mod:Class", "npu_smi", "ray_interface", "firewall", "--metrics",
                   "BURNIN_LOCK_DIR"):
        assert needle in section, needle
