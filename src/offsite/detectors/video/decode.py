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


MAX_PIXELS: Final = 7680 * 4320
"""8K UHD. A frame declaring more is refused before decoding: measured with OpenCV 4 here, a
1 kB progressive JPEG whose header declares 60000x60000 made `imdecode` (even at 1/4 scale)
take 31 s and 10.5 GB, since progressive decoding keeps every coefficient of the full size."""

# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic):
# C0-CF except C4 (DHT), C8 (reserved) and CC (DAC).
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length: TEM and the restart markers.
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})


class FrameDecodeError(ValueError):
    """The payload is not a JPEG OpenCV can decode, or declares too large a picture."""


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG's start-of-frame header, read without decoding."""
    end = len(jpeg)
    if jpeg[:2] != b"\xff\xd8":
        raise FrameDecodeError(f"not a JPEG ({end} bytes, no start-of-image marker)")
    pos = 2
    while pos + 4 <= end:
        if jpeg[pos] != 0xFF:
            raise FrameDecodeError(f"not a JPEG: no marker at byte {pos}")
        marker = jpeg[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = (jpeg[pos + 2] << 8) | jpeg[pos + 3]
        if marker in _SOF:
            if length < 8 or pos + 9 > end:
                raise FrameDecodeError("truncated JPEG frame header")
            height = (jpeg[pos + 5] << 8) | jpeg[pos + 6]
            width = (jpeg[pos + 7] << 8) | jpeg[pos + 8]
            return width, height
        if marker in (0xD9, 0xDA) or length < 2:  # end of image, start of scan, or nonsense
            break
        pos += 2 + length
    raise FrameDecodeError(f"not a decodable JPEG ({end} bytes, no frame header)")


def decode_reduced(jpeg: bytes, scale: int = 4, max_pixels: int = MAX_PIXELS) -> NDArray[np.uint8]:
    """Decode a JPEG to grey at 1/scale of its size; one declaring more than `max_pixels`
    (or no size at all) is refused before anything is allocated.

    libjpeg scales in the DCT domain, so most of the inverse transform and all of the colour
    conversion are skipped; entropy decoding remains and is most of what is left.
    EXIF orientation is ignored: cameras do not rotate between frames, and reading it costs.
    """
    flag = _FLAGS.get(scale)
    if flag is None:
        raise ValueError(f"scale must be one of {sorted(_FLAGS)}, not {scale}")
    width, height = jpeg_size(jpeg)
    if width * height > max_pixels or not width or not height:
        raise FrameDecodeError(f"JPEG of {width}x{height} pixels refused (at most {max_pixels})")
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.ndim != 2:
        raise FrameDecodeError(f"not a decodable JPEG ({len(jpeg)} bytes)")
    return np.asarray(image, dtype=np.uint8)
