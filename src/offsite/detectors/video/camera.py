"""One camera's detectors: presence and motion in zones, global changes, tamper, offline.

Every frame is judged at a small size in grey (decoded at 1/8 by default: a 768x432 camera is
seen at 96x54, where every rule meets the quality tests with the same delays as at 1/4):

- Presence: a background model (running average) with *selective* update. Pixels that differ
  from it are foreground; they are absorbed into the background only with a long time
  constant (`absorb_tau_s`), so a person who stands still stays foreground, while the rest
  of the background follows slow light drift (`background_tau_s`). Before comparing, the
  background is scaled by the frame's brightness gain (measured over the pixels that were
  background in the last frame, so a person in view does not sway it), so auto exposure
  and slow dimming do not read as presence.
- Global change: brightness stepping by more than `global_gain` from one frame to the next,
  or most of the view changed at once (lights, IR switch), is its own episode
  `video.global_change`; the background restarts from the new view and presence is held
  (neither opened nor cleared) until the view settles.
- Tamper, each its own rule: `covered` (almost no contrast left), `defocused` (sharpness,
  the Laplacian's standard deviation over the image's, below a fraction of the learnt one,
  so dimming alone does not look like blur), `moved` (phase correlation against a learnt
  reference view finds a shift), `frozen` (successive frames identical). While any of them
  holds, learning stops and presence is held.
- Offline: `sweep(now)` on the gateway's clock, like `detectors/silence.py`.

Episode state (and the small learnt references) survive a restart through `snapshot()` and
`restore()`; the background model does not, it is relearnt within `warmup_s`.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from offsite.detectors.findings import Finding
from offsite.detectors.video.config import CameraVideoConfig
from offsite.detectors.video.decode import decode_reduced
from offsite.detectors.video.episodes import Episode

TAMPER_RULES: Final = (
    "video.tamper.covered",
    "video.tamper.defocused",
    "video.tamper.moved",
    "video.tamper.frozen",
)
OFFLINE_RULE: Final = "video.offline"
GLOBAL_RULE: Final = "video.global_change"

_KERNEL: Final = np.ones((3, 3), np.uint8)
_SHARPNESS_TAU_S: Final = 30.0
_REFERENCE_TAU_S: Final = 60.0
_JUMP_RESPONSE: Final = 0.3
"""Phase-correlation peak that makes a jump credible; measured moves score 0.4 to 1."""
_UNBACKED_S: Final = 10.0
_EMPTY_VIEW: Final = 0.002
_FIT: Final = 10.0
_MARGIN: Final = 8.0
"""A pixel counts for a hypothesis that fits it within _FIT grey levels while the other
misses it by _MARGIN more; pixels neither fits (a person) count for none."""
_DECISIVE: Final = 0.01
_LEARN_EVERY_S: Final = 0.2
"""The background and the references follow the view with time constants of 20 s and more:
updated five times a second they follow it as closely as at every frame, for less."""
_SHARPNESS_EVERY_S: Final = 0.2
_STILL_MAD: Final = 1.0
"""Mean grey difference between successive frames below which no jump is looked for; a
move of `move_fraction` changes frames of the test clips by 4 to 30 levels."""


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a microsecond a frame to build
class FrameStats:
    """What the detector measured on the last frame: for tuning and for evidence notes."""

    mean: float
    std: float
    sharpness: float
    """Measured five times a second (`_SHARPNESS_EVERY_S`): the last measure."""
    sharpness_ref: float
    shift_px: float
    shift_verdict: int
    """+1: the shifted reference fits the view better, -1: the one in place does, 0: neither."""
    gain: float
    """An identical frame (`freeze_mad`) is not measured and repeats the last gain."""
    changed_fraction: float
    frame_mad: float
    foreground: dict[str, float]


def _mask(image: object) -> NDArray[np.uint8]:
    # OpenCV's stubs type results by the union of every depth; a threshold of a uint8 image
    # is uint8.
    return cast("NDArray[np.uint8]", image)


def _dft_crop(image: NDArray[np.float32]) -> NDArray[np.float32]:
    """The middle of the image, each side a multiple of 8, for the phase correlation: its
    transforms are a quarter cheaper than at 27 rows, the rows dropped are those its Hanning
    window weighs at nearly nothing, and at an odd size OpenCV reads a still view as half a
    pixel off (measured on the test clips: dy 0.5 at 27 rows, 0.0 at 24)."""
    h, w = image.shape
    top, left = (h % 8) // 2, (w % 8) // 2
    return image[top : top + h - h % 8, left : left + w - w % 8]


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


class CameraDetector:
    """All video rules for one camera. Frames must come in event-time order; a frame not
    newer than the last one is a replay and ignored."""

    def __init__(self, camera_id: str, config: CameraVideoConfig) -> None:
        self.camera_id = camera_id
        self.config = config
        c = config
        confirm, clear = _seconds(c.tamper_confirm_s), _seconds(c.tamper_clear_s)
        self._covered = Episode(
            TAMPER_RULES[0], "orange", "Camera covered or blacked out", confirm, clear
        )
        self._defocused = Episode(TAMPER_RULES[1], "yellow", "Camera defocused", confirm, clear)
        self._moved = Episode(
            TAMPER_RULES[2], "orange", "Camera moved off its view", confirm, clear
        )
        # One changed frame proves the stream live again; a still scene repeats frames
        # now and then, which must not keep a frozen episode open.
        self._frozen = Episode(
            TAMPER_RULES[3], "orange", "Camera image frozen", _seconds(c.freeze_s), timedelta(0)
        )
        self._global = Episode(
            GLOBAL_RULE,
            "blue",
            "Global change of the view (lights, IR switch)",
            timedelta(0),
            _seconds(c.global_settle_s),
        )
        self._offline = Episode(
            OFFLINE_RULE, "yellow", "Camera offline", timedelta(0), timedelta(0)
        )
        self._presence = {
            z.name: Episode(
                f"video.presence.{z.name}",
                "blue",
                f"Presence in zone {z.name}",
                _seconds(c.presence_confirm_s),
                _seconds(c.presence_clear_s),
            )
            for z in c.zones
            if z.presence
        }
        self._motion = {
            z.name: Episode(
                f"video.motion.{z.name}",
                "blue",
                f"Motion in zone {z.name}",
                timedelta(0),
                _seconds(c.presence_clear_s),
            )
            for z in c.zones
            if z.motion
        }
        self._tamper = (self._covered, self._defocused, self._moved, self._frozen)
        self.last_ts: datetime | None = None
        self.last_seen: datetime | None = None
        self._first_ts: datetime | None = None
        self._prev: NDArray[np.uint8] | None = None
        self._prev_jpeg: bytes | None = None
        self._background: NDArray[np.float32] | None = None
        self._background_mask: NDArray[np.uint8] | None = None
        self._learn_dt = 0.0
        self._sharpness_last = 0.0
        self._sharpness_dt = math.inf
        self._background_u8: NDArray[np.uint8] | None = None
        self._reference: NDArray[np.float32] | None = None
        self._sharpness_ref = 0.0
        self._prev_gain = 1.0
        self._last_gain = 1.0
        self._zone_masks: dict[str, tuple[NDArray[np.uint8], bool]] = {}
        self._window: NDArray[np.float32] | None = None
        self._small_of: NDArray[np.uint8] | None = None
        self._small_last: NDArray[np.float32] | None = None
        self._prev_std = 0.0
        self._offset = (0.0, 0.0)
        self._backed_at: datetime | None = None
        self._jumped_at: datetime | None = None
        self._pending_jump: tuple[float, float] | None = None
        self._hold_until: datetime | None = None
        self.stats: FrameStats | None = None

    # -- input -------------------------------------------------------------------------------

    def feed_jpeg(
        self, ts: datetime, jpeg: bytes, received_at: datetime | None = None
    ) -> list[Finding]:
        """Decode at reduced size and judge; byte-identical payloads skip the decode."""
        if self._prev is not None and jpeg == self._prev_jpeg:
            frame = self._prev
        else:
            frame = decode_reduced(jpeg, self.config.decode_scale)
        self._prev_jpeg = jpeg
        return self.feed(ts, frame, received_at)

    def feed(
        self, ts: datetime, frame: NDArray[np.uint8], received_at: datetime | None = None
    ) -> list[Finding]:
        """Judge one grey frame (any size; shrunk to the analysis width)."""
        if self.last_ts is not None and ts <= self.last_ts:
            return []
        out: list[Finding] = []
        seen = received_at or ts
        self.last_seen = seen if self.last_seen is None else max(self.last_seen, seen)
        if self._offline.active:
            self._emit(out, self._offline.end(self.camera_id, ts))
        dt = 0.0 if self.last_ts is None else (ts - self.last_ts).total_seconds()
        self.last_ts = ts
        if self._first_ts is None:
            self._first_ts = ts
        gray = self._analysis_size(frame)
        prev = self._prev if self._prev is not None and self._prev.shape == gray.shape else None
        self._prev = gray
        if prev is None or self._background is None:
            self._learn_afresh(gray)
            return out
        self._judge(ts, dt, gray, prev, out)
        return out

    def sweep(self, now: datetime) -> list[Finding]:
        """Open `video.offline` when no frame has arrived for `offline_s` (gateway clock)."""
        if self.last_seen is None or self._offline.active:
            return []
        silent = (now - self.last_seen).total_seconds()
        if silent <= self.config.offline_s:
            return []
        self._offline.details = {"silent_s": silent}
        # The episode starts at the last frame seen, which is when the camera went quiet.
        self._offline.since = self.last_seen
        finding = self._offline.step(self.camera_id, now, True, silent)
        return [] if finding is None else [finding]

    # -- judgement ---------------------------------------------------------------------------

    def _judge(
        self,
        ts: datetime,
        dt: float,
        gray: NDArray[np.uint8],
        prev: NDArray[np.uint8],
        out: list[Finding],
    ) -> None:
        c = self.config
        mad = float(cv2.norm(gray, prev, cv2.NORM_L1)) / gray.size
        mean_std = cv2.meanStdDev(gray)
        mean, std = float(mean_std[0][0][0]), float(mean_std[1][0][0])
        self._sharpness_dt += dt
        if self._sharpness_dt >= _SHARPNESS_EVERY_S:
            # The Laplacian is the dearest of the per-frame measures, and a defocus has a
            # second to be confirmed: five measures a second are plenty.
            self._sharpness_last = self._sharpness(gray, std)
            self._sharpness_dt = 0.0
        sharpness = self._sharpness_last
        steady = std >= c.cover_std and self._prev_std >= c.cover_std
        self._prev_std = std
        identical = mad <= c.freeze_mad
        # The scene needs the gain; an identical frame skips it, and the shift only needs
        # it once the camera is believed moved.
        gain = None if identical else self._gain(gray)
        shift, verdict = self._shift(ts, gray, prev, steady, mad < _STILL_MAD, gain)
        if gain is None:
            gain = self._last_gain
        self._last_gain = gain
        warming = self._first_ts is not None and (ts - self._first_ts).total_seconds() < c.warmup_s
        suspect = self._step_tamper(ts, gray, mad, std, sharpness, shift, warming, out)
        foreground: dict[str, float] = {}
        changed = 0.0
        tampered = self._covered.active or self._defocused.active or self._moved.active
        if suspect or tampered or self._frozen.active:
            # Learning from a tampered view would teach the models the tamper.
            self._hold_until = ts + _seconds(c.tamper_clear_s)
        elif not identical:  # an identical frame says nothing new
            changed, foreground = self._step_scene(
                ts, dt, gray, prev, gain, sharpness, warming, out
            )
        self.stats = FrameStats(
            mean,
            std,
            sharpness,
            self._sharpness_ref,
            shift,
            verdict,
            gain,
            changed,
            mad,
            foreground,
        )

    def _step_tamper(
        self,
        ts: datetime,
        gray: NDArray[np.uint8],
        mad: float,
        std: float,
        sharpness: float,
        shift: float,
        warming: bool,
        out: list[Finding],
    ) -> bool:
        """Step the tamper episodes; True while the view looks tampered (frozen aside)."""
        c = self.config
        covered = std < c.cover_std
        ratio = sharpness / self._sharpness_ref if self._sharpness_ref > 0 else 1.0
        defocused = not covered and ratio < c.defocus_ratio
        width = gray.shape[1]
        moved = not covered and not defocused and shift >= c.move_fraction * width
        since = self._moved.since
        if self._moved.active and since is not None and ts - since >= _seconds(c.relearn_s):
            # Long enough to be the camera's new normal view: take it as the reference.
            self._reference = self._small(gray).copy()
            self._offset = (0.0, 0.0)
            moved = False
        if not warming:
            cid = self.camera_id
            frozen = mad <= c.freeze_mad
            self._emit(out, self._frozen.step(cid, ts, frozen, mad, {"mad": mad}))
            self._emit(out, self._covered.step(cid, ts, covered, std, {"std": std}))
            details: dict[str, float | str | None] = {"sharpness_ratio": ratio}
            self._emit(out, self._defocused.step(cid, ts, defocused, ratio, details))
            fraction = shift / width
            details = {"shift_fraction": fraction}
            self._emit(out, self._moved.step(cid, ts, moved, fraction, details))
        return covered or defocused or moved

    def _step_scene(
        self,
        ts: datetime,
        dt: float,
        gray: NDArray[np.uint8],
        prev: NDArray[np.uint8],
        gain: float,
        sharpness: float,
        warming: bool,
        out: list[Finding],
    ) -> tuple[float, dict[str, float]]:
        """Global change, then presence and motion; returns the changed fraction and the
        foreground area per zone."""
        c = self.config
        assert self._background is not None
        background = cv2.convertScaleAbs(self._background, alpha=gain)
        diff = cv2.absdiff(gray, background)
        mask = _mask(cv2.threshold(diff, c.foreground_threshold, 255, cv2.THRESH_BINARY)[1])
        changed = cv2.countNonZero(mask) / mask.size
        # From one frame to the next: a switch is a step, while auto exposure (a white car
        # driving in) and daylight move the gain a few per cent a frame.
        jump = abs(gain / self._prev_gain - 1.0)
        self._prev_gain = gain
        global_change = jump > c.global_gain or changed > c.global_fraction
        if not warming:
            details: dict[str, float | str | None] = {"gain": gain}
            self._emit(out, self._global.step(self.camera_id, ts, global_change, changed, details))
        if global_change:
            self._learn_afresh(gray)
            self._hold_until = ts + _seconds(c.global_settle_s)
            return changed, {}
        # Every frame says which pixels are background, for the next frame's gain.
        self._background_mask = _mask(cv2.bitwise_not(mask))
        self._learn_dt += dt
        if self._learn_dt >= _LEARN_EVERY_S:
            self._learn(self._learn_dt, gray, gain, mask, sharpness)
            self._learn_dt = 0.0
        return changed, self._zones(gray, prev, ts, warming, mask, out)

    def _zones(
        self,
        gray: NDArray[np.uint8],
        prev: NDArray[np.uint8],
        ts: datetime,
        warming: bool,
        mask: NDArray[np.uint8],
        out: list[Finding],
    ) -> dict[str, float]:
        c = self.config
        # Speckle (sensor noise, JPEG blocks) is not a person: open the mask first.
        blobs = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _KERNEL)
        moving: NDArray[np.uint8] | None = None
        if self._motion:
            change = cv2.absdiff(gray, prev)
            moving = _mask(cv2.threshold(change, c.foreground_threshold, 255, cv2.THRESH_BINARY)[1])
        held = warming or (self._hold_until is not None and ts < self._hold_until)
        area: dict[str, float] = {}
        for zone in c.zones:
            zone_mask, whole = self._zone_mask(zone.name, zone.polygon, gray.shape)
            inside = blobs if whole else cv2.bitwise_and(blobs, zone_mask)
            fraction = cv2.countNonZero(inside) / inside.size
            area[zone.name] = fraction
            if held:
                continue
            if zone.presence:
                present = fraction >= zone.min_area
                details: dict[str, float | str | None] = {"zone": zone.name, "area": fraction}
                self._emit(
                    out,
                    self._presence[zone.name].step(self.camera_id, ts, present, fraction, details),
                )
            if zone.motion and moving is not None:
                inside_moving = moving if whole else cv2.bitwise_and(moving, zone_mask)
                moved = cv2.countNonZero(inside_moving) / inside_moving.size
                self._emit(
                    out,
                    self._motion[zone.name].step(
                        self.camera_id, ts, moved >= zone.min_area, moved, {"zone": zone.name}
                    ),
                )
        return area

    # -- models ------------------------------------------------------------------------------

    def _learn_afresh(self, gray: NDArray[np.uint8]) -> None:
        self._background = gray.astype(np.float32)
        self._background_mask = None
        self._learn_dt = 0.0
        self._sharpness_dt = math.inf  # a new view: measure it on the next frame
        self._background_u8 = gray
        self._prev_gain = 1.0
        if self._reference is None or self._reference.shape != self._small(gray).shape:
            self._reference = self._small(gray).copy()  # learnt in place
        if self._sharpness_ref <= 0:
            self._sharpness_ref = self._sharpness(gray, float(cv2.meanStdDev(gray)[1][0][0]))

    def _learn(
        self,
        dt: float,
        gray: NDArray[np.uint8],
        gain: float,
        mask: NDArray[np.uint8],
        sharpness: float,
    ) -> None:
        c = self.config
        assert self._background is not None
        assert self._reference is not None
        # Learnt at the background's own exposure: the gain explains exposure, so when the
        # exposure swings back, pixels hidden by a person meanwhile still match.
        level = gray.astype(np.float32)
        level *= np.float32(1.0 / gain)
        assert self._background_mask is not None
        cv2.accumulateWeighted(
            level, self._background, min(1.0, dt / c.background_tau_s), self._background_mask
        )
        cv2.accumulateWeighted(level, self._background, min(1.0, dt / c.absorb_tau_s), mask)
        self._background_u8 = _mask(cv2.convertScaleAbs(self._background))
        if cv2.countNonZero(mask) < _EMPTY_VIEW * mask.size:
            # Only an empty view teaches the reference: people in it would bias the shift.
            cv2.accumulateWeighted(
                self._small(gray), self._reference, min(1.0, dt / _REFERENCE_TAU_S)
            )
        alpha = min(1.0, dt / _SHARPNESS_TAU_S)
        self._sharpness_ref += alpha * (sharpness - self._sharpness_ref)

    def _gain(self, gray: NDArray[np.uint8]) -> float:
        """Brightness of the frame relative to the background, over the pixels that were
        background in the last frame, so that a person in view does not set it."""
        assert self._background is not None
        mask = self._background_mask
        base = self._background_u8
        count = 0 if mask is None else cv2.countNonZero(mask)
        if mask is None or base is None or count < 0.2 * mask.size:
            return float(cv2.mean(gray)[0] + 1.0) / (float(cv2.mean(self._background)[0]) + 1.0)
        # Masked L1 norms of grey levels are masked sums: one call each, several times
        # faster than OpenCV's masked mean.
        frame_sum = cv2.norm(gray, cv2.NORM_L1, mask=mask)
        base_sum = cv2.norm(base, cv2.NORM_L1, mask=mask)
        return float(frame_sum + count) / float(base_sum + count)

    @staticmethod
    def _sharpness(gray: NDArray[np.uint8], std: float) -> float:
        lap = cv2.Laplacian(gray, cv2.CV_16S)
        # The spread from a sum and a sum of squares: OpenCV's meanStdDev has no fast path
        # for 16-bit images and took four times as long on a 96x54 frame.
        n = lap.size
        mean = cv2.sumElems(lap)[0] / n
        spread = math.sqrt(max(0.0, cv2.norm(lap, cv2.NORM_L2SQR) / n - mean * mean))
        return spread / max(std, 1.0)

    def _small(self, gray: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Half the analysis size, in float: what the shift is measured on. The last one is
        kept, since the frame after needs it as its predecessor; callers must not change it."""
        if gray is self._small_of and self._small_last is not None:
            return self._small_last
        h, w = gray.shape
        small = cv2.resize(gray, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        self._small_of, self._small_last = gray, small.astype(np.float32)
        return self._small_last

    def _shift(
        self,
        ts: datetime,
        gray: NDArray[np.uint8],
        prev_gray: NDArray[np.uint8],
        steady: bool,
        still: bool,
        gain: float | None,
    ) -> tuple[float, int]:
        """The camera's displacement from its reference view in analysis pixels (0 unless
        backed), and the last verdict of `_hypothesis` on it.

        Correlating each frame with the reference is fooled by people: in a plain room a
        person is most of the image's structure and the correlation follows them. Between
        *successive* frames the static scene dominates instead, so a knock shows up as a
        sharp jump of the whole view followed by stillness (a walking person or a car keeps
        moving). Accepted jumps are summed into an offset, which counts once the reference,
        shifted by it, explains the view better than the reference in place: a person close
        to the lens can fake one of the two, not both. An offset left unbacked for
        `_UNBACKED_S` is dropped, and so is one as soon as the view lines up again. A frame
        barely different from the last (`still`) cannot hold a jump, so the correlation, the
        dearest step of a frame, is skipped for it, and so is shrinking it.
        """
        if self._reference is None:
            return 0.0, 0
        move_px = self.config.move_fraction * gray.shape[1]
        if steady:
            if still:
                (dx, dy), response = (0.0, 0.0), 1.0
            else:
                prev = _dft_crop(self._small(prev_gray))
                small = _dft_crop(self._small(gray))
                if self._window is None or self._window.shape != small.shape:
                    window = cv2.createHanningWindow(small.shape[::-1], cv2.CV_32F)
                    self._window = np.asarray(window, np.float32)
                # Copies: OpenCV 5.0's phaseCorrelate windows its inputs in place.
                window = self._window
                (dx, dy), response = cv2.phaseCorrelate(prev.copy(), small.copy(), window)
            # Measured at half the analysis size.
            step = 2.0 * math.hypot(dx, dy)
            pending, self._pending_jump = self._pending_jump, None
            # A knock is one jump and then stillness; a car or a person keeps moving.
            if pending is not None and response >= _JUMP_RESPONSE and step < move_px / 2:
                self._offset = (self._offset[0] + pending[0], self._offset[1] + pending[1])
                self._jumped_at = ts
            elif response >= _JUMP_RESPONSE and step >= move_px:
                self._pending_jump = (2.0 * dx, 2.0 * dy)
        if self._offset == (0.0, 0.0):
            return 0.0, 0
        verdict = self._hypothesis(self._small(gray), self._gain(gray) if gain is None else gain)
        if verdict < 0:
            # The reference explains the view better unshifted: back in place.
            self._offset = (0.0, 0.0)
            self._backed_at = None
            return 0.0, verdict
        if verdict > 0:
            self._backed_at = ts
        last = self._backed_at or self._jumped_at
        if last is None or (ts - last).total_seconds() > _UNBACKED_S:
            self._offset = (0.0, 0.0)
            self._backed_at = None
            return 0.0, verdict
        # People passing make single comparisons undecided; a recent agreement carries.
        backed = self._backed_at is not None
        return (math.hypot(*self._offset) if backed else 0.0), verdict

    def _hypothesis(self, small: NDArray[np.float32], gain: float) -> int:
        """+1 if the reference shifted by the offset explains the view clearly better than
        the reference in place, -1 if clearly worse, 0 if undecided.

        Pixels a person covers fit neither and drop out; flat wall fits both and drops out;
        what decides is the structure of the static scene.
        """
        assert self._reference is not None
        h, w = small.shape
        matrix = np.array([[1, 0, self._offset[0] / 2], [0, 1, self._offset[1] / 2]], np.float32)
        # At the frame's exposure, or a brighter wall would fit neither hypothesis.
        reference = self._reference * np.float32(gain)
        shifted = cv2.warpAffine(reference, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
        in_place = cv2.absdiff(small, reference)
        moved = cv2.absdiff(small, shifted)
        fits_place = cv2.threshold(in_place, _FIT, 1, cv2.THRESH_BINARY_INV)[1]
        fits_move = cv2.threshold(moved, _FIT, 1, cv2.THRESH_BINARY_INV)[1]
        misses_place = cv2.threshold(in_place, _FIT + _MARGIN, 1, cv2.THRESH_BINARY)[1]
        misses_move = cv2.threshold(moved, _FIT + _MARGIN, 1, cv2.THRESH_BINARY)[1]
        # Masks of 0 and 1: their minimum is their intersection.
        for_move = cv2.countNonZero(cv2.min(fits_move, misses_place))
        for_place = cv2.countNonZero(cv2.min(fits_place, misses_move))
        enough = _DECISIVE * small.size
        if for_move >= enough and for_move >= 2 * for_place:
            return 1
        if for_place >= enough and for_place >= 2 * for_move:
            return -1
        return 0

    def _analysis_size(self, frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
        if frame.ndim != 2:
            raise ValueError("frames are judged in grey: pass a 2-D array")
        h, w = frame.shape
        limit = self.config.max_analysis_width
        if w <= limit:
            return frame
        size = (limit, max(1, round(h * limit / w)))
        return np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), np.uint8)

    def _zone_mask(
        self, name: str, polygon: tuple[tuple[float, float], ...], shape: tuple[int, ...]
    ) -> tuple[NDArray[np.uint8], bool]:
        cached = self._zone_masks.get(name)
        if cached is not None and cached[0].shape == shape:
            return cached
        h, w = shape[0], shape[1]
        mask = np.zeros((h, w), np.uint8)
        points = np.array([[round(x * (w - 1)), round(y * (h - 1))] for x, y in polygon], np.int32)
        cv2.fillPoly(mask, [points], 255)
        whole = cv2.countNonZero(mask) == mask.size
        self._zone_masks[name] = (mask, whole)
        return mask, whole

    @staticmethod
    def _emit(out: list[Finding], finding: Finding | None) -> None:
        if finding is not None:
            out.append(finding)

    # -- checkpoint --------------------------------------------------------------------------

    def _episodes(self) -> dict[str, Episode]:
        episodes = [*self._tamper, self._global, self._offline]
        episodes += [*self._presence.values(), *self._motion.values()]
        return {e.rule: e for e in episodes}

    def open_rules(self) -> list[str]:
        return [rule for rule, e in self._episodes().items() if e.active]

    def snapshot(self) -> dict[str, Any]:
        """Episodes and the small learnt references as plain JSON-able data."""
        reference = None
        if self._reference is not None:
            ref = np.clip(self._reference, 0, 255).astype(np.uint8)
            reference = {
                "shape": list(ref.shape),
                "data": base64.b64encode(ref.tobytes()).decode("ascii"),
            }
        return {
            "camera_id": self.camera_id,
            "last_ts": None if self.last_ts is None else self.last_ts.isoformat(),
            "last_seen": None if self.last_seen is None else self.last_seen.isoformat(),
            "sharpness_ref": self._sharpness_ref,
            "offset": list(self._offset),
            "reference": reference,
            "episodes": {rule: e.snapshot() for rule, e in self._episodes().items()},
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Resume from `snapshot()`; rules missing from it start afresh."""
        episodes = self._episodes()
        for rule, state in data.get("episodes", {}).items():
            if rule in episodes:
                episodes[rule].restore(state)
        self.last_ts = datetime.fromisoformat(data["last_ts"]) if data.get("last_ts") else None
        self.last_seen = (
            datetime.fromisoformat(data["last_seen"]) if data.get("last_seen") else None
        )
        self._sharpness_ref = float(data.get("sharpness_ref") or 0.0)
        offset = data.get("offset") or (0.0, 0.0)
        self._offset = (float(offset[0]), float(offset[1]))
        reference = data.get("reference")
        if reference:
            raw = np.frombuffer(base64.b64decode(reference["data"]), np.uint8)
            self._reference = raw.reshape(reference["shape"]).astype(np.float32)
        # The background is relearnt: judge nothing new until it is.
        self._first_ts = None
        self._prev = None
        self._small_of = self._small_last = None
        self._background = None
