"""An NVIDIA card's NVLinks through NVML (../shared/reference/interconnect.md section 1).

Per link: ``nvmlDeviceGetNvLinkState`` (active or not), ``...Version``, ``...RemotePciInfo``
(the far end's bus id: a peer GPU or an NVSwitch) and ``...RemoteDeviceType``; the trained speed
(field 164, per link); the error counters as field values scoped to the link: DL replay,
recovery and CRC (161-163) before Blackwell, where NVML stops supporting them; the link-recovery
and error counters (213-221) on Blackwell (architecture 10). Each field carries its own return
code: a counter NVML does not support is ``None`` with its reason, never 0. The fabric state
(``nvmlDeviceGetGpuFabricInfoV``, Hopper and later) says whether the NVSwitch fabric manager
registered the card. A link query that says the GPU is lost raises DeviceLost (the session's
power-cycle path), not a link finding.
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

from drivers.api import FabricState, LinkReport, LinkState
from drivers.nvml.core import _NA, VALUE_MEMBERS, error_name


class NvmlDevice(Protocol):
    """What the link reader needs of an NVML card (drivers/nvml/device.py's NvmlDevice), named
    here so this module does not import the device that imports it."""

    _nv: Any

    def _classify(self, err: Any, call: str, on: dict[str, Any] | None = None, soft: frozenset[str] = ...,
                  ) -> Any: ...

    def _try(self, fn: str, *args: Any, on: dict[str, Any] | None = None, device: bool = True) -> Any: ...

    def _read(self, fn: str, *args: Any, device: bool = True) -> Any: ...

FI_LINK_COUNT = 91
FI_LINK_SPEED_MBPS = 164  # per link (scope = link): the trained rate, MB/s
ARCH_BLACKWELL = 10
MAX_LINKS = 18  # NVML_NVLINK_MAX_LINKS in the 12.x headers (36 in 13.x); used when the count field is unreadable
DL_COUNTERS = {"replay": 161, "recovery": 162, "crc": 163}  # NVML_FI_DEV_NVLINK_ERROR_DL_*; gone on Blackwell
RECOVERY_COUNTERS = {"recovery_failed": 214, "recovery_events": 215, "effective_errors": 219,
                     "symbol_errors": 221}  # NVML_FI_DEV_NVLINK_COUNT_*: Blackwell and later
REMOTE_KIND = {0: "gpu", 1: "npu", 2: "switch"}
FABRIC_STATE = {0: "not_supported", 1: "not_started", 2: "in_progress", 3: "completed"}
HEALTH_DEGRADED_BW_MASK = 0x3  # NVML_GPU_FABRIC_HEALTH_MASK_DEGRADED_BW: 1 true, 2 false, 0 not supported


def _fields(dev: NvmlDevice, ids: list[tuple[int, int]]) -> list[tuple[Any, str | None]]:
    """(value, None) or (None, why) for each (field id, scope); the whole call failing is why for all."""
    nv = dev._nv
    values = dev._try("nvmlDeviceGetFieldValues", ids)
    if values is _NA or not values:
        return [(None, "not_supported")] * len(ids)
    out: list[tuple[Any, str | None]] = []
    for v in values:
        if v.nvmlReturn != nv.NVML_SUCCESS:
            name = error_name(nv, nv.NVMLError(v.nvmlReturn)).removeprefix("NVML_ERROR_").lower()
            if name in ("gpu_is_lost", "reset_required"):
                dev._classify(nv.NVMLError(v.nvmlReturn), "nvmlDeviceGetFieldValues(nvlink)")
            out.append((None, name))
            continue
        out.append((getattr(v.value, VALUE_MEMBERS.get(int(v.valueType), "ullVal")), None))
    return out


def _fabric(dev: NvmlDevice) -> FabricState | None:
    nv = dev._nv
    cls = getattr(nv, "c_nvmlGpuFabricInfoV_t", None)
    if cls is None or not hasattr(nv, "nvmlDeviceGetGpuFabricInfoV"):
        return None
    info = cls()
    version = getattr(nv, "nvmlGpuFabricInfo_v2", None)
    if version is not None:
        info.version = version
    ref = ctypes.byref(info) if isinstance(info, ctypes.Structure) else info  # the replay's stand-in is no ctypes struct
    if dev._try("nvmlDeviceGetGpuFabricInfoV", ref) is _NA:
        return None  # Ampere and older: no fabric state (the fabric manager is checked another way)
    state = FABRIC_STATE.get(int(info.state), f"unknown({int(info.state)})")
    status = None
    if state == "completed":
        status = "success" if int(info.status) == 0 else error_name(nv, nv.NVMLError(int(info.status)))
    mask = int(getattr(info, "healthMask", 0)) & HEALTH_DEGRADED_BW_MASK
    degraded = {1: True, 2: False}.get(mask)
    return FabricState(state=state, status=status, degraded=degraded)


def read_links(dev: NvmlDevice) -> LinkReport:
    """The card's NVLinks now; a report with no links when the card has none (a PCIe card)."""
    arch = dev._read("nvmlDeviceGetArchitecture")
    blackwell = isinstance(arch, int) and arch >= ARCH_BLACKWELL
    family, counters = ("link_recovery", RECOVERY_COUNTERS) if blackwell else ("dl", DL_COUNTERS)
    [(count, _)] = _fields(dev, [(FI_LINK_COUNT, 0)])
    n = int(count) if isinstance(count, int) else MAX_LINKS  # 0: a card without NVLink
    links: list[LinkState] = []
    for link in range(n):
        state = dev._try("nvmlDeviceGetNvLinkState", link)
        if state is _NA:
            if count is None:  # no count field: the first link NVML refuses ends the card's links
                break
            links.append(LinkState(index=link, up=None, unreadable={"state": "not_supported"}))
            continue
        version = dev._read("nvmlDeviceGetNvLinkVersion", link)
        pci = dev._read("nvmlDeviceGetNvLinkRemotePciInfo", link)
        kind = dev._read("nvmlDeviceGetNvLinkRemoteDeviceType", link)
        ids = [(FI_LINK_SPEED_MBPS, link)] + [(fid, link) for fid in counters.values()]
        vals = _fields(dev, ids)
        speed = vals[0][0]
        got = {name: v for name, (v, _) in zip(counters, vals[1:], strict=True)}
        why = {name: w for name, (_, w) in zip(counters, vals[1:], strict=True) if w is not None}
        remote = getattr(pci, "busId", None) if pci is not None else None
        if isinstance(remote, bytes):
            remote = remote.decode(errors="replace")
        links.append(LinkState(
            index=link, up=bool(state), speed_gbps=float(speed) / 1000.0 if isinstance(speed, int | float) and speed else None,
            version=int(version) if isinstance(version, int) else None, remote=remote or None,
            remote_kind=REMOTE_KIND.get(kind) if isinstance(kind, int) else None,
            counters={k: int(v) if isinstance(v, int | float) else None for k, v in got.items()}, unreadable=why))
    return LinkReport(kind="nvlink", links=tuple(links), counter_family=family, fabric=_fabric(dev),
                      extra={"architecture": arch, "link_count_field": count})
