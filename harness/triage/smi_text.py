"""``nvidia-smi -q`` (and ``-a``) as text: one section per GPU, nested by indentation.

The report is read as a tree of ``label : value`` lines (a line without a colon opens a section);
facts are found by label path, each step searching below the previous one, so a section a newer
driver inserts does not hide the fields under it. A paste that starts mid-report (only the
``Remapped Rows`` section, say) is read as one GPU. ``Unable to determine the device handle for
GPU 0000:09:00.0: Unknown Error`` is what nvidia-smi prints for a card that no longer answers:
it names that card, lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from drivers.evidence import CardEvidence, Quote, normalize_bus_id
from harness.triage import smi_fields
from harness.triage.lines import split_lines

KIND = "nvidia-smi -q"

_GPU_HEADER = re.compile(r"^GPU\s+([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*$")
_NO_HANDLE = re.compile(r"Unable to (?:determine|detect) the device handle for GPU\s*([0-9A-Fa-f:.]+?):?\s+(.*)$",
                        re.IGNORECASE)
_KV = re.compile(r"^(\s*)([^:]*?\S)\s*:\s?(.*)$")

# fact -> label paths (each step searched below the previous); the first path found wins
PATHS: dict[str, list[tuple[str, ...]]] = {
    "model": [("product name",)],
    "serial": [("serial number",)],
    "uuid": [("gpu uuid",)],
    "vbios": [("vbios version",)],
    "inforom_image": [("inforom version", "image version")],
    "bus_id": [("pci", "bus id")],
    "memory_total": [("fb memory usage", "total")],
    "memory_used": [("fb memory usage", "used")],
    "fan": [("fan speed",)],
    "temp": [("temperature", "gpu current temp")],
    "memory_temp": [("temperature", "memory current temp")],
    "temp_shutdown": [("temperature", "gpu shutdown temp")],
    "temp_slowdown": [("temperature", "gpu slowdown temp")],
    "temp_max_op": [("temperature", "gpu max operating temp")],
    "power_draw": [("gpu power readings", "power draw"), ("gpu power readings", "average power draw"),
                   ("gpu power readings", "instantaneous power draw"), ("power readings", "power draw")],
    "power_limit": [("gpu power readings", "current power limit"), ("gpu power readings", "power limit"),
                    ("power readings", "enforced power limit"), ("power readings", "power limit")],
    "power_default": [("gpu power readings", "default power limit"), ("power readings", "default power limit")],
    "power_min": [("gpu power readings", "min power limit"), ("power readings", "min power limit")],
    "clock_sm": [("clocks", "sm")],
    "clock_sm_max": [("max clocks", "sm")],
    "util": [("utilization", "gpu")],
    "pcie_gen_max": [("pci", "pcie generation", "max")],
    "pcie_gen_cur": [("pci", "pcie generation", "current")],
    "pcie_width_max": [("pci", "link width", "max")],
    "pcie_width_cur": [("pci", "link width", "current")],
    "replays": [("pci", "replays since reset"), ("pci", "replays")],
    "ecc_mode": [("ecc mode", "current")],
    "ecc_vol_sbe_total": [("ecc errors", "volatile", "single bit", "total")],
    "ecc_vol_dbe_total": [("ecc errors", "volatile", "double bit", "total")],
    "ecc_agg_sbe_total": [("ecc errors", "aggregate", "single bit", "total")],
    "ecc_agg_dbe_total": [("ecc errors", "aggregate", "double bit", "total")],
    "ecc_vol_dram_cor": [("ecc errors", "volatile", "dram correctable")],
    "ecc_vol_dram_unc": [("ecc errors", "volatile", "dram uncorrectable")],
    "ecc_agg_dram_cor": [("ecc errors", "aggregate", "dram correctable")],
    "ecc_agg_dram_unc": [("ecc errors", "aggregate", "dram uncorrectable")],
    "ecc_vol_sram_unc": [("ecc errors", "volatile", "sram uncorrectable")],
    "ecc_vol_sram_unc_parity": [("ecc errors", "volatile", "sram uncorrectable parity")],
    "ecc_vol_sram_unc_secded": [("ecc errors", "volatile", "sram uncorrectable sec-ded")],
    "ecc_agg_sram_unc": [("ecc errors", "aggregate", "sram uncorrectable")],
    "ecc_agg_sram_unc_parity": [("ecc errors", "aggregate", "sram uncorrectable parity")],
    "ecc_agg_sram_unc_secded": [("ecc errors", "aggregate", "sram uncorrectable sec-ded")],
    "retired_sbe": [("retired pages", "single bit ecc")],
    "retired_dbe": [("retired pages", "double bit ecc")],
    "retired_pending": [("retired pages", "pending page blacklist"), ("retired pages", "pending page retirement"),
                        ("retired pages", "pending")],
    "rows_cor": [("remapped rows", "correctable error")],
    "rows_unc": [("remapped rows", "uncorrectable error")],
    "rows_pending": [("remapped rows", "pending")],
    "rows_failure": [("remapped rows", "remapping failure occurred")],
    "recovery_action": [("gpu recovery action",)],
    "unrepairable_memory": [("ecc errors", "unrepairable memory")],
}
_REASONS = {"throttle.idle": "idle", "throttle.app_clocks": "applications clocks setting",
            "throttle.sw_power_cap": "sw power cap", "throttle.hw_slowdown": "hw slowdown",
            "throttle.hw_thermal": "hw thermal slowdown", "throttle.hw_power_brake": "hw power brake slowdown",
            "throttle.sync_boost": "sync boost", "throttle.sw_thermal": "sw thermal slowdown"}
for _fact, _label in _REASONS.items():
    PATHS[_fact] = [("clocks event reasons", _label), ("clocks throttle reasons", _label)]


@dataclass
class Node:
    label: str  # normalised: lower case, single spaces
    value: str | None  # None for a section header
    line: int
    text: str
    indent: int
    children: list[Node] = field(default_factory=list)
    first: int = 0  # preorder number of this node
    last: int = 0  # preorder number of its last descendant


class Tree:
    """The report's nodes indexed by label, so a label path is found without walking the tree."""

    def __init__(self, root: Node) -> None:
        self.root = root
        self.by_label: dict[str, list[Node]] = {}
        self.nodes: list[Node] = []
        self._number(root)

    def _number(self, node: Node) -> None:
        stack: list[tuple[Node, bool]] = [(node, False)]
        while stack:
            n, done = stack.pop()
            if done:
                n.last = len(self.nodes) - 1
                continue
            n.first = len(self.nodes)
            self.nodes.append(n)
            self.by_label.setdefault(n.label, []).append(n)
            stack.append((n, True))
            stack.extend((c, False) for c in reversed(n.children))

    def find(self, path: tuple[str, ...], under: Node | None = None) -> Node | None:
        """The first node (in the report's order) matching ``path``, each step below the last."""
        scope = under or self.root
        for n in self.by_label.get(path[0], []):
            if scope.first < n.first <= scope.last:
                if len(path) == 1:
                    return n
                hit = self.find(path[1:], n)
                if hit is not None:
                    return hit
        return None


