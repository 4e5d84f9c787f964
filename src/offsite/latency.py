"""A latency histogram cheap enough for the ingest path: values are added a batch at a
time with numpy, exported in the Prometheus histogram format, and read back as quantiles."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

# 0.25 ms to about 70 s, each bound 1.25 times the last: quantiles within 12 %.
BOUNDS: NDArray[np.float64] = (0.00025 * 1.25 ** np.arange(57)).astype(np.float64)


class LatencyHistogram(Collector):
    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self._counts: NDArray[np.int64] = np.zeros(len(BOUNDS) + 1, dtype=np.int64)
        self._sum = 0.0

    def observe_many(self, seconds: Sequence[float]) -> None:
        if not seconds:
            return
        values = np.asarray(seconds, dtype=np.float64)
        index = np.searchsorted(BOUNDS, values, side="left")
        self._counts += np.bincount(index, minlength=len(BOUNDS) + 1)
        self._sum += float(values.sum())

    @property
    def count(self) -> int:
        return int(self._counts.sum())

    def collect(self) -> Iterable[HistogramMetricFamily]:
        cumulative = np.cumsum(self._counts)
        buckets = [(f"{b:.6g}", int(c)) for b, c in zip(BOUNDS, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", int(cumulative[-1])))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, self._sum)
        yield family


def quantile_from_buckets(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """`histogram_quantile` over (upper bound, cumulative count) pairs, linear in a bucket."""
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            width = cumulative - below
            return lower + (bound - lower) * ((rank - below) / width if width else 0.0)
        lower, below = bound, cumulative
    return lower
