"""Video detectors: grey frames (or JPEG) and a camera's config in, findings out."""

from offsite.detectors.video.camera import (
    GLOBAL_RULE,
    OFFLINE_RULE,
    TAMPER_RULES,
    CameraDetector,
    FrameStats,
)
from offsite.detectors.video.config import WHOLE_VIEW, CameraVideoConfig, Zone
from offsite.detectors.video.decode import FrameDecodeError, decode_reduced

__all__ = [
    "GLOBAL_RULE",
    "OFFLINE_RULE",
    "TAMPER_RULES",
    "WHOLE_VIEW",
    "CameraDetector",
    "CameraVideoConfig",
    "FrameDecodeError",
    "FrameStats",
    "Zone",
    "decode_reduced",
]
