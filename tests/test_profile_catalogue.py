"""Every card a repair shop sees: a profile per SKU matched by the name the card prints (memory
and fans telling boards of one name apart), a derived profile for the rest, the profile named in
every result, and NVIDIA's XID catalogue as data with one bucket -> action mapping."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from drivers.api import DeviceEvent
from drivers.derived import derive_profile, resolve_profile
from drivers.profiles import available_profiles, load_profile, profile_for_model
from drivers.xid import nvidia_catalog, xid_rule
from stress.health import event_findings
from stress.model import Finding, soften

ROOT = Path(__file__).resolve().parent.parent

# (name nvmlDeviceGetName / npu-smi prints, memory MiB, fans) -> profile
SKUS = {
    ("NVIDIA A100-SXM4-40GB", 40960, 0): "a100-sxm4-40gb",
    ("NVIDIA A100-SXM4-80GB", 81920, 0): "a100-sxm4-80gb",
    ("NVIDIA A100-PCIE-40GB", 40536, 0): "a100-pcie-40gb",
    ("NVIDIA A100 80GB PCIe", 81920, 0): "a100-pcie-80gb",
    ("NVIDIA A800-SXM4-80GB", 81920, 0): "a800-sxm4-80gb",
    ("NVIDIA H100 80GB HBM3", 81559, 0): "h100-sxm5-80gb",
    ("NVIDIA H100 PCIe", 81559, 0): "h100-pcie-80gb",
    ("NVIDIA H100 NVL", 95830, 0): "h100-nvl-94gb",
    ("NVIDIA H800", 81559, 0): "h800-sxm5-80gb",
    ("NVIDIA H20", 97871, 0): "h20-96gb",
    ("NVIDIA H200", 143771, 0): "h200-sxm5-141gb",
    ("NVIDIA L40S", 46068, 0): "l40s-48gb",
    ("NVIDIA L20", 46068, 0): "l20-48gb",
    ("NVIDIA GeForce RTX 3090", 24576, 2): "rtx3090-24gb",
    ("NVIDIA GeForce RTX 4090", 24564, 2): "rtx4090-24gb",
    ("NVIDIA GeForce RTX 4090", 49140, 1): "rtx4090-blower-48gb",
    ("NVIDIA GeForce RTX 4090 D", 24564, 2): "rtx4090d-24gb",
    ("NVIDIA GeForce RTX 5090", 32607, 2): "rtx5090-32gb",
    ("Tesla V100-SXM2-32GB", 32510, 0): "v100-sxm2-32gb",
    ("910B1", 65536, 0): "ascend-910b1",
    ("Ascend 910B2", 65536, 0): "ascend-910b2",
    ("910B3", 65536, 0): "ascend-910b",
    ("910B4", 32768, 0): "ascend-910b4",
    ("310P3", 21527, 0): "ascend-310p",
}


@pytest.mark.parametrize("name, mib, fans", list(SKUS), ids=lambda x: str(x))
def test_each_sku_matches_its_profile_by_the_name_it_prints(name: str, mib: int, fans: int) -> None:
    p = profile_for_model(name, mib, fans)
    assert p is not None and p.name == SKUS[(name, mib, fans)]
    assert p.sources and not p.derived


def test_every_profile_file_loads_with_figures_and_sources() -> None:
    names = available_profiles()
    assert set(SKUS.values()) <= set(names)
    for n in names:
        p = load_profile(n)
        assert p.match and len(p.sources) >= 3, n
        assert p.thermal.theta_min < p.thermal.theta_max < p.thermal.theta_fail, n
        assert p.power.min_limit <= p.power.tdp and p.clocks.min < p.clocks.max, n


def test_one_name_several_boards_memory_and_fans_decide() -> None:
    assert profile_for_model("NVIDIA GeForce RTX 4090", 24564).name == "rtx4090-24gb"
    assert profile_for_model("NVIDIA GeForce RTX 4090", 49140).name == "rtx4090-blower-48gb"
    assert profile_for_model("NVIDIA GeForce RTX 4090", None, 1).name == "rtx4090-blower-48gb"
    assert profile_for_model("nvidia geforce rtx 4090", 24564, 3).name == "rtx4090-24gb"  # a 3-fan partner board
    assert profile_for_model("NVIDIA GeForce RTX 4090 D", 49140) is None  # a 48 GB 4090 D mod: no file, derived
    assert profile_for_model("310P3", 44000) is None  # one chip of an Atlas 300I Duo: derived
    assert profile_for_model("NVIDIA H200 NVL", 143771) is None  # another board, not the SXM part
    assert profile_for_model("Matrox G200") is None


RTX6000 = {"vendor": "nvidia", "model": "NVIDIA RTX 6000 Ada Generation", "memory_total_mib": 49140,
           "power_limit_w": 300.0, "power_default_w": None, "power_min_w": None, "clock_max_mhz": 3105,
           "pcie_max_gen": 4, "pcie_max_width": 16, "fans": 1, "ecc": False,
           "temp_shutdown_c": None, "temp_slowdown_c": None, "temp_max_operating_c": None}


def test_derived_profile_takes_what_the_card_reports_and_lists_the_rest() -> None:
    p = derive_profile(RTX6000)
    assert p.derived and p.name == "derived-nvidia-rtx-6000-ada-generation"
    assert (p.power.tdp, p.memory.total, p.pcie.gen, p.pcie.replays_per_min_max, p.cooling.fans) == (300, 49140, 4, 16, 1)
    assert p.memory.kind == "gddr" and p.clocks.max == 3105 and not p.ecc.supported
    assert {"thermal.theta", "compute.target", "cooling.fan_curve", "thermal.limits"} <= set(p.assumed)
    assert "power.tdp" not in p.assumed and "pcie.gen" not in p.assumed
    bare = derive_profile({"model": "Mystery"})  # nothing reported: every default, all listed
    assert {"power.tdp", "pcie.gen", "clocks.max", "memory.total"} <= set(bare.assumed)
    assert derive_profile(dict(RTX6000)) is p  # same facts, same profile (the orchestrator rebuilds it)
    ident = {"model": RTX6000["model"], "profile": p.name, "profile_source": "derived", "facts": RTX6000}
    assert resolve_profile(ident) == (p, "derived")
    assert resolve_profile({"profile": "h100-sxm5-80gb"}, {"backend": "mock"})[1] == "config"
    assert resolve_profile({"profile": "h100-sxm5-80gb", "profile_source": "matched"})[1] == "matched"


def test_findings_on_assumed_figures_are_warnings_the_rest_keep_their_severity() -> None:
    p = derive_profile(RTX6000)
    found = [
        Finding("thermal.high_resistance", "fail", "repaste", "thermal", "theta 0.3 C/W"),
        Finding("fan.weak", "fail", "replace_fan", "fans", "fan 0 at 600 RPM"),
        Finding("fan.stalled", "fail", "replace_fan", "fans", "fan 0 at 0 RPM"),
        Finding("compute.slow", "fail", "rma", "burn", "below target"),
        Finding("compute.slow", "fail", "rma", "burn", "behind a peer", evidence={"best_card": "local/1"}),
        Finding("power.low", "fail", "check_power", "power", "180 W of 300 W"),  # TDP reported: stays
        Finding("memory.stuck_bit", "fail", "replace_memory", "memory", "bit 3 stuck"),
    ]
    out = {(f.code, f.message.split(" [")[0]): f for f in soften(found, p.assumed)}
    for code, msg in (("thermal.high_resistance", "theta 0.3 C/W"), ("fan.weak", "fan 0 at 600 RPM"),
                      ("compute.slow", "below target")):
        f = out[(code, msg)]
        assert (f.severity, f.action) == ("warn", "none") and "derived profile" in f.message
        assert f.evidence["would_be"]["severity"] == "fail" and f.evidence["assumed_figures"]
    for code, msg in (("fan.stalled", "fan 0 at 0 RPM"), ("compute.slow", "behind a peer"),
                      ("power.low", "180 W of 300 W"), ("memory.stuck_bit", "bit 3 stuck")):
        assert out[(code, msg)].severity == "fail"
    assert soften(found, load_profile("h100-sxm5-80gb").assumed) == found  # a profile file: nothing assumed


# -- NVIDIA's XID catalogue -------------------------------------------------------------------------
def test_catalogue_covers_every_xid_nvidia_lists() -> None:
    cat = nvidia_catalog()
    assert set(range(1, 173)) <= set(cat)
    assert all(e.mnemonic for e in cat.values())


@pytest.mark.parametrize("code, mnemonic, bucket, severity, action", [
    (122, "SPI_PMU_RPC_READ_FAIL", "CONTACT_SUPPORT", "fail", "reset_and_retest"),
    (136, "ALI_TRAINING_FAIL", "RESET_GPU", "fail", "reset_and_retest"),
    (140, "UNRECOVERABLE_ECC_ERROR_ESCAPE", "RESET_GPU", "fail", "reset_and_retest"),
    (143, "GPU_INIT_ERROR", "RESET_GPU", "fail", "reset_and_retest"),
    (154, "GPU_RECOVERY_ACTION_CHANGED", "XID_154", "info", "none"),
    (13, "ROBUST_CHANNEL_GR_EXCEPTION / ROBUST_CHANNEL_GR_ERROR_SW_NOTIFY", "RESTART_APP", "warn", "none"),
    (43, "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "IGNORE", "info", "none"),
])
def test_xid_gets_nvidias_meaning_and_a_bucket_action(code: int, mnemonic: str, bucket: str, severity: str,
                                                      action: str) -> None:
    rule = xid_rule(code)
    assert rule.entry is not None and (rule.entry.mnemonic, rule.entry.immediate) == (mnemonic, bucket)
    assert (rule.severity, rule.action, rule.finding) == (severity, action, f"xid.{code}")
    (f,) = event_findings([DeviceEvent(1.0, "xid", code, f"XID {code}")])
    assert (f.code, f.severity, f.action) == (f"xid.{code}", severity, action)
    assert mnemonic in f.message and f.evidence["nvidia_bucket"] == bucket


@pytest.mark.parametrize("code", [74, 144, 145, 146, 147, 148, 149, 150])
def test_nvlink_xids_are_link_faults_with_the_links_owners(code: int) -> None:
    """NVLink/NVSwitch XIDs (../shared/reference/interconnect.md section 6) are a link fault of the
    card in its slot: reseat first, then the history rules of harness/link_history.py."""
    rule = xid_rule(code)
    assert (rule.severity, rule.action, rule.finding) == ("fail", "reseat", "link.nvlink_error")
    assert rule.entry is not None and rule.entry.mnemonic.startswith("NVLINK")
    (f,) = event_findings([DeviceEvent(1.0, "xid", code, f"XID {code}")])
    assert (f.code, f.action) == ("link.nvlink_error", "reseat") and rule.entry.mnemonic in f.message


def test_app_buckets_never_fail_a_card_and_unknown_xids_keep_reset_and_retest() -> None:
    for code, e in nvidia_catalog().items():
        if e.immediate in ("RESTART_APP", "IGNORE"):
            rule = xid_rule(code)
            assert rule.severity != "fail" or rule.finding != f"xid.{code}", code  # only bench overrides fail
    unknown = xid_rule(31337)
    assert (unknown.entry, unknown.severity, unknown.action) == (None, "fail", "reset_and_retest")
    assert "not in NVIDIA" in unknown.meaning


# -- replayed recordings of every NVIDIA SKU through `burnin run` -----------------------------------
PLAN = '[[stages]]\nstage = "health"\nobserve_s = 0\n'
TEMPLATES = {"fan": "rtx4090-synthetic.json", "passive": "h100-sxm5-synthetic.json"}


def _snapshot(name: str, mib: int, watts: float, gen: int, fans: int, ecc: bool, serial: str) -> dict[str, Any]:
    """A ``burnin.nvml-snapshot/1`` recording of one idle card with this name, memory, power
    limit, PCIe generation and fans (the synthetic H100 or RTX 4090 recording, re-figured)."""
    snap = json.loads((ROOT / "fixtures" / "nvml" / TEMPLATES["fan" if fans else "passive"]).read_text())
    calls = snap["devices"][0]["calls"]
    total = mib << 20
    calls.update({
        "nvmlDeviceGetName": name, "nvmlDeviceGetUUID": f"GPU-{serial}", "nvmlDeviceGetSerial": serial,
        "nvmlDeviceGetMemoryInfo": {"free": total - (400 << 20), "total": total, "used": 400 << 20},
        "nvmlDeviceGetEnforcedPowerLimit": int(watts * 1000), "nvmlDeviceGetPowerUsage": int(watts * 80),
        "nvmlDeviceGetPowerManagementLimit": int(watts * 1000),
        "nvmlDeviceGetPowerManagementDefaultLimit": int(watts * 1000),
        "nvmlDeviceGetMaxPcieLinkGeneration": gen, "nvmlDeviceGetCurrPcieLinkGeneration": gen,
        "nvmlDeviceGetNumFans": fans,
    })
    if fans:
        for fan in range(fans):
            calls[f"nvmlDeviceGetFanSpeed_v2:{fan}"] = 30
    if not ecc:
        calls["nvmlDeviceGetEccMode"] = {"error": "NVML_ERROR_NOT_SUPPORTED"}
    snap["note"] = f"SYNTHETIC: {name} re-figured from {TEMPLATES['fan' if fans else 'passive']}"
    return copy.deepcopy(snap)


def test_recorded_cards_of_every_sku_and_an_unknown_model_run_with_their_profiles(tmp_path: Path, burnin) -> None:
    cards: list[tuple[str, str, str]] = []  # (serial, expected profile, source)
    lines = ['[rack]', 'name = "skus"', '[[hosts]]', 'name = "local"']
    nvidia = [(k, v) for k, v in SKUS.items() if not k[0][0].isdigit()]
    todo = [(name, mib, fans, load_profile(prof)) for (name, mib, fans), prof in nvidia]
    for slot, (name, mib, fans, prof) in enumerate(todo):
        serial = f"SKU{slot:03d}"
        snap = _snapshot(name, mib, prof.power.tdp, prof.pcie.gen, fans, prof.ecc.supported, serial)
        (tmp_path / f"{serial}.json").write_text(json.dumps(snap))
        lines += ['[[hosts.devices]]', 'backend = "nvml"', f'replay = "{serial}.json"', f"slot = {slot}"]
        cards.append((serial, prof.name, "matched"))
    slot = len(todo)
    snap = _snapshot("NVIDIA RTX 6000 Ada Generation", 49140, 300.0, 4, 1, True, "ADA6000")
    (tmp_path / "ADA6000.json").write_text(json.dumps(snap))
    lines += ['[[hosts.devices]]', 'backend = "nvml"', 'replay = "ADA6000.json"', f"slot = {slot}"]
    cards.append(("ADA6000", "derived-nvidia-rtx-6000-ada-generation", "derived"))
    (tmp_path / "rack.toml").write_text("\n".join(lines) + "\n")
    (tmp_path / "plan.toml").write_text(PLAN)
    code, out, err = burnin("run", "rack.toml", "--plan", "plan.toml", "--json", "r.json", "--db", "r.db")
    assert code in (0, 1), out + err
    doc = json.loads((tmp_path / "r.json").read_text())
    by_serial = {c["serial"]: c for c in doc["cards"]}
    for serial, profile, source in cards:
        c = by_serial[serial]
        assert (c["profile"], c["profile_source"]) == (profile, source), c
        assert not any(f["code"] == "harness.no_profile" for f in c["findings"]), c["findings"]
        assert c["verdict"] == "pass", (serial, c["findings"])
        assert [t["name"] for t in c["tests"]] == ["health"]
    assert "(derived)" in out and "rtx4090-24gb" in out  # the verdict table names the profile
    code, out, _ = burnin("history", "ADA6000", "--db", "r.db", "--json")
    (entry,) = json.loads(out)
    assert (entry["profile"], entry["profile_source"]) == ("derived-nvidia-rtx-6000-ada-generation", "derived")


def test_a_derived_card_below_its_own_default_power_limit_is_capped(tmp_path: Path, burnin) -> None:
    """The default limit the card reports is the derived TDP: an enforced limit under it is a
    host cap (fix_host), judged without any profile file."""
    snap = _snapshot("NVIDIA RTX 6000 Ada Generation", 49140, 300.0, 4, 1, True, "ADA-CAPPED")
    snap["devices"][0]["calls"]["nvmlDeviceGetPowerManagementDefaultLimit"] = 450_000
    (tmp_path / "a.json").write_text(json.dumps(snap))
    (tmp_path / "rack.toml").write_text('[rack]\nname = "capped"\n[[hosts]]\nname = "local"\n'
                                        '[[hosts.devices]]\nbackend = "nvml"\nreplay = "a.json"\n')
    (tmp_path / "plan.toml").write_text(PLAN)
    code, out, err = burnin("run", "rack.toml", "--plan", "plan.toml", "--json", "r.json", "--db", "r.db")
    (card,) = json.loads((tmp_path / "r.json").read_text())["cards"]
    assert card["profile_source"] == "derived" and card["verdict"] == "retest", card["findings"]
    assert [f["action"] for f in card["findings"] if f["code"] == "power.capped"] == ["fix_host"]


def test_profiles_verb_lists_names_vendor_matches_memory_power(burnin) -> None:
    code, out, _ = burnin("profiles", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["profiles"]}
    assert set(rows) == set(available_profiles())
    assert rows["a100-pcie-80gb"]["matches"] == ["NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-80GB"]
    assert (rows["h200-sxm5-141gb"]["vendor"], rows["h200-sxm5-141gb"]["tdp_w"]) == ("nvidia", 700.0)
    code, out, _ = burnin("profiles")
    assert code == 0 and "rtx4090-blower-48gb" in out and "Tesla V100-SXM2-32GB" in out


def test_an_ascend_variant_without_a_profile_is_derived_from_what_npu_smi_prints(tmp_path: Path) -> None:
    from tests.test_ascend_backend import CAPTURE_SET, replay_npu

    d = tmp_path / "set"
    d.mkdir()
    for p in CAPTURE_SET.iterdir():  # the same server, its chips renamed to a variant nobody profiled
        (d / p.name).write_text(p.read_text().replace("910B1", "910B9"))
    dev = replay_npu(d, 3)
    ident = dev.identity()
    assert (ident.model, ident.profile, ident.profile_source) == ("910B9", "derived-910b9", "derived")
    assert ident.facts["memory_total_mib"] == 65536
    prof, source = resolve_profile(ident.to_dict())
    assert (prof.vendor, prof.memory.total, prof.cooling.kind, source) == ("huawei", 65536, "passive", "derived")
    assert dev.profile is prof  # the backend judges its own throttle reasons by the same profile
