"""Plans: a named TOML list of stages with their parameters (docs/contract.md section 5).

Each stage's parameters are validated by that stage's own pydantic model, so a typo in a plan
is an exit-2 error naming the plan file, the stage and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.errors import UsageError
from harness.inputs import read_toml
from stress.base import get_stage

PLAN_DIR = Path(__file__).resolve().parent.parent / "rack_configs" / "plans"
_TOP_KEYS = {"name", "description", "repeat", "stages"}
_PLAN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_REPEAT = 1000


@dataclass(frozen=True)
class PlanStage:
    stage: str
    params: dict[str, Any]  # validated and normalised (defaults filled in)

    @property
    def timeout_s(self) -> float:
        return float(self.params.get("timeout_s", 1800.0))


@dataclass(frozen=True)
class Plan:
    name: str
    path: Path
    description: str
    stages: tuple[PlanStage, ...]


def available_plans() -> list[str]:
    return sorted(p.stem for p in PLAN_DIR.glob("*.toml"))


def resolve_plan_path(name_or_path: str, base_dir: Path | None = None) -> Path:
    """A bundled plan by name, or a plan file; a relative file resolves against ``base_dir`` (the
    config's folder, for a config's ``plan``) or the working directory (``--plan``)."""
    if name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path:
        cand = Path(name_or_path).expanduser()
        if not cand.is_absolute() and base_dir is not None:
            cand = base_dir / cand
        try:
            found = cand.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise UsageError(f"{cand}: plan file not found")
        return cand
    if not _PLAN_NAME.fullmatch(name_or_path):
        raise UsageError(f"plan {name_or_path[:80]!r} is not a plan name or a .toml path "
                         f"(have: {', '.join(available_plans())})")
    path = PLAN_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise UsageError(f"plan {name_or_path!r} not found (have: {', '.join(available_plans())})")
    return path


def load_plan(name_or_path: str, base_dir: Path | None = None) -> Plan:
    path = resolve_plan_path(name_or_path, base_dir)
    data = read_toml(path, "plan")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise UsageError(f"{path}: stages: a plan needs at least one [[stages]] table")
    repeat = data.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= MAX_REPEAT:
        raise UsageError(f"{path}: repeat: must be a whole number from 1 to {MAX_REPEAT}, got {repeat!r}")
    stages: list[PlanStage] = []
    for i, raw in enumerate(raw_stages):
        if not isinstance(raw, dict) or not isinstance(raw.get("stage"), str):
            raise UsageError(f"{path}: stages[{i}].stage: missing required key (e.g. stage = \"health\")")
        params = {k: v for k, v in raw.items() if k != "stage"}
        try:
            cls = get_stage(raw["stage"])
        except KeyError as e:
            raise UsageError(f"{path}: stages[{i}].stage: {e.args[0]}") from None
        try:
            validated = cls.Params.model_validate(params)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            raise UsageError(f"{path}: stages[{i}] ({raw['stage']}).{where}: {msg}") from None
        stages.append(PlanStage(stage=raw["stage"], params=validated.model_dump(mode="json")))
    name = str(data.get("name", path.stem))
    return Plan(name=name, path=path, description=str(data.get("description", "")), stages=tuple(stages) * repeat)


def forced(plan: Plan) -> Plan:
    """``burnin run --force``: the plan with every preflight stage set to run the stress stages
    on a card that is not ready (each finding then says what it was measured under)."""
    stages = tuple(PlanStage(s.stage, {**s.params, "force": True}) if s.stage == "preflight" else s
                   for s in plan.stages)
    return replace(plan, stages=stages)
