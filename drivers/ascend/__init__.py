"""The ``ascend`` backend: Huawei Ascend NPUs through ``npu-smi`` (real or the simulator).

Rack config keys: ``npu_smi`` (a path or a command line; a relative path resolves against the
config file's directory, a bare name is looked up on PATH), ``npu_id`` (one card; default: all),
``timeout_s`` (per npu-smi call), ``ascend_dmi`` (the diagnostic tool, the same way; not found:
the diagnostics stage says what to install), ``npu_runtime`` (the module behind the memory,
compute and transfer handles and its arguments: torch_npu by default, see ``runtime.py``). ``discover`` reads ``npu-smi info -l`` and ``info -m`` and
returns one locator per NPU chip, never for the board MCU.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field

from drivers.api import BackendUnavailable, Device, DeviceError
from drivers.ascend import parse
from drivers.ascend.device import AscendDevice, NpuSmi
from drivers.ascend.dmi import INSTALL_HINT as DMI_HINT
from drivers.ascend.dmi import AscendDmi, resolve_tool
from drivers.ascend.runtime import DEFAULT_RUNTIME, NpuRuntime, open_runtime, runtime_argv
from drivers.registry import Backend, BackendConfig, register_backend

# the npu-smi views an RMA evidence pack keeps (card-level ones get ``-i NPU_ID``)
NPU_SMI_VIEWS = (("info",), ("info", "-t", "board"), ("info", "-t", "health"), ("info", "-t", "common"),
                 ("info", "-t", "ecc"), ("info", "-t", "memory"), ("info", "-t", "usages"))

__all__ = ["AscendBackend", "AscendConfig", "AscendDevice", "NpuSmi", "resolve_npu_smi"]


class AscendConfig(BackendConfig):
    npu_smi: str = "npu-smi"
    npu_id: int | None = Field(default=None, ge=0)
    timeout_s: float = Field(default=20.0, gt=0)
    # the RoCE port tool (a path or a command line, like npu_smi); default: hccn_tool on PATH, if any
    hccn_tool: str | None = None
    ascend_dmi: str = "ascend-dmi"
    npu_runtime: str = DEFAULT_RUNTIME


def resolve_npu_smi(spec: str, config_dir: str | Path | None) -> list[str]:
    """The argv prefix for ``npu_smi``; BackendUnavailable when the program is not there."""
    try:
        argv = shlex.split(spec)
    except ValueError as e:
        raise BackendUnavailable(f"ascend: npu_smi {spec!r}: {e}") from None
    if not argv:
        raise BackendUnavailable("ascend: npu_smi is empty")
    prog = argv[0]
    if os.sep in prog or (os.altsep and os.altsep in prog):
        path = Path(prog).expanduser()
        if not path.is_absolute() and config_dir is not None:
            path = Path(config_dir) / path
        if not path.is_file():
            raise BackendUnavailable(f"ascend: npu-smi not found: {path}")
        argv[0] = str(path.resolve())
    else:
        found = shutil.which(prog)
        if found is None:
            raise BackendUnavailable(f"ascend: npu-smi not found on PATH: {prog!r} (set npu_smi in the rack config)")
        argv[0] = found
    # file or folder arguments given relative to the config, e.g. a simulator and its state:
    # ``npu_smi = "python3 ../fixtures/ascend/npu_smi_sim.py --state faults.json"``
    if config_dir is not None:
        for i, a in enumerate(argv[1:], 1):
            cand = Path(config_dir) / a
            if not a.startswith("-") and not Path(a).is_absolute() and (cand.is_file() or cand.is_dir()):
                argv[i] = str(cand.resolve())
    return argv


@register_backend
class AscendBackend(Backend):
    name = "ascend"
    Config = AscendConfig

    def discover(self, cfg: BackendConfig, context: dict[str, Any]) -> list[dict[str, Any]]:
        assert isinstance(cfg, AscendConfig)
        argv = resolve_npu_smi(cfg.npu_smi, context.get("config_dir"))
        hccn = _hccn_argv(cfg.hccn_tool, context.get("config_dir"))
        smi = NpuSmi(argv, cfg.timeout_s)
        dmi_argv = resolve_tool(cfg.ascend_dmi, context.get("config_dir"))
        rt_argv = runtime_argv(cfg.npu_runtime, context.get("config_dir"))
        cards, mapping = _enumerate(smi)
        chips = [m for m in mapping if not m.is_mcu]
        found: list[tuple[int, int, int | None, str]] = [(m.npu_id, m.chip_id, m.logic_id, m.name) for m in chips]
        mapped = {m.npu_id for m in chips}
        for card in cards.cards:  # a card -l lists but -m does not map: assume its chip 0
            if card.npu_id not in mapped:
                found.append((card.npu_id, 0, None, ""))
        found.sort(key=lambda f: (f[0], f[1]))
        if cfg.npu_id is not None:
            # a named card that npu-smi no longer lists is still returned: opening it answers
            # DeviceLost, so the run lists it with a bus.lost finding instead of dropping it
            found = [f for f in found if f[0] == cfg.npu_id] or [(cfg.npu_id, 0, None, "")]
        locators = []
        for i, (npu_id, chip_id, logic_id, name) in enumerate(found):
            locators.append({
                "backend": self.name,
                "slot": (cfg.slot + i) if cfg.slot is not None else npu_id,
                "serial": cfg.serial,
                "npu_id": npu_id,
                "chip_id": chip_id,
                "logic_id": logic_id,
                "name": name,
                "argv": argv,
                "timeout_s": cfg.timeout_s,
                "hccn_argv": hccn,
                "dmi_argv": dmi_argv,
                "dmi_spec": cfg.ascend_dmi,
                "runtime_argv": rt_argv,
            })
        return locators

    def vendor_record(self, locator: dict[str, Any], out_dir: Path) -> list[tuple[str, str]]:
        """The npu-smi views of the card, read now (a view the card refuses says why in its file)."""
        smi = NpuSmi(locator["argv"], float(locator.get("timeout_s", 20.0)))
        out = []
        for view in NPU_SMI_VIEWS:
            args = [*view] + (["-i", str(locator.get("npu_id", 0))] if len(view) > 1 else [])
            name = "npu-smi_" + "_".join(a.lstrip("-") for a in args) + ".txt"
            try:
                text = smi.run(args)
            except Exception as e:  # noqa: BLE001 - one refused view must not cost the others
                text = f"# {smi.command(args)} failed: {e}\n"
            (out_dir / name).write_text(text, encoding="utf-8")
            out.append((name, f"output of `{smi.command(args)}`, read when the pack was written"))
        return out

    def open(self, locator: dict[str, Any]) -> Device:
        smi = NpuSmi(locator["argv"], float(locator.get("timeout_s", 20.0)))
        hccn = locator.get("hccn_argv")
        dmi_argv = locator.get("dmi_argv")
        dmi_missing = None if dmi_argv else (
            f"ascend-dmi is not installed (looked for {locator.get('dmi_spec') or 'ascend-dmi'!r}): {DMI_HINT}")
        runtime: NpuRuntime | None = None
        runtime_missing = None
        where = {k: locator.get(k) for k in ("npu_id", "chip_id", "logic_id", "name")}
        try:
            runtime = open_runtime(list(locator.get("runtime_argv") or [DEFAULT_RUNTIME]), where)
        except BackendUnavailable as e:
            runtime_missing = str(e)
        return AscendDevice(smi, int(locator["npu_id"]), int(locator.get("chip_id", 0)),
                            name_hint=locator.get("name") or None,
                            dmi=AscendDmi(dmi_argv) if dmi_argv else None, dmi_missing=dmi_missing,
                            runtime=runtime, runtime_missing=runtime_missing, logic_id=locator.get("logic_id"),
                            hccn=NpuSmi(hccn, float(locator.get("timeout_s", 20.0)), "hccn_tool")
                            if isinstance(hccn, list) else hccn)


def _hccn_argv(spec: str | None, config_dir: str | Path | None) -> list[str] | str | None:
    """The hccn_tool argv prefix; None when none is configured and none is on PATH, or why the
    configured one cannot run (a string: the links report says so)."""
    if spec is None:
        found = shutil.which("hccn_tool")
        return [found] if found else None
    try:
        return resolve_npu_smi(spec, config_dir)
    except BackendUnavailable as e:
        return str(e).replace("npu-smi", "hccn_tool").replace("npu_smi", "hccn_tool")


def _enumerate(smi: NpuSmi) -> tuple[parse.CardList, list[parse.ChipMapping]]:
    """``info -l`` and ``info -m``; either may fail (an old npu-smi without ``-m``, a layout we
    cannot read) as long as the other one answers: ``-l`` alone means chip 0 of each card,
    ``-m`` alone lists every chip. Both failing means the backend cannot run here:
    BackendUnavailable with npu-smi's one-line reason (exit 3), never a traceback.
    """
    errors: list[DeviceError] = []
    cards: parse.CardList | None = None
    mapping: list[parse.ChipMapping] | None = None
    try:
        cards = parse.parse_list(smi.run(["info", "-l"]), "npu-smi info -l")
    except DeviceError as e:  # ParseError included
        errors.append(e)
    try:
        mapping = parse.parse_mapping(smi.run(["info", "-m"]), "npu-smi info -m")
    except DeviceError as e:
        errors.append(e)
    if cards is None and mapping is None:
        worst = next((e for e in errors if isinstance(e, parse.ParseError)), errors[0])
        raise BackendUnavailable(f"ascend: cannot list NPUs: {worst}")
    return cards or parse.CardList(total_count=None, cards=()), mapping or []
