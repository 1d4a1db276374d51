"""What every benchmark shares: the machine it ran on, and a median of timed runs.

A figure means little without the CPU and numpy it was measured with (a sort-based kernel can
be 3x faster than a binary search on one CPU and 2x slower on another), so every bench prints
:func:`machine_line` first.
"""

from __future__ import annotations

import gc
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    return f"CPU: {cpu_model()}; Python {platform.python_version()}; numpy {np.__version__}"


def median_time(fn: Callable[[], Any], repeats: int, *, warmup: bool = False) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, each after a full garbage collection."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
