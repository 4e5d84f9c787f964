"""A camera's video-detection settings, from the registry.

In the registry file a camera carries them as its `video` table (`[devices.video]`, zones as
`[[devices.video.zones]]`); in the database they sit in the device's attributes under `video`,
as a JSON object (`CameraVideoConfig.from_attributes`). A JSON string under the attribute
`video`, the older spelling, is still read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ZONE_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class _Strict(BaseModel):
    # A misspelt threshold would silently keep its default: refuse unknown fields instead.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Zone(_Strict):
    """An area of the image in which presence (and optionally motion) is judged."""

    name: str = Field(
        pattern=_ZONE_NAME, description="part of the rule name: video.presence.{name}"
    )
    polygon: tuple[tuple[float, float], ...] = Field(
        min_length=3,
        description="vertices (x, y) in normalised image coordinates, 0..1 from the top left",
    )
    presence: bool = Field(True, description="report people or objects present in the zone")
    motion: bool = Field(False, description="also report motion (frame-to-frame change)")
    min_area: float = Field(
        0.004,
        gt=0,
        le=1,
        description="foreground inside the zone, as a fraction of the whole image, that counts",
    )

    @field_validator("polygon")
    @classmethod
    def _inside_the_image(
        cls, value: tuple[tuple[float, float], ...]
    ) -> tuple[tuple[float, float], ...]:
        for x, y in value:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(f"vertex ({x}, {y}) is outside 0..1")
        return value


WHOLE_VIEW = Zone(name="view", polygon=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)))


class CameraVideoConfig(_Strict):
    """Per-camera detection settings; every duration is in seconds of event time."""

    zones: tuple[Zone, ...] = Field(
        (WHOLE_VIEW,), description="presence and motion zones; default: the whole view"
    )
    decode_scale: Literal[2, 4, 8] = Field(
        8,
        description="JPEG decoded at 1/scale in grey (libjpeg DCT scaling): cheaper, enough;"
        " at 1/8 only the DC coefficient is used, so no inverse transform is left",
    )
    max_analysis_width: int = Field(
        256, ge=32, le=1024, description="wider decoded frames are shrunk to this width"
    )
    warmup_s: float = Field(1.0, ge=0, description="background and references learnt first")
    # Presence
    foreground_threshold: int = Field(
        22, ge=1, le=255, description="grey-level difference from the background that is foreground"
    )
    background_tau_s: float = Field(
        20.0, gt=0, description="time constant of the background where nothing is in front"
    )
    absorb_tau_s: float = Field(
        300.0,
        gt=0,
        description="time constant at which a still foreground object joins the background:"
        " long, so that a person standing still stays present",
    )
    presence_confirm_s: float = Field(0.5, ge=0)
    presence_clear_s: float = Field(2.0, ge=0)
    # Global change (lights, IR switch, sun)
    global_gain: float = Field(
        0.2, gt=0, description="relative step of brightness from one frame to the next"
    )
    global_fraction: float = Field(
        0.6, gt=0, le=1, description="fraction of the image changed at once that is global"
    )
    global_settle_s: float = Field(3.0, ge=0, description="quiet time that ends a global change")
    # Tamper
    cover_std: float = Field(
        5.0, ge=0, description="grey-level standard deviation below which the view is covered"
    )
    defocus_ratio: float = Field(
        0.45, gt=0, lt=1, description="sharpness below this fraction of the learnt one: defocused"
    )
    move_fraction: float = Field(
        0.03, gt=0, lt=1, description="image shift, as a fraction of the width, that is a move"
    )
    freeze_mad: float = Field(
        0.05, ge=0, description="mean absolute grey difference below which frames are identical"
    )
    tamper_confirm_s: float = Field(1.0, ge=0)
    tamper_clear_s: float = Field(2.0, ge=0)
    freeze_s: float = Field(1.0, gt=0, description="identical frames for this long: frozen")
    offline_s: float = Field(10.0, gt=0, description="no frame for this long: camera offline")
    relearn_s: float = Field(
        600.0, gt=0, description="a moved view held this long becomes the new reference"
    )

    @model_validator(mode="after")
    def _zone_names_unique(self) -> Self:
        names = [zone.name for zone in self.zones]
        if len(names) != len(set(names)):
            raise ValueError("zone names must be unique: they are part of the rule name")
        return self

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> Self:
        """From a stored device's attributes: the object under `video` (or the same as a
        JSON string), defaults without it."""
        raw = attributes.get("video")
        if raw is None:
            return cls()
        if isinstance(raw, str):
            raw = json.loads(raw)
        if not isinstance(raw, dict):
            raise ValueError("attribute 'video' must be an object")
        return cls.model_validate(raw)