def _norm(label: str) -> str:
    return " ".join(label.lower().split())


def detect(text: str) -> bool:
    head = text[:20000]
    if "NVSMI LOG" in head or _NO_HANDLE.search(head):
        return True
    # a paste without the banner: a GPU header or several of the report's own labels
    labels = ("Product Name", "GPU UUID", "Remapped Rows", "Retired Pages", "Clocks Event Reasons",
              "Clocks Throttle Reasons", "Pending Page Blacklist", "FB Memory Usage", "Replays Since Reset")
    hits = sum(1 for lb in labels if re.search(rf"^\s*{re.escape(lb)}\b", head, re.MULTILINE))
    padded = len(re.findall(r"^ {4,}\S[^:\n]*? {2,}: ", head, re.MULTILINE))  # nvidia-smi's "    Label     : value"
    return hits >= 2 or (hits >= 1 and (padded >= 2 or any(_GPU_HEADER.match(ln.strip())
                                                            for ln in head.splitlines()[:400])))


def _tree(lines: list[tuple[int, str]]) -> Node:
    root = Node("", None, 0, "", -1)
    stack = [root]
    for no, raw in lines:
        if not raw.strip():
            continue
        line = raw.expandtabs(4)
        m = _KV.match(line)
        indent = len(line) - len(line.lstrip())
        if m:
            node = Node(_norm(m.group(2)), m.group(3).strip(), no, raw, indent)
        else:
            node = Node(_norm(line), None, no, raw, indent)
        while len(stack) > 1 and stack[-1].indent >= indent:
            stack.pop()
        stack[-1].children.append(node)
        if node.value is None or node.value == "":  # a section: later, deeper lines belong to it
            node.value = None
            stack.append(node)
    return root


