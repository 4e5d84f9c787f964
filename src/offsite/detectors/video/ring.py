"""The last seconds of a camera's frames, kept encoded, so that a clue's evidence can include
the frames *before* its trigger."""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class StoredFrame:
    ts: datetime
    seq: int | None
    jpeg: bytes


class FrameRing:
    """Frames in event-time order, bounded both in seconds and in bytes.

    Whichever bound is reached first evicts the oldest frames. A late frame is put in its
    place in time; a frame larger than the whole byte budget is refused (and counted), since
    keeping it would mean evicting everything else.
    """

    def __init__(self, max_seconds: float, max_bytes: int) -> None:
        if max_seconds <= 0 or max_bytes <= 0:
            raise ValueError("a ring needs a positive duration and byte budget")
        self.max_span = timedelta(seconds=max_seconds)
        self.max_bytes = max_bytes
        self._frames: deque[StoredFrame] = deque()
        self.nbytes = 0
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def span(self) -> timedelta:
        if not self._frames:
            return timedelta(0)
        return self._frames[-1].ts - self._frames[0].ts

    def append(self, ts: datetime, seq: int | None, jpeg: bytes) -> bool:
        """Keep a frame; False if it was refused (too large, or older than the window)."""
        if len(jpeg) > self.max_bytes:
            self.refused += 1
            return False
        if self._frames and ts < self._frames[-1].ts - self.max_span:
            self.refused += 1
            return False
        frame = StoredFrame(ts, seq, jpeg)
        if not self._frames or ts >= self._frames[-1].ts:
            self._frames.append(frame)
        else:
            index = bisect.bisect_right(self._frames, ts, key=lambda f: f.ts)
            self._frames.insert(index, frame)
        self.nbytes += len(jpeg)
        newest = self._frames[-1].ts
        while self.nbytes > self.max_bytes or newest - self._frames[0].ts > self.max_span:
            self.nbytes -= len(self._frames.popleft().jpeg)
            self.evicted += 1
        return True

    def window(self, start: datetime, end: datetime) -> list[StoredFrame]:
        """Frames with start <= ts <= end, oldest first."""
        lo = bisect.bisect_left(self._frames, start, key=lambda f: f.ts)
        hi = bisect.bisect_right(self._frames, end, key=lambda f: f.ts)
        return [self._frames[i] for i in range(lo, hi)]
