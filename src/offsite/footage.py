"""Where the real video clips are (`shared/data/video/`: intel-iot-devkit/sample-videos,
CC BY 4.0): the camera simulator, the demo, the video bench and the tests replay them."""

from __future__ import annotations

from pathlib import Path

_RELATIVE = Path("shared") / "data" / "video"


def footage_dir(explicit: Path | None = None) -> Path:
    """`explicit` (`OFFSITE_VIDEO_DIR`) when given; else the first `shared/data/video` above
    this checkout or above the working directory (the repository sits next to `shared/`);
    else where it would be next to this checkout, which then does not exist."""
    if explicit is not None:
        return explicit
    here = Path(__file__).resolve()
    for base in (here, Path.cwd().resolve()):
        for parent in base.parents:
            candidate = parent / _RELATIVE
            if candidate.is_dir():
                return candidate
    return here.parents[3] / _RELATIVE
