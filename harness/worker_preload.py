"""Imported once by the local engine's fork server, so each card's worker starts warm.

Measured (issue 12, 256 mock cards, health-only plan, two cores): the controller spends ~4 ms
of CPU a card (store commits, pipes); the ~60 ms a card went to each worker importing every
stage module and scanning entry points (``stress.base.stages()``) and the backends again
after its fork. Doing that once here, before the fork server forks, leaves a worker with its
fork and the session itself.
"""

from drivers.registry import backend_names, get_backend
from stress.base import stages

stages()
for _name in backend_names():
    try:
        get_backend(_name)  # imports only: no backend opens a device or a vendor library here
    except Exception:  # noqa: BLE001 - a backend that cannot import is reported when a card uses it
        pass
