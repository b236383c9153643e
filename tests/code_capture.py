"""Every finding code burnin produces while the suite runs, checked against what is declared.

Installed once per test process by conftest: a ``Finding`` made by burnin's own code in this
process (``__init__``) or arriving from a card worker (unpickled from its events) is noted with
the stage that raised it (``Finding.test``). After each test, a code that neither that stage
(``Stage.codes``) nor the harness (``harness.codes.HARNESS_CODES``) declares fails the test,
naming the code and the stage. Findings the tests build themselves (synthetic verdict inputs) and
findings read back from a store or a document (``Finding.from_dict``) are not new codes and are
skipped. What was seen is also kept per process (``SEEN``) for the report at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

from stress.model import Finding

TESTS = str(Path(__file__).resolve().parent)
_SKIP_FILES = (str(Path(sys.modules[Finding.__module__].__file__ or "").resolve()), "dataclasses.py")

PENDING: list[tuple[str, str]] = []  # (code, test) not yet checked
SEEN: set[tuple[str, str]] = set()  # every (code, test) seen by this process
_installed = False


def _made_by_burnin(frame: FrameType | None) -> bool:
    """Walk out of the dataclass machinery and stress/model.py: burnin's code made this finding,
    unless a test did or it is being read back (``from_dict``)."""
    while frame is not None and frame.f_code.co_filename.endswith(_SKIP_FILES):
        if frame.f_code.co_name == "from_dict":
            return False
        frame = frame.f_back
    return frame is not None and not frame.f_code.co_filename.startswith(TESTS)


def _note(code: Any, test: Any) -> None:
    PENDING.append((str(code), str(test)))


def install() -> None:
    """Wrap ``Finding`` construction and unpickling (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    init = Finding.__init__

    def __init__(self: Finding, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if _made_by_burnin(sys._getframe(1)):
            _note(self.code, self.test)

    def __setstate__(self: Finding, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        _note(state.get("code"), state.get("test"))

    Finding.__init__ = __init__  # type: ignore[method-assign]
    Finding.__setstate__ = __setstate__  # type: ignore[attr-defined]


def declared_for(test: str) -> frozenset[str]:
    """What the stage named ``test`` declares, plus the harness's own codes."""
    from harness.codes import HARNESS_CODES
    from stress.base import stages

    cls = stages().get(test)
    return HARNESS_CODES | (cls.codes if cls is not None else frozenset())


def undeclared() -> list[str]:
    """The pending (code, stage) pairs nobody declares, as lines; clears the pending list."""
    from stress.base import declares

    pairs = sorted(set(PENDING))
    PENDING.clear()
    SEEN.update(pairs)
    return [f"{code} (raised by {test!r})" for code, test in pairs if not declares(declared_for(test), code)]
