"""JPEG to a small grey frame: the only place frames are decoded."""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

_FLAGS: Final = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


class FrameDecodeError(ValueError):
    """The payload is not a JPEG OpenCV can decode."""


def decode_reduced(jpeg: bytes, scale: int = 4) -> NDArray[np.uint8]:
    """Decode a JPEG to grey at 1/scale of its size.

    libjpeg scales in the DCT domain, so most of the inverse transform and all of the colour
    conversion are skipped; entropy decoding remains and is most of what is left.
    EXIF orientation is ignored: cameras do not rotate between frames, and reading it costs.
    """
    flag = _FLAGS.get(scale)
    if flag is None:
        raise ValueError(f"scale must be one of {sorted(_FLAGS)}, not {scale}")
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.ndim != 2:
        raise FrameDecodeError(f"not a decodable JPEG ({len(jpeg)} bytes)")
    return np.asarray(image, dtype=np.uint8)
