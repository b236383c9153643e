"""The run as one event stream: every event type's JSON codec, the events file, and the result
document rebuilt from that file alone, equal to the one the run wrote."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.stream import EventLog, read_events, rebuild_document
from stress.events import (
    EVENT_SCHEMA,
    EVENT_TYPES,
    CardStarted,
    EventCodecError,
    FindingRaised,
    HostFinding,
    Identity,
    Outcome,
    Progress,
    RunFinished,
    RunResumed,
    RunStarted,
    Sample,
    StageStarted,
    TestDone,
    Verdict,
    event_from_json,
    to_json,
)
from stress.model import Finding, Measurement, TestResult

REPO = Path(__file__).resolve().parent.parent
F = Finding("memory.stuck_bit", "fail", "rma", "memory", "bit 3 of 0x1000 stuck at 1",
            {"address": 4096, "bit": 3, "chip": 2}, {"reads": [1, 1, 1]})
EXAMPLES = [
    ("local/0", Identity({"serial": "S1", "model": "H100", "uuid": None, "firmware": {"vbios": "96.00"}})),
    ("local/0", StageStarted(2, "memory", 1800.0)),
    ("local/0", Progress(0.25, "march c- pass 1")),
    ("local/0", Sample({"time_s": 12.5, "temperature_c": 61.0, "power_w": None, "fans_rpm": [1200, 0]}, "soak")),
    ("local/0", TestDone(TestResult("memory", "fail", 3.14159, {"coverage": 0.98, "passes": 2}, [F], None,
                                    [Measurement("bandwidth", 1.7e12, 1.5e12, "B/s", "min")]), 2)),
    ("local/0", TestDone(TestResult("burn", "error", 0.5, {}, [], "worker died"))),
    ("local/0", FindingRaised(F)),
    ("local/0", Outcome("timed_out", "burn", "ran past 60 s", F)),
    ("local/1", Outcome("done")),
    ("", RunStarted("20261204T000000Z-abc123", "bench-1", "quick", "2026-12-04T00:00:00Z",
                    [{"key": "local/0", "host": "local", "slot": 0, "backend": "mock",
                      "locator": {"serial": "S1", "profile": "h100-sxm5-80gb"}}], "/r.toml", "/p.toml")),
    ("", RunResumed("20261204T000000Z-abc123", "2026-12-04T01:00:00Z", ["local/0"])),
    ("local/0", CardStarted("2026-12-04T00:00:01Z")),
    ("local/0", Verdict("rma", ["rma"], [F], "2026-12-04T00:03:00Z", "")),
    ("", HostFinding("hgx1", Finding("link.baseboard", "fail", "repair_baseboard", "interconnect",
                                     "slot 2 link 4 of host hgx1: link.down with two cards", {"slot": 2, "link": 4},
                                     {"cards": ["A", "B"]}))),
    ("local/1", Verdict("retest", ["reset_and_retest"], [], "2026-12-04T00:03:00Z", "incomplete: Ctrl-C",
                        ["memory", "burn"])),
    ("", RunFinished("2026-12-04T00:04:00Z", "interrupted")),
]


def test_every_event_type_has_an_example_here():
    assert {type(e) for _, e in EXAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize(("key", "event"), EXAMPLES, ids=[f"{type(e).__name__}-{i}" for i, (_, e) in enumerate(EXAMPLES)])
def test_json_round_trip_gives_the_same_event(key, event):
    obj = json.loads(json.dumps(to_json(key, event)))
    assert obj["v"] == EVENT_SCHEMA and obj["type"] == event.kind and obj["key"] == key
    assert event_from_json(obj) == (key, event)


@pytest.mark.parametrize(("obj", "why"), [
    ({"v": EVENT_SCHEMA + 1, "type": "progress", "key": "k", "fraction": 0.5}, "schema version"),
    ({"v": 1, "type": "teleport", "key": "k"}, "unknown event type"),
    ({"v": 1, "type": "progress", "fraction": 0.5}, "key"),
    ({"v": 1, "type": "progress", "key": "k", "fraction": 0.5, "colour": "red"}, None),  # unknown fields: ignored
    ({"v": 1, "type": "stage_start", "key": "k"}, "stage_start"),  # required fields missing
    ({"v": 1, "type": "test", "key": "k", "result": {"name": "x"}}, "test"),
    ({"v": 1, "type": "verdict", "key": "k", "verdict": "rma", "actions": [],
      "findings": [{"code": "x", "severity": "fatal", "action": "rma", "test": "t", "message": "m"}]}, "severity"),
    ([1, 2], "object"),
])
def test_a_bad_event_is_one_clear_error(obj, why):
    if why is None:
        assert event_from_json(obj)[1] == Progress(0.5)
        return
    with pytest.raises(EventCodecError, match=why):
        event_from_json(obj)


def test_the_events_file_is_flushed_per_event_and_read_back(tmp_path):
    path = tmp_path / "e.jsonl"
    log = EventLog(path)
    for key, ev in EXAMPLES[:3]:
        log.handle(key, ev)
        # readable at once, while the file is still open: a tool tailing it sees each event
        assert len(path.read_text().splitlines()) == EXAMPLES.index((key, ev)) + 1
    log.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert all(x["at"].endswith("Z") for x in lines)
    assert list(read_events(path)) == EXAMPLES[:3]


def test_a_line_cut_short_at_the_end_is_skipped_one_in_the_middle_is_an_error(tmp_path):
    good = [json.dumps(to_json(k, e)) for k, e in EXAMPLES[:2]]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(good) + '\n{"v": 1, "type": "pro')
    assert len(list(read_events(cut))) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good[0] + "\nnot json\n" + good[1] + "\n")
    with pytest.raises(UsageError, match=r"bad.jsonl:2: not a JSON event"):
        list(read_events(bad))
    with pytest.raises(UsageError, match="no run_start event"):
        rebuild_document(cut)
    with pytest.raises(UsageError, match="cannot read the events file"):
        rebuild_document(tmp_path / "absent.jsonl")


@pytest.mark.parametrize("rack", ["bench-mock.toml", "ascend-sim.toml", "nvml-replay.toml", "ascend-replay.toml",
                                  "ascend-sim-catalogue.toml"])
def test_the_document_rebuilt_from_the_events_equals_the_runs_own(burnin, tmp_path, rack):
    """Every example rack, its health watch only (bench-mock's whole quick plan runs in
    test_results_db, which checks the same equality)."""
    (tmp_path / "p.toml").write_text('[[stages]]\nstage = "health"\nobserve_s = 0\n')
    code, out, err = burnin("run", str(REPO / "rack_configs" / rack), "-q", "--db", "r.db", "--plan", "p.toml",
                            "--json", "run.json", "--events", "run.events")
    assert code in (0, 1), err
    code, out, err = burnin("report", "--events", "run.events", "--json", "rebuilt.json")
    assert code == 0, err
    run, rebuilt = (json.loads(Path(p).read_text()) for p in ("run.json", "rebuilt.json"))
    assert rebuilt == run
    assert rebuilt["cards"] and all(c["verdict"] for c in rebuilt["cards"])
    kinds = [json.loads(x)["type"] for x in Path("run.events").read_text().splitlines()]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert kinds.count("verdict") == len(run["cards"])


def test_report_wants_a_document_or_an_events_file(burnin, tmp_path):
    code, out, err = burnin("report")
    assert code == 2 and "one of the two" in err


RUN_WRITES = {"create_run", "add_card", "card_started", "card_identity", "add_test", "add_finding", "add_samples",
              "card_outcome", "card_verdict", "reset_card", "mark_run", "finish_run", "add_host_finding",
              "reset_hosts"}


def test_only_the_store_writer_writes_a_run():
    """The store is a subscriber of the stream: no other module calls its run-writing methods."""
    offenders = []
    for path in sorted((REPO / "harness").rglob("*.py")):
        if path.name == "store.py" or path.parent.name == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in RUN_WRITES and isinstance(node.ctx, ast.Load):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
    assert offenders == []


def test_no_module_compares_a_backend_name_with_mock():
    """The harness asks a backend whether it simulates its cards (Backend.simulated)."""
    hits = []
    for root in ("harness", "stress", "drivers"):
        for path in sorted((REPO / root).rglob("*.py")):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if '== "mock"' in line or '!= "mock"' in line:
                    hits.append(f"{path.relative_to(REPO)}:{n}")
    assert hits == []


def test_engines_come_from_a_registry(burnin, tmp_path):
    from harness.engine import LocalEngine
    from harness.engines import engine_kind, engine_names

    assert {"local", "ray"} <= set(engine_names())
    assert engine_kind("local").name == "local"
    rack = tmp_path / "r.toml"
    rack.write_text('[rack]\nname = "x"\nengine = "warp"\n\n[[hosts]]\nname = "local"\n\n[[hosts.devices]]\n'
                    'backend = "mock"\nprofile = "h100-sxm5-80gb"\nserial = "E1"\n')
    code, out, err = burnin("validate", str(rack))
    assert code == 2 and "unknown engine 'warp'" in err and "local" in err
    from harness.config import load_rack
    from harness.discovery import discover_cards
    from harness.engines import make_engine

    rack.write_text(rack.read_text().replace('engine = "warp"', 'engine = "local"'))
    cfg = load_rack(str(rack))
    engine = make_engine(cfg, discover_cards(cfg))
    assert isinstance(engine, LocalEngine)
    engine.close()
