"""What a labelled reference gives the monitors: the calibration map, reference performance, the band.

All three are fitted once, at ``baseline fit``, and stored in the baseline file; the sidecar only
reads them. Reference performance is computed on the *binned* reference with the same formulas
the sidecar uses on live counts, so a window drawn from the reference centres on it.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from ._realised import Confusion, FloatArray, Stat, _out, _pair, confusion_metrics, roc_auc

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "MIN_CHUNKS",
    "PERFORMANCE_METRICS",
    "ReferenceFigures",
    "bin_calibration",
    "default_chunk_size",
    "reference_band",
    "reference_performance",
]

PERFORMANCE_METRICS: Final = ("roc_auc", "precision", "recall", "f1", "accuracy")
"""The ``ml_metric`` values of the reference performance; the last four are at the served rule."""
DEFAULT_CHUNK_SIZE: Final = 500
"""Rows per reference chunk: NannyML's order of magnitude, and small enough for >= 10 chunks from 5k rows."""
MIN_CHUNKS: Final = 10
"""Fewer chunks than this give a stddev too rough to put a band on (its relative error ~ 1/sqrt(2 (k-1)))."""
MIN_CHUNK_SIZE: Final = 50
"""Below this a chunk rarely holds both classes, and the metric's spread stops scaling as 1/sqrt(n)."""
DEFAULT_SIGMAS: Final = 3.0


