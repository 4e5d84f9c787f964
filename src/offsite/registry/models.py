"""Registry file models: validated once when a registry file is loaded."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from offsite.detectors.video.config import CameraVideoConfig

Domain = Literal["gas", "equipment", "video"]
DeviceKind = Literal["gas_detector", "elevator", "boiler", "pressure_vessel", "crane", "camera"]
RiskTier = Literal["A", "B", "C", "D"]
"""Credit classification (信用風險分類): A lowest risk, D highest."""

_KINDS_BY_DOMAIN: dict[str, set[str]] = {
    "gas": {"gas_detector"},
    "equipment": {"elevator", "boiler", "pressure_vessel", "crane"},
    "video": {"camera"},
}

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Department(_Strict):
    id: str = Field(pattern=_ID, description="short stable id, e.g. 'housing'")
    name: str = Field(min_length=1, description="English name")
    name_zh: str = Field("", description="official Chinese name")


class Matter(_Strict):
    """One line of the cross-department supervision matters list (重點事項清單)."""

    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    domain: Domain | None = Field(
        None, description="device streams this matter covers; None: clues from outside channels"
    )
    lead_department: str = Field(description="department that leads (牽頭部門)")
    cooperating_departments: tuple[str, ...] = Field(
        (), description="departments that cooperate (配合部門) and are notified"
    )
    legal_basis: tuple[str, ...] = Field(min_length=1, description="laws, regulations, standards")
    object_type: str = Field(description="what is supervised: sites, equipment, ...")
    inspection_method: str = Field(description="how it is checked, e.g. 非現場 + 雙隨機")


class Subject(_Strict):
    """A supervised object (監管對象): an enterprise, a site or a piece of equipment."""

    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    kind: Literal["enterprise", "site", "equipment"]
    address: str = ""
    tags: tuple[str, ...] = ()
    risk_tier: RiskTier = "B"


class Device(_Strict):
    id: str = Field(pattern=_ID, description="the {device_id} of its MQTT topics")
    domain: Domain
    kind: DeviceKind
    subject_id: str
    matter_id: str | None = Field(
        None, description="matter it is supervised under; default: the one matter of its domain"
    )
    model: str = ""
    expected_interval_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="how often it reports; silence and flooding are judged against it",
    )
    attributes: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="rated speed, rated pressure, ... by kind"
    )
    video: CameraVideoConfig | None = Field(
        None, description="cameras: zones and detection settings (`[devices.video]`)"
    )

    def stored_attributes(self) -> dict[str, Any]:
        """The attributes as the database keeps them, a camera's `video` table included."""
        if self.video is None:
            return dict(self.attributes)
        return {**self.attributes, "video": self.video.model_dump(mode="json", exclude_unset=True)}

    @model_validator(mode="after")
    def _kind_fits_domain(self) -> Self:
        if self.kind not in _KINDS_BY_DOMAIN[self.domain]:
            raise ValueError(f"kind {self.kind!r} does not belong to domain {self.domain!r}")
        if self.video is not None:
            if self.kind != "camera":
                raise ValueError(f"device {self.id!r}: only a camera has a 'video' table")
            if "video" in self.attributes:
                raise ValueError(f"camera {self.id!r}: 'video' given twice (table and attribute)")
        if self.kind == "camera" and "video" in self.attributes:
            # A typo in a zone or a threshold is refused at load, not found at run time.
            try:
                CameraVideoConfig.from_attributes(self.attributes)
            except ValueError as exc:
                raise ValueError(f"camera {self.id!r}: attribute 'video': {exc}") from None
        return self


class Inspector(_Strict):
    """A law-enforcement inspector on the roster random inspections draw from."""

    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    department: str
    qualified_matters: tuple[str, ...] = Field(
        (), description="matters this inspector holds the qualification for"
    )


class Registry(_Strict):
    """A whole registry file; `version` is recorded with every load."""

    version: str = Field(min_length=1)
    departments: tuple[Department, ...]
    matters: tuple[Matter, ...]
    subjects: tuple[Subject, ...] = ()
    devices: tuple[Device, ...] = ()
    inspectors: tuple[Inspector, ...] = ()

    @model_validator(mode="after")
    def _references_resolve(self) -> Self:
        problems: list[str] = []
        for label, items in (
            ("department", self.departments),
            ("matter", self.matters),
            ("subject", self.subjects),
            ("device", self.devices),
            ("inspector", self.inspectors),
        ):
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    problems.append(f"duplicate {label} id {item.id!r}")
                seen.add(item.id)
        departments = {d.id for d in self.departments}
        for matter in self.matters:
            for dep in (matter.lead_department, *matter.cooperating_departments):
                if dep not in departments:
                    problems.append(f"matter {matter.id!r} names unknown department {dep!r}")
        matters = {m.id for m in self.matters}
        for inspector in self.inspectors:
            if inspector.department not in departments:
                problems.append(
                    f"inspector {inspector.id!r} names unknown department {inspector.department!r}"
                )
            for matter_id in inspector.qualified_matters:
                if matter_id not in matters:
                    problems.append(
                        f"inspector {inspector.id!r} names unknown matter {matter_id!r}"
                    )
        subjects = {s.id for s in self.subjects}
        for device in self.devices:
            if device.subject_id not in subjects:
                problems.append(f"device {device.id!r} names unknown subject {device.subject_id!r}")
        for device in self.devices:
            try:
                self.matter_for(device)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def matter_for(self, device: Device) -> Matter:
        """The matter a device's findings are routed under."""
        if device.matter_id is not None:
            for matter in self.matters:
                if matter.id == device.matter_id:
                    return matter
            raise ValueError(f"device {device.id!r} names unknown matter {device.matter_id!r}")
        candidates = [m for m in self.matters if m.domain == device.domain]
        if len(candidates) != 1:
            raise ValueError(
                f"device {device.id!r}: {len(candidates)} matters cover domain "
                f"{device.domain!r}; name one with matter_id"
            )
        return candidates[0]
