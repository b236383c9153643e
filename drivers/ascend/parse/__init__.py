"""Parsers for ``npu-smi`` text output (910B, npu-smi 23.x-24.x), one module per kind of layout.

npu-smi's layouts drift between versions (labels, widths), so key/value views are read by
label and the ``:`` separator, never by column, with the label variants of the reference
accepted; the boxed ``info`` table is split on ``|`` and ``/``. ``NA`` reads as None. Every
parser raises ParseError with one line naming the command and the offending line.

- ``text``: ParseError, NA, label keys and variants, line splitting
- ``kv``: key/value views (``npu-smi info -t ...``) and unit-checked numbers
- ``views``: typed views of each ``-t`` command (board, health, common, usages, memory, ...)
- ``listing``: ``npu-smi info -l`` and ``-m``
- ``info``: the boxed ``npu-smi info`` table and its processes
- ``links``: ``npu-smi info -t topo`` (the HCCS matrix) and ``hccn_tool`` (the RoCE port)
"""

from drivers.ascend.parse.info import InfoChip, InfoProcess, InfoTable, parse_info  # noqa: F401
from drivers.ascend.parse.kv import Block, Field, KVView, parse_kv  # noqa: F401
from drivers.ascend.parse.links import parse_link, parse_net_health, parse_optical, parse_topo  # noqa: F401
from drivers.ascend.parse.listing import CardList, ChipMapping, ListedCard, parse_list, parse_mapping  # noqa: F401
from drivers.ascend.parse.text import HEALTH, NA, POWER, TEMPERATURE, ParseError  # noqa: F401
from drivers.ascend.parse.views import (  # noqa: F401
    Board,
    ChipHealth,
    Common,
    CommonChip,
    Ecc,
    Health,
    Memory,
    Usages,
    parse_board,
    parse_common,
    parse_ecc,
    parse_health,
    parse_memory,
    parse_power,
    parse_temp,
    parse_usages,
)
