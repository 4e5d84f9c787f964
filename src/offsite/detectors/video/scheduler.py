"""Sharing a frame budget fairly between cameras, and shedding the rest visibly.

Video is the one stream the gateway may shed under overload (telemetry never is). Each
camera queues at most a couple of frames; when its queue is full the *oldest* frame is shed,
since the newest says most about now. The budget (frames/s over all cameras, a token bucket)
is handed out by deficit round robin, so a camera that sends 25 fps cannot starve one that
sends 2: under overload each gets an equal share (or its weight's share), and a camera that
needs less than its share leaves the rest to the others. Frames that waited longer than
`max_wait_s` are shed too: a stale frame costs as much to judge as a fresh one.

Pure: time comes in as an argument, nothing here sleeps or runs tasks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Camera(Generic[T]):
    weight: float
    queue: deque[tuple[float, T]] = field(default_factory=deque)
    deficit: float = 0.0
    processed: int = 0
    shed: int = 0


class FrameScheduler(Generic[T]):
    def __init__(
        self,
        budget_fps: float,
        *,
        burst: float | None = None,
        queue_per_camera: int = 2,
        max_wait_s: float = 1.0,
    ) -> None:
        if budget_fps <= 0 or queue_per_camera < 1:
            raise ValueError("budget and queue length must be positive")
        self.budget_fps = budget_fps
        self.burst = burst if burst is not None else max(1.0, budget_fps / 10)
        self.queue_per_camera = queue_per_camera
        self.max_wait_s = max_wait_s
        self._tokens = self.burst
        self._last: float | None = None
        self._cameras: dict[str, _Camera[T]] = {}
        self._order: deque[str] = deque()
        self._turn: str | None = None
        """The camera being served; a turn cut short by the budget resumes first."""

    def set_weight(self, camera_id: str, weight: float) -> None:
        """A camera's share relative to others (default 1): e.g. 2 for an entrance."""
        if weight <= 0:
            raise ValueError("weight must be positive")
        self._camera(camera_id).weight = weight

    def offer(self, camera_id: str, item: T, now: float) -> None:
        """A frame arrived; if the camera's queue is full its oldest frame is shed."""
        camera = self._camera(camera_id)
        if len(camera.queue) >= self.queue_per_camera:
            camera.queue.popleft()
            camera.shed += 1
        camera.queue.append((now, item))

    def take(self, now: float) -> list[tuple[str, T]]:
        """Frames to judge now, as many as the budget allows, fairly across cameras."""
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.budget_fps)
        self._last = now
        self._shed_stale(now)
        out: list[tuple[str, T]] = []
        while self._tokens >= 1.0:
            if self._turn is None and not self._start_turn():
                break
            assert self._turn is not None
            camera = self._cameras[self._turn]
            while camera.deficit >= 1.0 and camera.queue and self._tokens >= 1.0:
                _, item = camera.queue.popleft()
                camera.deficit -= 1.0
                camera.processed += 1
                self._tokens -= 1.0
                out.append((self._turn, item))
            if camera.queue and camera.deficit >= 1.0:
                break  # out of budget mid-turn: the turn resumes on the next call
            if not camera.queue:
                camera.deficit = 0.0  # no credit saved up while idle
            self._turn = None
            self._order.rotate(-1)  # its turn is over: to the back of the line
        return out

    def _start_turn(self) -> bool:
        for _ in range(len(self._order)):
            camera = self._cameras[self._order[0]]
            if camera.queue:
                camera.deficit += camera.weight
                self._turn = self._order[0]
                return True
            self._order.rotate(-1)
        return False

    def shed_counts(self) -> dict[str, int]:
        return {cid: c.shed for cid, c in self._cameras.items()}

    def processed_counts(self) -> dict[str, int]:
        return {cid: c.processed for cid, c in self._cameras.items()}

    def queued(self) -> int:
        return sum(len(c.queue) for c in self._cameras.values())

    def _camera(self, camera_id: str) -> _Camera[T]:
        camera = self._cameras.get(camera_id)
        if camera is None:
            camera = self._cameras[camera_id] = _Camera(1.0)
            self._order.append(camera_id)
        return camera

    def _shed_stale(self, now: float) -> None:
        for camera in self._cameras.values():
            while camera.queue and now - camera.queue[0][0] > self.max_wait_s:
                camera.queue.popleft()
                camera.shed += 1


def fair_shares(demand: dict[str, float], budget: float) -> dict[str, float]:
    """Max-min fair split of a budget (water filling): what each camera should get."""
    shares = dict.fromkeys(demand, 0.0)
    left = budget
    pending = {cid: d for cid, d in demand.items() if d > 0}
    while pending and left > 1e-9:
        each = left / len(pending)
        satisfied = {cid: d for cid, d in pending.items() if d <= each}
        if not satisfied:
            for cid in pending:
                shares[cid] += each
            break
        for cid, d in satisfied.items():
            shares[cid] += d
            left -= d
            del pending[cid]
    return shares
