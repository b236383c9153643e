"""Text helpers shared by every npu-smi parser: the one-line ParseError, NA, label keys, log
noise, line splitting, and the label variants of the reference."""

from __future__ import annotations

import re

from drivers.api import DeviceError


class ParseError(DeviceError, ValueError):
    """npu-smi printed something we cannot read; the message is one line."""

    def __init__(self, command: str, message: str, line_no: int | None = None, line: str | None = None):
        where = f": line {line_no}" if line_no is not None else ""
        shown = f": {line.strip()[:120]!r}" if line is not None else ""
        super().__init__(f"{command}{where}{shown}: {message}".replace("\n", " ").replace("\r", " "))
        self.command = command
        self.line_no = line_no


NA = ("NA", "N/A", "-", "", "--")


def _norm(label: str) -> str:
    """Label key: case and spaces ignored (``Temperature (C)`` == ``Temperature(C)``)."""
    return re.sub(r"\s+", "", label).lower()


def _is_noise(line: str) -> bool:
    """Log lines npu-smi or the driver interleave with the output: ``[WARNING]...``,
    ``[ERROR] DRV(...)...``, ``[INFO]``. They carry no data, wherever they appear."""
    return line.lstrip().startswith("[")


def _lines(text: str) -> list[tuple[int, str]]:
    """(1-based number, line) for each line; CRLF, lone CR and a BOM are tolerated."""
    text = text.lstrip("\ufeff")
    return list(enumerate(re.split(r"\r\n|\r|\n", text), 1))


def _empty(text: str) -> bool:
    return not text.strip()


# Label variants seen across npu-smi versions (reference: "Output conventions"), plus unit-less
# spellings: a unit-less label's value may carry the unit (``41 C``), else it is in the usual unit.
TEMPERATURE = ("Temperature(C)", "Temperature (C)", "NPU Temperature (C)", "NPU Temperature(C)",
               "Chip Temperature(C)", "Temp(C)", "NPU Temp(C)", "Temperature", "NPU Temperature")
HEALTH = ("Health Status", "Health", "NPU Health", "NPU Health Status")
POWER = ("NPU Real-time Power(W)", "Power(W)", "Power Dissipation(W)", "Real-time Power(W)",
         "NPU Power(W)", "Power", "NPU Real-time Power", "Power Dissipation")
_TEMP_UNITS = ("c", "°c", "℃", "degc")
