"""The interconnect stage through the harness: a host job after the host's cards, host findings on
the event stream, in the store and in the document's ``hosts``; the config's board and host faults;
the CUDA peer path on the CuPy stand-in; NVLink through the NVML replay; HCCS on the npu-smi
simulator."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from drivers.api import DeviceLost, LinkReport, LinkState, PeerGroup, Unsupported
from harness.config import load_rack
from harness.errors import UsageError
from harness.records import stored_document
from harness.store import Store
from stress.hoststage import HostCard, HostContext
from stress.interconnect.stage import InterconnectParams, InterconnectStage
from stress.model import TestResult
from tests import fake_cupy, fake_pynvml
from tests.conftest import mock_card

REPO = Path(__file__).resolve().parent.parent
PLAN = '[[stages]]\nstage = "interconnect"\ncopy_mib = 256\nrepeats = 4\nload_s = 5\nallreduce_mib = 64\n'


def _rack(tmp_path: Path) -> Path:
    """Host hgx: three H100s, a card fault and a board fault; host ws: two 4090s and a lone H200."""
    def cards(host: str, devs: list[dict[str, Any]], faults: str = "") -> str:
        out = f'[[hosts]]\nname = "{host}"\n{faults}\n'
        for d in devs:
            out += "[[hosts.devices]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in d.items() if k != "faults")
            if d.get("faults"):
                out += "faults = [" + ", ".join("{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in f.items()) + " }"
                                                 for f in d["faults"]) + "]\n"
        return out
    text = '[rack]\nname = "ic"\n\n' + cards("hgx", [
        mock_card("H0", 0, memory_mib=1), mock_card("H1", 1, memory_mib=1, faults=[{"kind": "p2p.corrupt"}]),
        mock_card("H2", 2, memory_mib=1)], 'faults = [{ kind = "board.link", slot = 2, link = 5, state = "down" }]'
    ) + cards("ws", [mock_card("G0", 0, "rtx4090-blower-48gb", memory_mib=1),
                     mock_card("G1", 1, "rtx4090-blower-48gb", memory_mib=1),
                     mock_card("L0", 2, "h200-sxm5-141gb", memory_mib=1)])
    p = tmp_path / "rack.toml"
    p.write_text(text)
    (tmp_path / "ic.toml").write_text(PLAN)
    return p


def test_a_run_judges_cards_after_their_hosts_stage_and_keeps_the_hosts_findings(burnin, tmp_path) -> None:
    rack = _rack(tmp_path)
    code, out, err = burnin("run", str(rack), "--plan", "ic.toml", "--db", "r.db", "--json", "run.json",
                            "--events", "run.events")
    assert code == 1, err
    doc = json.loads(Path("run.json").read_text())
    by = {c["key"]: c for c in doc["cards"]}
    assert (by["hgx/1"]["verdict"], by["hgx/1"]["actions"]) == ("rma", ["rma"])
    assert by["hgx/1"]["findings"][0]["code"] == "p2p.corrupt"
    assert (by["hgx/2"]["verdict"], by["hgx/2"]["findings"][0]["location"]["link"]) == ("repair", 5)
    assert by["hgx/0"]["verdict"] == "pass"
    for key, why in (("ws/0", "no inter-chip links"), ("ws/1", "no inter-chip links"), ("ws/2", "one card")):
        [t] = by[key]["tests"]
        assert by[key]["verdict"] == "pass" and t["status"] == "skipped" and why in t["error"], key
    [t] = by["hgx/0"]["tests"]
    assert t["metrics"]["board"]["slots"] == [0, 1, 2] and len(t["metrics"]["board"]["gbps"]) == 3
    assert [h["name"] for h in doc["hosts"]] == ["hgx", "ws"] and all(not h["findings"] for h in doc["hosts"])
    # the events file rebuilds the same document; the verdict comes after the host stage's test
    code, _, err = burnin("report", "--events", "run.events", "--json", "rebuilt.json")
    assert code == 0 and json.loads(Path("rebuilt.json").read_text()) == doc, err
    kinds = [(e["key"], e["type"]) for e in map(json.loads, Path("run.events").read_text().splitlines())]
    mine = [k for key, k in kinds if key == "hgx/0"]
    assert mine.index("test") < mine.index("outcome") < mine.index("verdict")


def test_host_findings_travel_the_stream_into_the_store_and_every_view(burnin, tmp_path, write_rack) -> None:
    rack = write_rack([mock_card(f"F{i}", i, memory_mib=1) for i in range(3)],
                      host_extra='faults = [{ kind = "fabric.manager_down" }]')
    (tmp_path / "ic.toml").write_text(PLAN)
    code, out, err = burnin("run", str(rack), "--plan", "ic.toml", "--db", "r.db", "--json", "run.json",
                            "--events", "run.events", "--html", "r.html")
    assert code == 1, err
    doc = json.loads(Path("run.json").read_text())
    [host] = doc["hosts"]
    assert [(f["code"], f["action"]) for f in host["findings"]] == [("interconnect.fabric_manager", "fix_host")]
    assert all(c["verdict"] == "retest" and c["actions"] == ["fix_host"] for c in doc["cards"])
    assert "HOST" in out and "interconnect.fabric_manager" in out  # the table's line above the host's cards
    assert "interconnect.fabric_manager" in Path("r.html").read_text()
    kinds = [json.loads(x)["type"] for x in Path("run.events").read_text().splitlines()]
    assert kinds.count("host_finding") == 1
    assert burnin("report", "--events", "run.events", "--json", "re.json")[0] == 0
    assert json.loads(Path("re.json").read_text()) == doc
    store = Store("r.db", readonly=True)
    assert stored_document(store, doc["run_id"])["hosts"] == doc["hosts"]


@pytest.mark.parametrize(("devices", "host", "why"), [
    ([mock_card("G", 0, "rtx4090-blower-48gb", faults=[{"kind": "link.down", "link": 0}])], "",
     "faults[0] (link.down).kind: link.down: this card has no links"),
    ([mock_card("H", 0, faults=[{"kind": "link.degraded", "link": 18}])], "", "link 18 does not exist"),
    ([mock_card("G", 0, "rtx4090-blower-48gb")], 'faults = [{ kind = "host.p2p_blocked" }]',
     "(local).faults[0] (host.p2p_blocked).kind: host.p2p_blocked: the host has no board"),
    ([mock_card("H", 0), mock_card("G", 1, "rtx4090-blower-48gb")],
     'faults = [{ kind = "board.link", slot = 1, link = 0, state = "down" }]', "no card with links in slot 1"),
    ([mock_card("H", 0)], 'faults = [{ kind = "board.link", slot = 0, link = 3, state = "gone" }]', "state"),
    ([{"backend": "nvml"}], 'faults = [{ kind = "host.p2p_blocked" }]', "simulates no host faults"),
], ids=["card-kind-on-a-4090", "link-out-of-range", "host-kind-without-board", "board-slot-without-links",
        "bad-state", "real-backend"])
def test_link_faults_where_there_are_no_links_are_one_line_errors(write_rack, devices, host, why) -> None:
    with pytest.raises(UsageError) as e:
        load_rack(write_rack(devices, host_extra=host))
    assert why in str(e.value) and "\n" not in str(e.value)


# -- the CUDA path on the CuPy stand-in ---------------------------------------------------------

class _Card:
    """An NVIDIA card as the stage sees it: healthy NVLinks, peers through the CUDA path."""

    backend = "nvml"

    def __init__(self, where: dict[str, Any]) -> None:
        self.where = where

        class _Clock:
            def now(self) -> float:
                return 0.0
        self.clock = _Clock()

    def links(self) -> LinkReport:
        return LinkReport("nvlink", tuple(LinkState(k, True, 26.5, 4, "0000:80:00.0", "switch", {"replay": 0})
                                          for k in range(18)), "dl")

    def peer_group(self, devices: list[Any]) -> PeerGroup | None:
        from drivers.registry import make_handle

        return make_handle("cuda", "peer", {"devices": [d.where for d in devices]})  # type: ignore[no-any-return]

    def unavailable(self, handle: str) -> str | None:
        return None


def _cuda_board(n: int) -> list[HostCard]:
    from drivers.profiles import load_profile

    prof = load_profile("h200-sxm5-141gb")
    return [HostCard(f"h/{i}", i, f"N{i}", _Card({"index": i, "uuid": None, "pci_bus_id": f"0000:{0x18 + i:02x}:00.0"}),
                     prof) for i in range(n)]  # type: ignore[arg-type]


def test_the_cuda_peer_path_copies_verifies_and_reduces(monkeypatch) -> None:
    cuda = fake_cupy.install(monkeypatch, 3, total=1 << 28)
    cuda.corrupt_peer[(0, 2)] = cuda.corrupt_peer[(2, 0)] = cuda.corrupt_peer[(1, 2)] = cuda.corrupt_peer[(2, 1)] = 1
    p = InterconnectParams(copy_mib=1, repeats=2, load_s=0.01, allreduce_mib=1, allreduce_repeats=1)
    res = InterconnectStage().run_host(HostContext("h", _cuda_board(3), p))
    board = res.tests["h/0"].metrics["board"]
    assert board["paths"][0][1] == "p2p" and board["gbps"][0][1] > 300
    assert board["bad_words"][0][2] == 2 and board["bad_words"][0][1] == 0  # two verified repeats, one word each
    assert [f.code for f in res.tests["h/2"].findings] == ["p2p.corrupt"] and not res.tests["h/0"].findings
    assert board["allreduce"]["library"] == "nccl" and board["allreduce"]["wrong"] == 0
    assert cuda.collectives and set(cuda.collectives[0]) == {0, 1, 2} and cuda.pending() == []
    assert {(a, b) for a in range(3) for b in range(3) if a != b} == cuda.peer_enabled


def test_the_cuda_path_without_peer_access_or_nccl(monkeypatch) -> None:
    cuda = fake_cupy.install(monkeypatch, 2, total=1 << 28, nccl=False)
    cuda.no_peer |= {(0, 1), (1, 0)}
    from drivers.registry import make_handle

    g = make_handle("cuda", "peer", {"devices": [c.device.where for c in _cuda_board(2)]})  # type: ignore[attr-defined]
    assert g.access(0, 1) is False and g.copy(0, 1, 1 << 20, 1).path == "host"
    with pytest.raises(Unsupported, match="NCCL"):
        g.all_reduce(1 << 20)
    res = InterconnectStage().run_host(HostContext("h", _cuda_board(2), InterconnectParams(load_s=0)))
    assert [f.code for f in res.host_findings] == ["interconnect.p2p_blocked"]


def test_one_gpu_alone_is_not_applicable(monkeypatch) -> None:
    fake_cupy.install(monkeypatch, 1, total=1 << 28)
    res = InterconnectStage().run_host(HostContext("h", _cuda_board(1), InterconnectParams()))
    assert res.tests["h/0"].status == "skipped" and res.tests["h/0"].error == "not applicable: one card"


# -- NVLink through NVML (the replay of a recording) ---------------------------------------------

def test_nvml_reads_each_link_and_not_supported_is_none(monkeypatch) -> None:
    from drivers.nvml import NvmlBackend, NvmlConfig

    snap = copy.deepcopy(fake_pynvml.read_snapshot("h100-sxm5-synthetic.json"))
    calls = snap["devices"][0]["calls"]
    calls["nvmlDeviceGetNvLinkState:7"] = 0
    calls["nvmlDeviceGetFieldValues:[164@3,161@3,162@3,163@3]"][1:] = [
        {**calls["nvmlDeviceGetFieldValues:[164@3,161@3,162@3,163@3]"][1], "nvmlReturn": 3}] * 3
    fake = fake_pynvml.install(monkeypatch, snap)
    backend = NvmlBackend()
    dev = backend.open(backend.discover(NvmlConfig(backend="nvml", index=0), {})[0])
    rep = dev.links()
    assert rep is not None and rep.kind == "nvlink" and rep.counter_family == "dl" and len(rep.links) == 18
    assert rep.links[7].up is False and rep.links[0].remote_kind == "switch" and rep.links[0].speed_gbps == 26.562
    assert rep.links[3].counters == {"replay": None, "recovery": None, "crc": None}
    assert rep.links[3].unreadable["replay"] == "not_supported" and rep.links[0].counters["replay"] == 0
    assert rep.fabric is not None and (rep.fabric.state, rep.fabric.status, rep.fabric.degraded) == (
        "completed", "success", False)
    fake.lose(0)
    with pytest.raises(DeviceLost):
        dev.links()


def test_a_4090_through_nvml_has_no_links(monkeypatch) -> None:
    from drivers.nvml import NvmlBackend, NvmlConfig

    fake_pynvml.install(monkeypatch, "rtx4090-synthetic.json")
    backend = NvmlBackend()
    rep = backend.open(backend.discover(NvmlConfig(backend="nvml", index=0), {})[0]).links()
    assert rep is not None and rep.links == () and rep.fabric is None


# -- HCCS and RoCE on the npu-smi simulator ------------------------------------------------------

def test_ascend_hccs_pair_lost_and_a_dark_roce_port(tmp_path) -> None:
    """On an Atlas 800T A2 HCCS is a full mesh: a link down at both ends (the topology matrix is
    symmetric) is the pair's; a RoCE port down with no light is the fabric's; no HCCL path, so never
    a pass."""
    from drivers.ascend import AscendDevice, NpuSmi
    from drivers.profiles import load_profile

    sim = REPO / "fixtures" / "ascend"
    state = tmp_path / "st.json"
    state.write_text(json.dumps({"cards": [{"npu_id": 0}, {"npu_id": 1, "faults": [{"kind": "link.down", "link": 1}]},
                                           {"npu_id": 2, "hccn": {"link": "DOWN", "rx_los": True, "rx_power_mw": 0.0}}]}))
    smi, hccn = NpuSmi([str(sim / "npu-smi"), "--state", str(state)]), NpuSmi(
        [str(sim / "hccn_tool"), "--state", str(state)], name="hccn_tool")
    prof = load_profile("ascend-910b")
    cards = [HostCard(f"local/{i}", i, f"N{i}", AscendDevice(smi, i, hccn=hccn), prof) for i in range(3)]
    res = InterconnectStage().run_host(HostContext("local", cards, InterconnectParams()))
    found = {(f.code, f.action, tuple(f.location.get("pair") or [f.location.get("slot")])) for f in res.host_findings}
    assert found == {("interconnect.pair", "repair_baseboard", (1, 2)), ("roce.link_down", "reseat", (2,))}
    assert {f.code for f in res.tests["local/1"].findings} == {"p2p.pair", "interconnect.not_tested"}
    for t in res.tests.values():
        assert t.status == "fail" and any(f.code == "interconnect.not_tested" and "HCCL" in f.message
                                          for f in t.findings)
    links = res.tests["local/0"].metrics["links"]
    assert links["kind"] == "hccs" and links["extra"]["topology"] == {"NPU 1": "HCCS", "NPU 2": "HCCS"}
    assert links["ports"][0]["up"] is True and res.tests["local/2"].metrics["links"]["ports"][0]["rx_los"] is True


# -- when a host's job runs (harness/host_jobs.py) ------------------------------------------------

def test_a_hosts_job_waits_for_its_last_card_and_a_dead_job_still_ends_every_card() -> None:
    from harness.cards import CardSlot
    from harness.host_jobs import HostJobs
    from stress.events import Outcome, TestDone

    cards = [CardSlot(f"h/{i}", "h", i, "mock", "", {"backend": "mock", "slot": i}) for i in range(3)]
    cards.append(CardSlot("x/0", "x", 0, "mock", "", {"backend": "mock", "slot": 0}))
    plan = [("health", {}), ("interconnect", {"timeout_s": 60.0}), ("power", {})]
    jobs = HostJobs(plan, cards)
    assert jobs.card_stages == [("health", {}), ("power", {})]
    assert jobs.host_stages == [(2, "interconnect", {"timeout_s": 60.0})]
    assert jobs.holds("h/0") and jobs.holds("x/0")
    assert jobs.card_ended("h/0", Outcome("done")) == (None, [])
    assert jobs.card_ended("h/1", Outcome("lost")) == (None, [])
    job, now = jobs.card_ended("h/2", Outcome("done"))
    assert job is not None and not now and [c["key"] for c in job.cards] == ["h/0", "h/2"] and job.others == ["h/1"]
    assert job.locator == {"host": "h", "backend": "mock"} and jobs.is_job(job.key)
    jobs.note("h/0", TestDone(TestResult("interconnect", "pass"), 2))
    out = jobs.job_ended(job.key, Outcome("failed", "interconnect", "worker process exited with code -9"))
    assert [(k, type(e).__name__) for k, e in out] == [("h/2", "TestDone"), ("h/0", "Outcome"), ("h/1", "Outcome"),
                                                       ("h/2", "Outcome")]
    assert out[0][1].result.findings[0].code == "harness.worker_crashed" and not jobs.holds("h/0")
    # a host whose every card was lost has no job: its outcomes go out at once
    assert jobs.card_ended("x/0", Outcome("lost")) == (None, [("x/0", Outcome("lost"))])
    assert not HostJobs([("health", {})], cards).holds("h/0")  # no host stage: nothing held
