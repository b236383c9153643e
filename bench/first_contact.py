"""First contact with real NVIDIA cards: one script for the day a GPU is at hand (not a test).

    python -m bench.first_contact [--out DIR] [--budget SECONDS]

On every visible NVIDIA card, within ``--budget`` (default 480 s: 8 minutes on a healthy H200):
``pytest -m gpu``, the memory scan against a device-to-device copy (bench/memscan.py), the
verified burn against the bare GEMM for fp16, bf16, fp32 and fp64 (bench/burn.py: same engine,
operands and buffers), ``python -m drivers.nvml_record``, and ``burnin run`` with ``quick`` on a
rack of the real cards. Writes ``DIR/first-contact.json`` with every figure and the verdicts, and
prints the goals: every ``-m gpu`` test green, scan >= 0.8 of the copy, verified burn >= 0.95 of
the bare GEMM in every datatype, and each healthy card ``pass`` with no fail or warn finding of
the harness's or the host's own (``harness.*``, ``host.*``): ``ALL MET`` or ``NOT ALL MET``.
Commit ``DIR/nvml/<model>-real.json`` as ``fixtures/nvml/<model>-real.json``. Exits 3 in one
line where there is no NVIDIA GPU or no CuPy.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCAN_GOAL, BURN_GOAL = 0.8, 0.95
BUDGET_S = 480.0  # the whole script on a healthy H200
STEP_S = {"pytest": 150, "record": 60}  # at most; quick gets what is left (it takes ~4-6 min)
DTYPES = ("fp16", "bf16", "fp32", "fp64")


def _gpus() -> list[dict[str, Any]]:
    """The visible NVIDIA cards (NVML), or SystemExit(3) in one line."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver: the same answer
        raise SystemExit("first_contact: no NVIDIA GPU here (NVML does not start)") from None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append({"nvml_index": i, "model": pynvml.nvmlDeviceGetName(h),
                        "uuid": pynvml.nvmlDeviceGetUUID(h), "pci_bus_id": pynvml.nvmlDeviceGetPciInfo(h).busId})
    finally:
        pynvml.nvmlShutdown()
    if not out:
        raise SystemExit("first_contact: no NVIDIA GPU here (NVML lists none)")
    return out


# Every CUDA measurement runs in a process of its own: this one never holds a CUDA context, which
# NVML would list on the card, and quick's preflight would rightly call another process on it.
def _json_lines(cmd: list[str], timeout: int) -> list[dict[str, Any]]:
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode not in (0, 1) or not lines:
        raise RuntimeError(f"{' '.join(cmd[1:])} exited {p.returncode}: {(p.stderr or p.stdout).strip()[-500:]}")
    return lines


def _cuda_device(gpu: dict[str, Any]) -> int:
    where = {"index": gpu["nvml_index"], "uuid": gpu["uuid"], "pci_bus_id": gpu["pci_bus_id"]}
    code = ("import json; from drivers.cuda.errors import find_device, import_cupy; "
            f"print(json.dumps({{'cuda_device': find_device(import_cupy(), {where!r})}}))")
    return int(_json_lines([sys.executable, "-c", code], 60)[-1]["cuda_device"])


def _memscan(device: int, mib: int = 4096) -> dict[str, Any]:
    return _json_lines([sys.executable, "-m", "bench.memscan", "--gpu", "--device", str(device), "--mib", str(mib),
                        "--json"], 120)[-1]


def _burn(device: int, dtype: str) -> dict[str, Any]:
    """Verified products against bare ones on the same engine (operands, buffers, stream)."""
    return _json_lines([sys.executable, "-m", "bench.burn", "--backend", "cuda", "--device", str(device),
                        "--dtype", dtype], 180)[-1]


def _step(report: dict[str, Any], name: str, fn: Any, *args: Any) -> Any:
    """Run one step; an exception is its figure (the script always reaches the end)."""
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as e:  # noqa: BLE001 - a step that fails is a figure too
        out = {"error": f"{type(e).__name__}: {e}", "ok": False}
    if isinstance(out, dict):
        out["seconds"] = round(time.perf_counter() - t0, 1)
    report.setdefault("steps", {})[name] = out
    print(f"  {name}: {json.dumps(out)}", flush=True)
    return out


def _run(cmd: list[str], timeout: int) -> dict[str, Any]:
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"cmd": " ".join(cmd), "error": f"timed out after {timeout} s", "ok": False}
    tail = (p.stdout + p.stderr).strip().splitlines()[-3:]
    return {"cmd": " ".join(cmd), "rc": p.returncode, "tail": tail, "ok": p.returncode == 0}