def bin_calibration(positives: Any, negatives: Any) -> FloatArray:
    """Per-bin positive rates made monotone non-decreasing by weighted isotonic regression.

    Pool adjacent violators over the bins, each bin weighted by its labelled rows: the
    least-squares (and maximum-likelihood) non-decreasing fit to the observed rates. Why
    always isotonic: a score orders risk by construction, so a bin whose rate falls below its
    lower neighbour's is sampling noise, and pooling it removes variance at no bias. NannyML
    applies its calibrator only when that lowers calibration error on held-out folds; on bins the
    same comparison in-sample would always pick the raw rates (they are the unconstrained fit),
    so it cannot decide here, and the raw rates are what isotonic returns whenever they are
    already monotone. An empty bin (no labelled row) takes the mean of the fitted values of its
    nearest non-empty neighbours (the one neighbour at either end), which keeps the map monotone.
    No labelled row at all is an error.
    """
    pos, neg = _pair(positives, negatives)
    if pos.ndim != 1:
        raise ValueError("bin_calibration takes one population (1-D bins)")
    weight = pos + neg
    filled = np.flatnonzero(weight > 0)
    if filled.size == 0:
        raise ValueError("no labelled rows to calibrate on")
    # Blocks of pooled bins: (sum of positives, sum of weights, number of non-empty bins pooled).
    blocks: list[list[float]] = []
    for b in filled.tolist():  # ~30 bins: a loop over bins, not over rows
        blocks.append([float(pos[b]), float(weight[b]), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            p, w, k = blocks.pop()
            blocks[-1][0] += p
            blocks[-1][1] += w
            blocks[-1][2] += k
    fitted = np.repeat([p / w for p, w, _ in blocks], [int(k) for _, _, k in blocks])
    q = np.full(pos.size, np.nan)
    q[filled] = fitted
    below = np.maximum.accumulate(np.where(weight > 0, np.arange(pos.size), -1))
    above = np.minimum.accumulate(np.where(weight > 0, np.arange(pos.size), pos.size)[::-1])[::-1]
    empty = np.flatnonzero(weight == 0)
    lo = np.where(below[empty] >= 0, q[np.maximum(below[empty], 0)], np.nan)
    hi = np.where(above[empty] < pos.size, q[np.minimum(above[empty], pos.size - 1)], np.nan)
    q[empty] = np.where(np.isnan(lo), hi, np.where(np.isnan(hi), lo, 0.5 * (lo + hi)))
    clipped: FloatArray = np.clip(q, 0.0, 1.0)
    return clipped


class ReferenceFigures(NamedTuple):
    """Reference value and chunk stddev per metric (metrics that are undefined are left out)."""

    value: dict[str, float]
    stddev: dict[str, float]
    chunk_size: int
    chunks: int


def default_chunk_size(labelled: int) -> int:
    """``DEFAULT_CHUNK_SIZE`` rows, or a tenth of the labelled rows when that gives fewer than ten chunks."""
    return min(DEFAULT_CHUNK_SIZE, labelled // MIN_CHUNKS)


def _served(predicted: npt.NDArray[np.bool_], positive: npt.NDArray[np.bool_]) -> Confusion:
    return Confusion(
        tp=np.count_nonzero(predicted & positive),
        fp=np.count_nonzero(predicted & ~positive),
        fn=np.count_nonzero(~predicted & positive),
        tn=np.count_nonzero(~predicted & ~positive),
    )


def _metric_rows(pos: FloatArray, neg: FloatArray, served: Confusion | None) -> dict[str, FloatArray]:
    rows = {"roc_auc": np.asarray(roc_auc(pos, neg), dtype=np.float64)}
    if served is not None:
        m = confusion_metrics(served)
        rows.update({k: np.asarray(v, dtype=np.float64) for k, v in m._asdict().items()})
    return rows


def reference_performance(
    bins: Any,
    positive: Any,
    bin_count: int,
    *,
    predicted: Any = None,
    chunk_size: int | None = None,
    seed: int = 0,
) -> ReferenceFigures | None:
    """Reference performance and its spread over disjoint chunks of ``chunk_size`` labelled rows.

    ``bins`` is each labelled row's score bin, ``positive`` its label, ``predicted`` the served
    decision (``True`` = predicted positive; None: no served-rule metrics). Values are computed
    on the whole binned reference; the stddev (``ddof=1``) over chunks cut from the rows in a
    seeded random order, so a file sorted by time or by label still gives the sampling spread a
    window of ``chunk_size`` iid predictions has, which is what the band scales. None when there
    are fewer than ``MIN_CHUNKS`` chunks of ``MIN_CHUNK_SIZE`` rows.
    """
    b = np.asarray(bins, dtype=np.intp).reshape(-1)
    y = np.asarray(positive, dtype=bool).reshape(-1)
    pred = None if predicted is None else np.asarray(predicted, dtype=bool).reshape(-1)
    if y.size != b.size or (pred is not None and pred.size != b.size):
        raise ValueError("bins, positive and predicted must have one value per labelled row")
    size = default_chunk_size(b.size) if chunk_size is None else int(chunk_size)
    if size < MIN_CHUNK_SIZE or b.size // size < MIN_CHUNKS:
        return None
    whole = _metric_rows(
        np.bincount(b[y], minlength=bin_count).astype(np.float64),
        np.bincount(b[~y], minlength=bin_count).astype(np.float64),
        None if pred is None else _served(pred, y),
    )
    chunks = b.size // size
    order = np.random.default_rng(seed).permutation(b.size)[: chunks * size]
    chunk = np.arange(chunks * size) // size
    cell = chunk * bin_count + b[order]
    yo = y[order]
    pos = np.bincount(cell[yo], minlength=chunks * bin_count).reshape(chunks, bin_count).astype(np.float64)
    neg = np.bincount(cell[~yo], minlength=chunks * bin_count).reshape(chunks, bin_count).astype(np.float64)
    served = None
    if pred is not None:
        po = pred[order]
        grid = np.bincount(chunk * 4 + 2 * po + yo, minlength=chunks * 4).reshape(chunks, 4)
        served = Confusion(tp=grid[:, 3], fp=grid[:, 2], fn=grid[:, 1], tn=grid[:, 0])
    per_chunk = _metric_rows(pos, neg, served)
    value: dict[str, float] = {}
    stddev: dict[str, float] = {}
    for metric in PERFORMANCE_METRICS:
        if metric not in whole or not np.isfinite(whole[metric]):
            continue
        defined = per_chunk[metric][np.isfinite(per_chunk[metric])]
        if defined.size < 2:
            continue
        value[metric] = float(whole[metric])
        stddev[metric] = float(np.std(defined, ddof=1))
    return ReferenceFigures(value, stddev, size, chunks)


def reference_band(
    value: Any, stddev: Any, chunk_size: Any, n: Any, reference_count: Any = 0, sigmas: float = DEFAULT_SIGMAS
) -> tuple[Stat, Stat]:
    """``value -+ sigmas * stddev * sqrt(chunk_size / n + chunk_size / reference_count)``.

    Where a window of ``n`` predictions lands if nothing changed: the chunk stddev scales as
    ``1/sqrt(n)`` to the window, and the reference value itself, measured on ``reference_count``
    labelled rows, carries its own error (the second term; without it a large window is judged
    against a reference value as if it were exact: 2.3 % false alarms on recall at 5,000 labels
    instead of <= 0.5 %). NaN where ``n`` is not > 0 (no window, no band). Not clipped to [0, 1],
    so the PromQL rule needs no clamp to agree.
    """
    n_arr = np.asarray(n, dtype=np.float64)
    chunk = np.asarray(chunk_size, dtype=np.float64)
    scale = np.full(n_arr.shape, np.nan)
    np.divide(chunk, n_arr, out=scale, where=n_arr > 0)
    ref = np.asarray(reference_count, dtype=np.float64)
    scale = scale + np.divide(chunk, ref, out=np.zeros(np.broadcast_shapes(chunk.shape, ref.shape)), where=ref > 0)
    half = sigmas * np.asarray(stddev, dtype=np.float64) * np.sqrt(scale)
    centre = np.asarray(value, dtype=np.float64)
    return _out(np.asarray(centre - half)), _out(np.asarray(centre + half))
