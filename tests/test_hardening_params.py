"""Issue 23, hardening item 7: every duration and count of every stage is bounded both ways.

``observe_s = -5`` passed a card with no health watch at all and ``observe_s = 1e308`` made a
run that never ends. The walk below covers every registered stage's Params, so a new stage (or a
subclass that redeclares ``timeout_s = 120.0`` and so drops the base's bounds) cannot forget.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from harness.cli import main
from stress.base import stages
from tests.conftest import mock_card, rack_toml


def _constraints(meta: list[Any]) -> list[Any]:
    out: list[Any] = []
    for m in meta:
        out += _constraints(list(m.metadata)) if isinstance(m, FieldInfo) else [m]
    return out


def _numeric(ann: Any, meta: list[Any], where: str) -> list[tuple[str, list[Any]]]:
    """(where, constraints) of every int/float an annotation holds (in unions, lists, Annotated)."""
    origin = get_origin(ann)
    if origin is typing.Annotated:
        inner, *extra = get_args(ann)
        return _numeric(inner, meta + _constraints(extra), where)
    if origin in (Union, types.UnionType):
        return [x for a in get_args(ann) if a is not type(None) for x in _numeric(a, meta, where)]
    if origin in (list, tuple, set, frozenset):
        return [x for a in get_args(ann) if a is not Ellipsis for x in _numeric(a, [], f"{where}[]")]
    if origin is Literal or ann is bool:
        return []
    if ann in (int, float):
        return [(where, _constraints(meta))]
    return []


def _fields() -> list[tuple[str, str, str, list[Any]]]:
    out = []
    for name, cls in sorted(stages().items()):
        for field, info in cls.Params.model_fields.items():
            for where, cons in _numeric(info.annotation, list(info.metadata), field):
                out.append((name, field, where, cons))
    return out


FIELDS = _fields()


def test_the_walk_sees_every_stage_and_their_numbers():
    names = {s for s, *_ in FIELDS}
    assert {"health", "memory", "burn", "fans", "thermal", "power", "pcie", "preflight"} <= names
    assert ("fans", "duty_steps", "duty_steps[]") in {(s, f, w) for s, f, w, _ in FIELDS}  # list items too
    assert _numeric(int | None, [], "x") == [("x", [])]  # a number without bounds is seen as such


def test_every_numeric_stage_parameter_has_a_lower_and_an_upper_bound():
    missing = [f"{stage}.{where}" for stage, _, where, cons in FIELDS
               if not any(isinstance(c, at.Ge | at.Gt) for c in cons)
               or not any(isinstance(c, at.Le | at.Lt) for c in cons)]
    assert not missing, "stage parameters without both bounds (stress/bounds.py has the ceilings):\n" + \
        "\n".join(missing)


def _bound(cons: list[Any], kind: type) -> float:
    return next(float(getattr(c, n)) for c in cons if isinstance(c, kind)
                for n in ("ge", "gt", "le", "lt") if hasattr(c, n))


@pytest.mark.parametrize(("stage", "field", "cons"),
                         [(s, f, c) for s, f, w, c in FIELDS if w == f])
def test_values_past_each_bound_are_rejected(stage, field, cons):
    params = stages()[stage].Params
    lo = _bound(cons, at.Ge | at.Gt)
    hi = _bound(cons, at.Le | at.Lt)
    for bad in (lo - 1, hi * 2 + 1):
        with pytest.raises(ValidationError):
            params.model_validate({field: int(bad) if bad.is_integer() and abs(bad) < 2**70 else bad})


@pytest.mark.parametrize(("value", "expect"), [
    ("-5", "greater than or equal to 0"),
    ("1e308", "less than or equal to"),
    ("nan", "finite"),
])
def test_a_plan_with_an_out_of_bounds_duration_is_a_config_error(tmp_path, value, expect):
    """The issue's own cases: a one-line exit 2 naming the plan file, the stage and the field."""
    rack = tmp_path / "r.toml"
    rack.write_text(rack_toml([mock_card("B1", 0)]))
    plan = tmp_path / "p.toml"
    plan.write_text(f'[[stages]]\nstage = "preflight"\n[[stages]]\nstage = "health"\nobserve_s = {value}\n')
    res = CliRunner().invoke(main, ["validate", str(rack), "--plan", str(plan)])
    assert res.exit_code == 2, res.output
    assert res.stderr.count("\n") == 1 and str(plan) in res.stderr
    assert "stages[1] (health).observe_s" in res.stderr and expect in res.stderr, res.stderr


def test_zero_is_accepted_only_where_the_stage_defines_it():
    """health.observe_s = 0 is one reading (the final check, ``burnin devices``); a zero-second
    soak or burn is no test and is refused."""
    assert stages()["health"].Params.model_validate({"observe_s": 0}).observe_s == 0
    for stage, field in (("thermal", "soak_s"), ("burn", "duration_s"), ("power", "hold_s"),
                         ("pcie", "duration_s"), ("memory", "fade_wait_s"), ("health", "timeout_s"),
                         ("preflight", "timeout_s"), ("memory", "timeout_s")):
        with pytest.raises(ValidationError):
            stages()[stage].Params.model_validate({field: 0})


def test_stages_listing_shows_each_range():
    res = CliRunner().invoke(main, ["stages", "--json"])
    health = next(s for s in json.loads(res.stdout) if s["stage"] == "health")
    obs = next(p for p in health["params"] if p["name"] == "observe_s")
    assert (obs["min"], obs["max"]) == (0, 86400.0)
    out = CliRunner().invoke(main, ["stages"]).stdout
    assert "≥ 0, ≤ 86400" in out