def _quick(out: Path, timeout: int) -> dict[str, Any]:
    rack = out / "rack.toml"
    rack.write_text('[rack]\nname = "first-contact"\nplan = "quick"\n\n[[hosts]]\nname = "local"\n\n'
                    '[[hosts.devices]]\nbackend = "nvml"\n')
    res = _run([sys.executable, "-m", "harness.cli", "run", str(rack), "--json", str(out / "quick.json"),
                "--db", str(out / "first-contact.db"), "-q"], timeout)
    doc = out / "quick.json"
    if doc.exists():
        cards = json.loads(doc.read_text())["cards"]
        res["cards"] = [quick_card(c) for c in cards]
        res["ok"] = bool(cards) and all(c["ok"] for c in res["cards"])
    return res


def quick_card(card: dict[str, Any]) -> dict[str, Any]:
    """A healthy card's quick: ``pass``, and no fail or warn finding that is the harness's or the host's."""
    own = [f["code"] for f in card["findings"] if f["severity"] in ("fail", "warn")
           and f["code"].startswith(("harness.", "host."))]
    fails = [f["code"] for f in card["findings"] if f["severity"] == "fail"]
    return {"serial": card.get("serial"), "model": card.get("model"), "verdict": card["verdict"],
            "fail_findings": fails, "harness_or_host_findings": own,
            "seconds": sum(t.get("duration_s") or 0 for t in card.get("tests", [])),
            "ok": card["verdict"] == "pass" and not fails and not own}


def _slug(model: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", model.lower().replace("nvidia", "")).strip("-")


def _pytest(timeout: int) -> dict[str, Any]:
    """``pytest -m gpu``: green means every GPU test passed, none skipped but those that need a
    second card where there is one."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rs"]
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"cmd": " ".join(cmd), "error": f"timed out after {timeout} s", "ok": False}
    lines = (p.stdout + p.stderr).strip().splitlines()
    skips = [ln for ln in lines if ln.startswith("SKIPPED")]
    failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    return {"cmd": " ".join(cmd), "rc": p.returncode, "tail": lines[-3:], "failed": failed, "skipped": skips,
            "ok": p.returncode == 0 and any(" passed" in ln for ln in lines[-1:])
            and all("needs two CUDA devices" in ln for ln in skips)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="first-contact", help="folder for the report (default ./first-contact)")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for everything (default 480)")
    args = ap.parse_args(argv)
    try:
        gpus = _gpus()
        from drivers.cuda.errors import import_cupy

        import_cupy()
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 3
    except Exception as e:  # noqa: BLE001 - BackendUnavailable (no CuPy): one line
        print(f"first_contact: {e}", file=sys.stderr)
        return 3
    out = Path(args.out)
    (out / "nvml").mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"gpus": gpus, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t0 = time.perf_counter()
    print(f"first contact with {len(gpus)} NVIDIA card(s): {', '.join(g['model'] for g in gpus)}", flush=True)
    _step(report, "pytest -m gpu", _pytest, STEP_S["pytest"])
    for g in gpus:
        tag = f"gpu{g['nvml_index']}"
        dev = _step(report, f"{tag} cuda device", lambda g=g: {"cuda_device": _cuda_device(g), "ok": True})
        if "cuda_device" not in dev:
            continue
        _step(report, f"{tag} memscan", _memscan, dev["cuda_device"])
        for dtype in DTYPES:
            _step(report, f"{tag} burn {dtype}", _burn, dev["cuda_device"], dtype)
    snap = out / "nvml" / "snapshot.json"
    rec = _step(report, "nvml_record", _run, [sys.executable, "-m", "drivers.nvml_record", str(snap)],
                STEP_S["record"])
    if rec.get("ok") and snap.exists():
        model = gpus[0]["model"]
        named = out / "nvml" / f"{_slug(model)}-real.json"
        named.write_text(snap.read_text())
        rec["fixture"] = f"commit {named} as fixtures/nvml/{named.name}"
    left = int(args.budget - (time.perf_counter() - t0)) - 5
    _step(report, "burnin run quick", _quick, out, max(1, left))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    in_time = report["seconds"] <= args.budget
    report["ok"] = all(s.get("ok") for s in report["steps"].values()) and in_time
    (out / "first-contact.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"goals: pytest -m gpu green, scan >= {SCAN_GOAL} of copy, verified burn >= {BURN_GOAL} of bare in "
          f"{', '.join(DTYPES)}, healthy cards pass quick with no finding of the harness's own, within "
          f"{args.budget:g} s: {'ALL MET' if report['ok'] else 'NOT ALL MET'} ({report['seconds']} s"
          f"{'' if in_time else ', over budget'}); report: {out / 'first-contact.json'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
