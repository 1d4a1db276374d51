"""Reference profiles fitted from training data (see :class:`Baseline`).

Loading a baseline is what the app does; fitting one and reading tables are the CLI's and the
training job's, so ``_fit`` and ``_files`` are imported on first use of their names.
"""

import typing

from .._lazy import lazy_names as _lazy_names
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

if typing.TYPE_CHECKING:
    from ._files import MissingExtraError, read_table
    from ._fit import DEFAULT_BINS, DEFAULT_SCORE_BINS, DEFAULT_TOP_K, fit_baseline, quantile_edges

_LAZY = {
    "DEFAULT_BINS": "._fit",
    "DEFAULT_SCORE_BINS": "._fit",
    "DEFAULT_TOP_K": "._fit",
    "MissingExtraError": "._files",
    "fit_baseline": "._fit",
    "quantile_edges": "._fit",
    "read_table": "._files",
}

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


__getattr__, __dir__ = _lazy_names(globals(), _LAZY)  # fitting and table reading
