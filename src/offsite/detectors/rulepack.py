"""Versioned rule packs: the thresholds of the scalar detectors, as files that cite where
each threshold comes from, with overrides per device or subject and risk-tier tightening.

Resolution of one rule's parameters for one device, in this order:

1. the pack, as written;
2. tightened by the subject's risk tier (`TierPolicy`), unless the rule opts out;
3. replaced, field by field, by an override for the subject, then by one for the device.
   Overrides are taken as written: an authority that set a value for a device meant it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from offsite.detectors.findings import Severity
from offsite.registry.models import DeviceKind, Registry, RiskTier

_NAME = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"
TIERS: tuple[RiskTier, ...] = ("A", "B", "C", "D")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierPolicy(_Strict):
    """How a subject's risk tier tightens a rule. Subjects of tiers A and B (the registry's
    default) are judged as written, since the written set points are the standard's; with
    k = 1 for C and 2 for D:

        threshold' = threshold - s * |threshold - baseline| * threshold_step * k
        confirm'   = confirm * max(0, 1 - confirm_step * k)

    where s = +1 for rules that fire above their threshold and -1 for those that fire below,
    and `baseline` is the rule's neutral value (0 for absolute levels, 1 for factors of a
    rated value), so that only the margin to it shrinks. With the defaults a D subject's
    thresholds sit 15 % closer to the neutral value and its confirmations are 40 % as long
    as written."""

    threshold_step: float = Field(0.075, ge=0.0, le=0.45)
    confirm_step: float = Field(0.3, ge=0.0, le=0.5)


class _Rule(_Strict):
    name: str = Field(pattern=_NAME, description="stable rule name, part of every clue's key")
    title: str = Field(min_length=1, description="what a duty officer reads")
    severity: Severity
    applies_to: tuple[DeviceKind | Literal["*"], ...] = Field(
        min_length=1, description="device kinds of the registry; '*' for every device"
    )
    source: str = Field(
        min_length=1, description="standard and clause the threshold comes from, or why not"
    )
    confirm_s: float = Field(0.0, ge=0.0, description="condition held this long opens")
    clear_s: float = Field(0.0, ge=0.0, description="condition gone this long clears")
    tier_tightens: bool = Field(True, description="the subject's risk tier tightens it")
    enabled: bool = True


class LevelRule(_Rule):
    """A value at or beyond a threshold (above, or below for `direction = "below"`),
    with hysteresis on clearing: the GB/T 50493 alarm shape."""

    kind: Literal["level"]
    field: str = Field(description="reading field, or 'clock_skew_s' (ts minus receive time)")
    direction: Literal["above", "below"] = "above"
    threshold: float = Field(
        description="the level; a factor of the rated value when threshold_field or "
        "threshold_attribute is set"
    )
    threshold_field: str | None = Field(
        None, description="rated value carried in the reading, preferred when present"
    )
    threshold_attribute: str | None = Field(
        None, description="rated value from the device's registry attributes"
    )
    baseline: float = Field(0.0, description="neutral value tier tightening moves towards")
    hysteresis: float = Field(0.0, ge=0.0, description="in the field's unit")
    update_step: float = Field(
        1.0, gt=0.0, description="an open episode reports a new peak past this much"
    )


Op = Literal[">=", ">", "<=", "<", "==", "!="]


class Clause(_Strict):
    """`field op value`, or `field op factor * attribute` with the device's attribute (and
    `default` when the device has none)."""

    field: str
    op: Op
    value: float | None = None
    attribute: str | None = None
    factor: float = 1.0
    default: float | None = None

    @model_validator(mode="after")
    def _one_side(self) -> Self:
        if (self.value is None) == (self.attribute is None):
            raise ValueError("a clause compares with exactly one of value or attribute")
        return self


class ConditionRule(_Rule):
    """A state of the equipment held past a confirmation delay: true when every clause of
    `all` holds and, if `any` is given, at least one of it. A reading lacking a field the
    rule names does not count for it."""

    kind: Literal["condition"]
    all: tuple[Clause, ...] = ()
    any: tuple[Clause, ...] = ()
    report_field: str | None = Field(None, description="field whose value a finding carries")

    @model_validator(mode="after")
    def _some_clause(self) -> Self:
        if not self.all and not self.any:
            raise ValueError("a condition needs at least one clause")
        return self


class RateRule(_Rule):
    """Rising rate: (value now - oldest value within the window) / time between them, per
    minute, judged once the window holds at least `min_span_s` of readings."""

    kind: Literal["rate"]
    field: str
    rise_per_min: float = Field(gt=0.0)
    window_s: float = Field(gt=0.0, le=3_600.0)
    min_span_s: float = Field(gt=0.0)
    hysteresis: float = Field(0.0, ge=0.0)
    update_step: float = Field(1.0, gt=0.0)

    @model_validator(mode="after")
    def _span_in_window(self) -> Self:
        if self.min_span_s > self.window_s:
            raise ValueError("min_span_s must not exceed window_s")
        return self


class StuckRule(_Rule):
    """A flat line: the same value for at least `min_readings` readings spanning at least
    `min_duration_s`, while the value is one that should fluctuate (`min_value`)."""

    kind: Literal["stuck"]
    field: str
    min_readings: int = Field(ge=2)
    min_duration_s: float = Field(ge=0.0)
    min_value: float | None = Field(
        None, description="values below are allowed to be flat (a clean-air sensor reads 0)"
    )


class SeqGapRule(_Rule):
    """Readings lost upstream: a sequence number more than one past the previous one. A
    smaller number is a device restart, not a gap."""

    kind: Literal["seq_gap"]
    min_missing: int = Field(1, ge=1)


class FlappingRule(_Rule):
    """Online/offline flapping, judged by `FlappingDetector` from status changes."""

    kind: Literal["flapping"]
    offline_transitions: int = Field(ge=2)
    window_s: float = Field(gt=0.0)


Rule = Annotated[
    LevelRule | ConditionRule | RateRule | StuckRule | SeqGapRule | FlappingRule,
    Field(discriminator="kind"),
]


class RulePack(_Strict):
    name: str = Field(pattern=_NAME)
    version: str = Field(min_length=1, description="recorded with the findings it produces")
    description: str = ""
    tiers: TierPolicy = TierPolicy()
    rules: tuple[Rule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError(f"pack {self.name!r} names a rule twice")
        return self


class Override(_Strict):
    """Changed parameters of one rule for one device or every device of one subject.
    `threshold` is the level of level rules (a factor where the pack's is one), the rise
    per minute of rate rules and the missing count of sequence gaps; conditions and flat
    lines have none (change them with `retune` or a pack of their own)."""

    rule: str
    device_id: str | None = None
    subject_id: str | None = None
    threshold: float | None = None
    confirm_s: float | None = Field(None, ge=0.0)
    clear_s: float | None = Field(None, ge=0.0)
    hysteresis: float | None = Field(None, ge=0.0)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.device_id is None) == (self.subject_id is None):
            raise ValueError("an override names exactly one of device_id or subject_id")
        return self


class _OverrideFile(_Strict):
    overrides: tuple[Override, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """What the engine needs to know of a registered device."""

    id: str
    kind: str | None
    subject_id: str | None = None
    risk_tier: RiskTier = "A"
    attributes: dict[str, float | int | str | bool] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        device_id: str,
        kind: str | None,
        subject_id: str | None,
        risk_tier: str,
        attributes: Mapping[str, Any],
    ) -> DeviceProfile:
        """From untyped registry rows (the database's `devices` joined with `subjects`)."""
        if risk_tier not in TIERS:
            raise ValueError(f"device {device_id!r}: unknown risk tier {risk_tier!r}")
        tier: RiskTier = risk_tier
        return cls(device_id, kind, subject_id, tier, dict(attributes))


def profiles_from_registry(registry: Registry) -> list[DeviceProfile]:
    tiers = {s.id: s.risk_tier for s in registry.subjects}
    return [
        DeviceProfile(d.id, d.kind, d.subject_id, tiers.get(d.subject_id, "A"), dict(d.attributes))
        for d in registry.devices
    ]


@dataclass(frozen=True, slots=True)
class Params:
    """One rule's resolved parameters for one device."""

    enabled: bool
    threshold: float
    confirm_s: float
    clear_s: float
    hysteresis: float


def applies(rule: _Rule, kind: str | None) -> bool:
    return "*" in rule.applies_to or (kind is not None and kind in rule.applies_to)


def resolve(
    rule: Rule, policy: TierPolicy, device: DeviceProfile, overrides: Sequence[Override]
) -> Params:
    """The rule's parameters for this device (module docstring: pack, tier, overrides)."""
    threshold = _base_threshold(rule)
    hysteresis = getattr(rule, "hysteresis", 0.0)
    confirm = rule.confirm_s
    if rule.tier_tightens:
        k = max(0, TIERS.index(device.risk_tier) - 1)  # A and B as written
        if isinstance(rule, LevelRule):
            sign = 1.0 if rule.direction == "above" else -1.0
            margin = abs(threshold - rule.baseline)
            threshold -= sign * margin * policy.threshold_step * k
        elif isinstance(rule, RateRule):
            threshold -= threshold * policy.threshold_step * k
        confirm *= max(0.0, 1.0 - policy.confirm_step * k)
    params = Params(rule.enabled, threshold, confirm, rule.clear_s, hysteresis)
    for o in overrides:
        if o.rule == rule.name and o.subject_id is not None and o.subject_id == device.subject_id:
            params = _apply(params, o)
    for o in overrides:
        if o.rule == rule.name and o.device_id == device.id:
            params = _apply(params, o)
    if not applies(rule, device.kind):
        params = _apply(params, Override(rule=rule.name, device_id=device.id, enabled=False))
    return params


def _base_threshold(rule: Rule) -> float:
    if isinstance(rule, LevelRule):
        return rule.threshold
    if isinstance(rule, RateRule):
        return rule.rise_per_min
    if isinstance(rule, SeqGapRule):
        return float(rule.min_missing)
    return 0.5  # conditions and flat lines are 0/1


def _apply(params: Params, o: Override) -> Params:
    return Params(
        params.enabled if o.enabled is None else o.enabled,
        params.threshold if o.threshold is None else o.threshold,
        params.confirm_s if o.confirm_s is None else o.confirm_s,
        params.clear_s if o.clear_s is None else o.clear_s,
        params.hysteresis if o.hysteresis is None else o.hysteresis,
    )


def load_pack(source: str | Path) -> RulePack:
    """A pack from a TOML file, or a built-in pack by name ('gas', 'elevator', ...)."""
    if isinstance(source, str) and "/" not in source and not source.endswith(".toml"):
        text = resources.files("offsite.detectors.packs").joinpath(f"{source}.toml").read_text()
    else:
        text = Path(source).read_text(encoding="utf-8")
    return RulePack.model_validate(tomllib.loads(text))


BUILTIN_PACKS = ("gas", "elevator", "boiler", "crane", "health")


def builtin_packs() -> list[RulePack]:
    return [load_pack(name) for name in BUILTIN_PACKS]


def load_overrides(path: str | Path) -> tuple[Override, ...]:
    """Overrides from a TOML file with `[[overrides]]` tables."""
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    return _OverrideFile.model_validate(data).overrides


def retune(pack: RulePack, rule_name: str, **changes: object) -> RulePack:
    """The pack with one rule's fields changed (validated like the file), for trying a
    threshold on every device before writing it into a pack."""
    rules = []
    found = False
    for rule in pack.rules:
        if rule.name == rule_name:
            found = True
            rule = type(rule).model_validate({**rule.model_dump(), **changes})  # noqa: PLW2901
        rules.append(rule)
    if not found:
        raise KeyError(f"pack {pack.name!r} has no rule {rule_name!r}")
    return pack.model_copy(update={"rules": tuple(rules)})


def check_overrides(packs: Iterable[RulePack], overrides: Iterable[Override]) -> None:
    """Refuse overrides that would silently do nothing: an unknown rule (a typo), or a
    threshold for a rule kind that has none."""
    rules = {r.name: r for p in packs for r in p.rules}
    problems: list[str] = []
    for o in overrides:
        rule = rules.get(o.rule)
        if rule is None:
            problems.append(f"override names unknown rule {o.rule!r}")
        elif o.threshold is not None and isinstance(rule, ConditionRule | StuckRule):
            problems.append(f"rule {o.rule!r} has no threshold to override")
    if problems:
        raise ValueError("; ".join(problems))


def find_rule(packs: Iterable[RulePack], name: str) -> tuple[RulePack, Rule]:
    for pack in packs:
        for rule in pack.rules:
            if rule.name == name:
                return pack, rule
    raise KeyError(f"no rule named {name!r}")
