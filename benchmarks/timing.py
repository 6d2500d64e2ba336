"""Timing helper shared by the scripted (non-pytest-benchmark) tables of benchmarks/."""

from __future__ import annotations

import time


def best_of(fn, rounds: int = 3) -> float:
    """Seconds of the fastest of ``rounds`` calls of ``fn`` after one warm-up call (allocator,
    lazy imports, backend selection)."""
    fn()
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)
