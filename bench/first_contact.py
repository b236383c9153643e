"""First contact with real NVIDIA cards: one script for the day a GPU is at hand (not a test).

    python -m bench.first_contact [--out DIR]

On every visible NVIDIA card, in under 8 minutes: ``pytest -m gpu``, the memory scan's bandwidth
against a device-to-device copy, the verified burn against a bare GEMM (same operands, same
stream, synchronised), ``python -m drivers.nvml_record``, and ``burnin run`` with ``quick`` on a
rack of the real cards. Writes ``DIR/first-contact.json`` with every figure and the verdicts, and
prints the goals: scan >= 0.8 of the copy, verified burn >= 0.95 of the bare GEMM, healthy cards
``pass`` with no ``fail`` finding. Commit ``DIR/nvml/<model>-real.json`` as
``fixtures/nvml/<model>-real.json``. Exits 3 in one line where there is no NVIDIA GPU or no CuPy.
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
BUDGET_S = {"pytest": 150, "record": 60, "quick": 200}  # with the measurements: < 8 min in all


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


def _cuda_device(gpu: dict[str, Any]) -> int:
    from drivers.cuda.errors import find_device, import_cupy

    return find_device(import_cupy(), {"index": gpu["nvml_index"], "uuid": gpu["uuid"], "pci_bus_id": gpu["pci_bus_id"]})


def _memscan(device: int, mib: int = 1024) -> dict[str, Any]:
    from bench.memscan import gpu

    scan, march, copy = gpu(mib << 20, 5, device)
    return {"scan_gbps": round(scan / 1e9, 2), "march_gbps": round(march / 1e9, 2), "copy_gbps": round(copy / 1e9, 2),
            "ratio": round(scan / copy, 4), "goal": SCAN_GOAL, "ok": scan / copy >= SCAN_GOAL}


def _burn(device: int, dtype: str, products: int = 20, rounds: int = 3) -> dict[str, Any]:
    """Verified products against bare ones on the same engine (operands, buffers, stream)."""
    from drivers.cuda.compute import CudaCompute

    eng = CudaCompute(device).verified_gemm(dtype, None, 50, 1)
    try:
        eng.run(2, 60.0)
        eng.bare(2, 60.0)
        bf = bs = vf = vs = 0.0
        wrong = 0
        for r in range(rounds):
            for kind in (("bare", "burn") if r % 2 == 0 else ("burn", "bare")):
                if kind == "bare":
                    f, s = eng.bare(products, 60.0)  # synchronised: returns when its products are done
                    bf, bs = bf + f, bs + s
                else:
                    t0 = time.perf_counter()
                    rep = eng.run(products, 60.0)
                    vs += time.perf_counter() - t0
                    vf += rep.flops
                    wrong += rep.wrong_elements
        ratio = (vf / vs) / (bf / bs)
        return {"dtype": dtype, "size": eng.size, "bare_tflops": round(bf / bs / 1e12, 3),
                "burn_tflops": round(vf / vs / 1e12, 3), "ratio": round(ratio, 4), "wrong_elements": wrong,
                "goal": BURN_GOAL, "ok": ratio >= BURN_GOAL and wrong == 0}
    finally:
        eng.close()


def _step(report: dict[str, Any], name: str, fn: Any, *args: Any) -> Any:
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


def _quick(out: Path) -> dict[str, Any]:
    rack = out / "rack.toml"
    rack.write_text('[rack]\nname = "first-contact"\nplan = "quick"\n\n[[hosts]]\nname = "local"\n\n'
                    '[[hosts.devices]]\nbackend = "nvml"\n')
    res = _run([sys.executable, "-m", "harness.cli", "run", str(rack), "--json", str(out / "quick.json"),
                "--db", str(out / "first-contact.db"), "-q"], BUDGET_S["quick"])
    doc = out / "quick.json"
    if doc.exists():
        cards = json.loads(doc.read_text())["cards"]
        res["cards"] = [{"serial": c.get("serial"), "model": c.get("model"), "verdict": c["verdict"],
                         "fail_findings": [f["code"] for f in c["findings"] if f["severity"] == "fail"]}
                        for c in cards]
        res["ok"] = all(c["verdict"] == "pass" and not c["fail_findings"] for c in res["cards"])
    return res


def _slug(model: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", model.lower().replace("nvidia", "")).strip("-")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="first-contact", help="folder for the report (default ./first-contact)")
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
    _step(report, "pytest -m gpu", _run, [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p",
                                           "no:cacheprovider"], BUDGET_S["pytest"])
    for g in gpus:
        tag = f"gpu{g['nvml_index']}"
        dev = _step(report, f"{tag} cuda device", lambda g=g: {"cuda_device": _cuda_device(g), "ok": True})
        if "cuda_device" not in dev:
            continue
        _step(report, f"{tag} memscan", _memscan, dev["cuda_device"])
        for dtype in ("fp16", "fp32"):
            _step(report, f"{tag} burn {dtype}", _burn, dev["cuda_device"], dtype)
    snap = out / "nvml" / "snapshot.json"
    rec = _step(report, "nvml_record", _run, [sys.executable, "-m", "drivers.nvml_record", str(snap)],
                BUDGET_S["record"])
    if rec.get("ok") and snap.exists():
        model = gpus[0]["model"]
        named = out / "nvml" / f"{_slug(model)}-real.json"
        named.write_text(snap.read_text())
        rec["fixture"] = f"commit {named} as fixtures/nvml/{named.name}"
    _step(report, "burnin run quick", _quick, out)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["ok"] = all(s.get("ok") for s in report["steps"].values())
    (out / "first-contact.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"goals: scan >= {SCAN_GOAL} of copy, burn >= {BURN_GOAL} of bare, healthy cards pass with no fail "
          f"finding: {'all met' if report['ok'] else 'NOT ALL MET'} ({report['seconds']} s); "
          f"report: {out / 'first-contact.json'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
