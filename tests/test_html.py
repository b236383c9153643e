"""The HTML report: one well-formed, self-contained file that names every card, verdict and
finding, plots the samples the store holds, and escapes everything that came from outside."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from harness.views.html import PLOT_MAX_POINTS, telemetry_svg, to_html
from tests.conftest import mock_card

SVG = "{http://www.w3.org/2000/svg}"
PLAN = '[[stages]]\nstage = "health"\nobserve_s = 5\n[[stages]]\nstage = "health"\nfinal = true\nobserve_s = 0\n'


class _Balance(HTMLParser):
    """Checks what a browser's parser sees: every opened element closed, in order."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k in ("src", "href") and v and not v.startswith("#"):
                self.external.append(v)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _check_well_formed(text: str) -> ET.Element:
    p = _Balance()
    p.feed(text)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert not p.external, p.external  # self-contained: no external assets
    assert "<script" not in text.lower()
    return ET.fromstring(text)  # and strict XML too


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[str, dict]:
    import json

    from click.testing import CliRunner

    from harness.cli import main
    from tests.conftest import rack_toml

    d = tmp_path_factory.mktemp("html")
    (d / "rack.toml").write_text(rack_toml([
        mock_card("HTML-0001", 0),
        mock_card("HTML-0002", 1, faults=[{"kind": "pcie.downtrained", "gen": 3, "width": 8}]),
        mock_card("HTML-0003", 2, profile="rtx4090-blower-48gb"),
    ]), encoding="utf-8")
    (d / "plan.toml").write_text(PLAN, encoding="utf-8")
    res = CliRunner().invoke(main, ["run", str(d / "rack.toml"), "--plan", str(d / "plan.toml"), "-q",
                                    "--db", str(d / "r.db"), "--json", str(d / "r.json"), "--html", str(d / "r.html")])
    assert res.exit_code == 1, res.output
    return (d / "r.html").read_text(encoding="utf-8"), json.loads((d / "r.json").read_text(encoding="utf-8"))


def test_report_after_a_run_names_everything(report):
    text, doc = report
    root = _check_well_formed(text)
    for card in doc["cards"]:
        assert card["serial"] in text
        for f in card["findings"]:
            assert f["code"] in text
    assert "pcie.link_degraded" in text and "reseat" in text
    badges = [el.text for el in root.iter("span") if "badge" in (el.get("class") or "")]
    # overview row + section heading for each card
    assert sorted(badges) == sorted(2 * [c["verdict"] for c in doc["cards"]])
    assert badges.count("repair") == 2 and badges.count("pass") == 4
    sections = [s for s in root.iter("section") if "card" in (s.get("class") or "")]
    assert len(sections) == 3
    tiles = {el.tail.strip(): el.text for el in root.iter("b") if el.tail and el.tail.strip() in
             ("cards", "pass", "repair", "rma", "retest")}
    assert tiles == {"cards": "3", "pass": "2", "repair": "1", "rma": "0", "retest": "0"}
    # each card has samples in the store, so each section carries a plot with both lines
    for s in sections:
        svg = s.find(f".//{SVG}svg")
        assert svg is not None
        assert len(svg.findall(f"{SVG}polyline")) == 2


def test_report_escapes_everything_from_outside():
    evil = "<script>alert('x')</script>"
    doc = {
        "schema": "burnin.result/1", "run_id": "r&1", "rack": "rack <1>", "plan": 'q"uick', "started_at": None,
        "finished_at": None,
        "cards": [{
            "host": "h<o>st", "slot": 0, "backend": "mock", "model": "m&m", "serial": "S<1>", "verdict": "rma",
            "actions": ["rma"], "state": "lost",
            "findings": [{"code": "memory.stuck_bit", "severity": "fail", "action": "rma", "test": "memory",
                          "message": evil, "location": {"address": 0x2A5F31, "bit": 5},
                          "evidence": {"note": evil, "rows": list(range(200))}}],
            "tests": [{"name": "memory", "status": "error", "duration_s": 1.0, "error": evil,
                       "metrics": {"k<": "v>", "traceback": evil}}],
        }],
    }
    text = to_html(doc)
    _check_well_formed(text)
    assert evil not in text and "&lt;script&gt;" in text
    assert "S&lt;1&gt;" in text and "m&amp;m" in text and "rack &lt;1&gt;" in text
    assert "address=0x2A5F31" in text  # addresses read as addresses
    assert "<svg" not in text  # no telemetry in the document: no plot, and no error


