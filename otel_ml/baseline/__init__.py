"""Reference profiles fitted from training data (see :class:`Baseline`)."""

from ._files import MissingExtraError, read_table
from ._fit import DEFAULT_BINS, DEFAULT_SCORE_BINS, DEFAULT_TOP_K, fit_baseline, quantile_edges
from ._profile import (
    SCHEMA,
    SCHEMA_VERSION,
    Baseline,
    BaselineError,
    CategoricalProfile,
    NumericProfile,
    ReferencePerformance,
    ScoreProfile,
)

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_SCORE_BINS",
    "DEFAULT_TOP_K",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Baseline",
    "BaselineError",
    "CategoricalProfile",
    "MissingExtraError",
    "NumericProfile",
    "ReferencePerformance",
    "ScoreProfile",
    "fit_baseline",
    "quantile_edges",
    "read_table",
]