def read(text: str, source: str) -> list[CardEvidence]:
    lines = split_lines(text)
    cards: list[CardEvidence] = []
    driver = None
    blocks: list[tuple[str | None, list[tuple[int, str]]]] = []
    current: list[tuple[int, str]] = []
    bus: str | None = None
    started = False
    for no, raw in lines:
        stripped = raw.strip()
        lost = _NO_HANDLE.search(stripped)
        if lost:
            bid = normalize_bus_id(lost.group(1))
            cards.append(CardEvidence(source=source, kind=KIND, vendor="nvidia", pci_bus_id=bid,
                                      lost=f"nvidia-smi could not reach it: {lost.group(2).strip()}",
                                      quotes={"lost": [Quote(source, no, raw)]}))
            continue
        m = _GPU_HEADER.match(stripped)
        if m and (len(raw) - len(raw.lstrip())) < 4:
            if started:
                blocks.append((bus, current))
            bus, current, started = m.group(1), [], True
            continue
        dv = re.match(r"^\s*Driver Version\s*:\s*(\S+)", raw)
        if dv and not started:
            driver = dv.group(1)
            continue
        if not started and re.match(r"^\s*(Timestamp|CUDA Version|Attached GPUs|=+NVSMI LOG=+)", raw):
            continue
        current.append((no, raw))
    if started:
        blocks.append((bus, current))
    elif any(ln.strip() for _, ln in current):
        blocks.append((None, current))  # a paste of one GPU's sections, without its header
    for index, (bus_raw, block) in enumerate(blocks):
        card = _card(block, source, bus_raw, index if started else None)
        if card is None:
            continue
        if driver:
            card.firmware["driver"] = driver
        cards.append(card)
    return cards


def _card(block: list[tuple[int, str]], source: str, bus_raw: str | None, index: int | None) -> CardEvidence | None:
    root = _tree(block)
    if not root.children:
        return None
    tree = Tree(root)
    card = CardEvidence(source=source, kind=KIND, vendor="nvidia", index=index, pci_bus_id=normalize_bus_id(bus_raw))

    def lookup(fact: str) -> tuple[str, Quote] | None:
        for path in PATHS.get(fact, []):
            node = tree.find(path)
            if node is not None and node.value is not None:
                return node.value, Quote(source, node.line, node.text)
        return None

    smi_fields.apply(card, lookup)
    if card.pci_bus_id is None:
        hit = lookup("bus_id")
        card.pci_bus_id = normalize_bus_id(hit[0]) if hit else None
    smi_fields.extra_states(card, lookup)
    values = [n for n in tree.nodes if n.value]
    errors = [n for n in values if smi_fields.is_error(n.value or "")]
    lost_words = [n for n in errors if "gpu is lost" in (n.value or "").lower()]
    if lost_words or (len(values) >= 8 and len(errors) * 2 > len(values)):
        first = (lost_words or errors)[0]
        card.lost = f"nvidia-smi printed {first.value!r} for {len(errors)} of the card's {len(values)} fields"
        card.quote("lost", Quote(source, first.line, first.text))
    return card