def test_empty_document_renders():
    text = to_html({"run_id": "x", "rack": "r", "plan": "p", "cards": []})
    _check_well_formed(text)
    assert "No cards" in text


def test_report_verb_renders_from_the_saved_document_alone(report, tmp_path):
    """`burnin report` after the database is gone: the same cards, verdicts and plots."""
    import json

    from click.testing import CliRunner

    from harness.cli import main

    text, doc = report
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(doc), encoding="utf-8")
    res = CliRunner().invoke(main, ["report", str(saved), "--html", str(tmp_path / "again.html"),
                                    "--junit", str(tmp_path / "again.xml")])
    assert res.exit_code == 0, res.output
    again = (tmp_path / "again.html").read_text(encoding="utf-8")
    root = _check_well_formed(again)
    sections = [s for s in root.iter("section") if "card" in (s.get("class") or "")]
    assert len(sections) == 3 and all(s.find(f".//{SVG}svg") is not None for s in sections)
    for card in doc["cards"]:
        assert card["serial"] in again and card["key"] in doc["telemetry"]
    junit = ET.fromstring((tmp_path / "again.xml").read_text(encoding="utf-8"))
    suites = [s.get("name") for s in junit.iter("testsuite")]
    assert sorted(suites) == sorted(f"{c['host']}/{c['slot']} {c['serial']}" for c in doc["cards"])


@pytest.mark.parametrize("content, says", [
    ("{not json", "not a JSON result document"),
    ('{"schema": "burnin.devices/1", "devices": []}', "schema: expected 'burnin.result/1'"),
    ('{"schema": "burnin.result/1", "cards": 3}', "cards: expected a list"),
])
def test_report_verb_refuses_a_bad_document_in_one_line(tmp_path, content, says):
    from click.testing import CliRunner

    from harness.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    res = CliRunner().invoke(main, ["report", str(bad), "--html", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and says in res.output and str(bad) in res.output
    assert "Traceback" not in res.output and not (tmp_path / "x.html").exists()


def test_plot_is_small_escaped_and_keeps_peaks():
    samples = [{"time_s": float(i), "temperature_c": 40.0 + (45.0 if i == 3001 else i / 500), "power_w": 300.0,
                "power_limit_w": 450.0, "tag": "<thermal> soak" if i > 100 else "health"} for i in range(5000)]
    svg = telemetry_svg(samples)
    el = ET.fromstring(svg)
    lines = el.findall(f"{SVG}polyline")
    assert len(lines) == 2
    for line in lines:
        assert len(line.get("points").split()) <= PLOT_MAX_POINTS + 1
    assert "&lt;thermal&gt;" in svg and "<thermal>" not in svg  # stage bands are labelled, escaped
    labels = [t.text or "" for t in el.iter(f"{SVG}text")]
    assert any("max 85.0" in t for t in labels)  # the one-sample spike survives decimation
    assert any("power limit 450" in t for t in labels)
    assert len(svg) < 40_000
    # a temperature axis that covers the data: the top tick is at least the peak
    temp_ticks = [float(t.text) for t in el.iter(f"{SVG}text") if t.get("fill") == "#d1242f" and re.fullmatch(r"[\d.]+", t.text or "")]
    assert max(temp_ticks) >= 85.0 and min(temp_ticks) <= 40.0


def test_plot_needs_two_points():
    assert telemetry_svg([{"time_s": 0.0, "temperature_c": 30.0}]) == ""
    assert telemetry_svg([{"time_s": 0.0, "inlet_c": 25.0}, {"time_s": 1.0, "inlet_c": 25.0}]) == ""
