"""Fans: the fan-sweep stage (``stage.py``), the fans it sweeps (``fansets.py``) and the bench as
stages use it (``link.py``: typed roles failing softly, inlet readings, known airflow faults)."""

from stress.fans.fansets import CardFans, ChassisFans, FanSet, HostChassisFans, restoring
from stress.fans.link import AIRFLOW_FAULTS, BenchLink, fan_suspects, inlet_reading
from stress.fans.stage import FanParams, FanStage, state_of

__all__ = [
    "AIRFLOW_FAULTS",
    "BenchLink",
    "CardFans",
    "ChassisFans",
    "FanParams",
    "FanSet",
    "FanStage",
    "HostChassisFans",
    "fan_suspects",
    "inlet_reading",
    "restoring",
    "state_of",
]
