"""JUnit XML from a result document: one testsuite per card, one testcase per test, so CI
systems show each card's failures with the findings as the failure text. Every string goes
through ``harness.views.safe.xml``, so the file is well-formed whatever a device reported."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from harness.views.safe import xml


def case_names(tests: list[dict[str, Any]]) -> list[str]:
    """Unique test case names: a stage that runs again is told apart (``health (final)`` for the
    final health check, else ``name #2``), since CI systems merge cases of the same name."""
    out: list[str] = []
    for t in tests:
        base = str(t["name"])
        if base in out and (t.get("metrics") or {}).get("final"):
            base = f"{base} (final)"
        name, n = base, 2
        while name in out:
            name, n = f"{base} #{n}", n + 1
        out.append(name)
    return out


def _clean(root: ET.Element) -> ET.Element:
    """Every attribute and text of the tree through ``safe.xml``: a control character in a rack
    name, a process name or a message would make the file ill-formed, and a CI server then drops
    the whole report."""
    for el in root.iter():
        for k, v in el.attrib.items():
            el.set(k, xml(v))
        if el.text:
            el.text = "\n".join(xml(part) for part in el.text.split("\n"))
    return root


def to_junit(doc: dict[str, Any]) -> str:
    suites = ET.Element("testsuites", name=f"burnin {doc['plan']} {doc['rack']}")
    for card in doc["cards"]:
        name = f"{card['host']}/{card['slot']} {card.get('serial')}"
        tests = card["tests"]
        failures = sum(t["status"] == "fail" for t in tests)
        errors = sum(t["status"] == "error" for t in tests)
        skipped = sum(t["status"] == "skipped" for t in tests)
        suite = ET.SubElement(suites, "testsuite", name=name, tests=str(len(tests)), failures=str(failures),
                              errors=str(errors), skipped=str(skipped),
                              time=f"{sum(t.get('duration_s') or 0 for t in tests):.3f}")
        props = ET.SubElement(suite, "properties")
        for k in ("serial", "model", "backend", "verdict"):
            ET.SubElement(props, "property", name=k, value=str(card.get(k)))
        ET.SubElement(props, "property", name="actions", value=",".join(map(str, card["actions"])))
        for t, case_name in zip(tests, case_names(tests), strict=True):
            case = ET.SubElement(suite, "testcase", classname=name, name=case_name, time=f"{t.get('duration_s') or 0:.3f}")
            mine = [f for f in card["findings"] if f["test"] == t["name"] and f["severity"] == "fail"]
            # one line per finding: a newline inside a message must not forge another
            text = "\n".join(xml(f"{f['code']} [{f['action']}]: {f['message']}") for f in mine)
            if t["status"] == "fail":
                ET.SubElement(case, "failure", message=str(mine[0]["code"]) if mine else "fail").text = text
            elif t["status"] == "error":
                ET.SubElement(case, "error", message=str(t.get("error", "error"))).text = text or xml(t.get("error"))
            elif t["status"] == "skipped":
                ET.SubElement(case, "skipped", message=str(t.get("error") or "skipped"))
    ET.indent(_clean(suites))
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
