"""The thermal soak, split along its jobs: ``fit`` (the first-order heating curve), ``settle``
(when the soak has seen enough), ``judge`` (theta and the findings, heat blamed on the right
part) and ``stage`` (the loop that holds the load and samples)."""

from stress.thermal.fit import Fit, fit_first_order
from stress.thermal.judge import judge_soak
from stress.thermal.settle import SoakSettle
from stress.thermal.stage import ThermalParams, ThermalStage

__all__ = ["Fit", "SoakSettle", "ThermalParams", "ThermalStage", "fit_first_order", "judge_soak"]
