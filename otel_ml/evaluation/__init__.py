"""Model evaluation from mergeable counts: realised metrics, CBPE estimates, the reference band.

Pure numpy over per-score-bin counts, shared by the baseline fit (reference calibration and
performance) and the sidecar (window gauges); no I/O and no metric objects. Bins sit on the last
axis, so one call evaluates a segments x bins matrix; a ratio whose denominator is 0 is NaN,
"no sample", never a warning. The version comparison's statistics (``_versions``: bounds, checks,
verdict) are the numpy reference of its recording rules. Not imported by ``import otel_ml``:
only the baseline fit, the sidecar and the tests need it.
"""

from ._cbpe import EstimatedPerformance, estimate_performance, expected_counts, served_bin
from ._realised import (
    Confusion,
    ConfusionMetrics,
    RealisedMetrics,
    ThresholdCurve,
    calibration_error,
    confusion_at_bin,
    confusion_metrics,
    guarded_ratio,
    mean_loss,
    realised_metrics,
    roc_auc,
    threshold_curve,
)
from ._reference import (
    DEFAULT_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    MIN_CHUNKS,
    PERFORMANCE_METRICS,
    ReferenceFigures,
    bin_calibration,
    default_chunk_size,
    reference_band,
    reference_performance,
)
from ._versions import (
    bonferroni_z,
    equivalence_check,
    flip_check,
    noninferiority_check,
    paired_difference_bounds,
    two_proportion_bounds,
    verdict,
    wilson_bounds,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MIN_CHUNKS",
    "MIN_CHUNK_SIZE",
    "PERFORMANCE_METRICS",
    "Confusion",
    "ConfusionMetrics",
    "EstimatedPerformance",
    "RealisedMetrics",
    "ReferenceFigures",
    "ThresholdCurve",
    "bin_calibration",
    "bonferroni_z",
    "calibration_error",
    "confusion_at_bin",
    "confusion_metrics",
    "default_chunk_size",
    "equivalence_check",
    "estimate_performance",
    "expected_counts",
    "flip_check",
    "guarded_ratio",
    "mean_loss",
    "noninferiority_check",
    "paired_difference_bounds",
    "realised_metrics",
    "reference_band",
    "reference_performance",
    "roc_auc",
    "served_bin",
    "threshold_curve",
    "two_proportion_bounds",
    "verdict",
    "wilson_bounds",
]

for _name in __all__:  # reprs and docs show the public path, as for httpx
    if callable(globals()[_name]) and hasattr(globals()[_name], "__module__"):
        globals()[_name].__module__ = __name__
del _name
