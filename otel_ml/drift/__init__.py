"""Drift statistics: pure numpy functions over bin counts, shared by the sidecar and the CLI.

:func:`compare` turns reference fractions and current bin counts (features x bins) into PSI,
its sample-size-aware critical value, JS distance, Hellinger, chi-square p-value and a verdict
per feature; :func:`drift_report` does the binning from a baseline and a data table first: it is
:func:`bin_counts` (mergeable counts of one part of the data against a baseline) then
:func:`report_from_counts`, so partitions counted apart give the report of the whole.
:func:`edge_bin_counts` is the edges-level counter (right-closed bins of one column).
The single statistics, the critical values and the verdict rule are public too. No I/O and no
metric objects here: the sidecar turns :class:`DriftResult` into gauges, the CLI into a table.
"""

from .._binning import PSI_EPSILON
from .._binning import bin_counts as edge_bin_counts
from ._compare import DriftResult, compare
from ._counts import COUNTS_SCHEMA, BinCounts, CountsError, bin_counts
from ._multiplicity import MULTIPLICITY, Multiplicity, family_alpha, holm
from ._rates import (
    DEFAULT_DECISION_ALPHA,
    DecisionSettings,
    RateVerdicts,
    binomial_pvalue,
    rate_pvalue,
    rate_verdicts,
    two_proportion_pvalue,
)
from ._report import DriftReport, FeatureDrift, drift_report, report_from_counts
from ._stats import (
    chi_square_pvalue,
    hellinger,
    js_distance,
    kl_divergence,
    ks_test,
    ks_wasserstein,
    pad_bins,
    psi,
    wasserstein,
)
from ._verdict import (
    ASYMPTOTIC_MIN_EXPECTED,
    DEFAULT_ALPHA,
    DEFAULT_DRIFT_THRESHOLD,
    DEFAULT_WARN_THRESHOLD,
    STATUS_NAMES,
    default_min_count,
    drift_status,
    psi_critical_value,
    simulated_psi_critical_value,
    status_name,
)

__all__ = [
    "ASYMPTOTIC_MIN_EXPECTED",
    "COUNTS_SCHEMA",
    "DEFAULT_ALPHA",
    "DEFAULT_DECISION_ALPHA",
    "DEFAULT_DRIFT_THRESHOLD",
    "DEFAULT_WARN_THRESHOLD",
    "MULTIPLICITY",
    "PSI_EPSILON",
    "STATUS_NAMES",
    "BinCounts",
    "CountsError",
    "DecisionSettings",
    "DriftReport",
    "DriftResult",
    "FeatureDrift",
    "Multiplicity",
    "RateVerdicts",
    "bin_counts",
    "binomial_pvalue",
    "chi_square_pvalue",
    "compare",
    "default_min_count",
    "drift_report",
    "drift_status",
    "edge_bin_counts",
    "family_alpha",
    "hellinger",
    "holm",
    "js_distance",
    "kl_divergence",
    "ks_test",
    "ks_wasserstein",
    "pad_bins",
    "psi",
    "psi_critical_value",
    "rate_pvalue",
    "rate_verdicts",
    "report_from_counts",
    "simulated_psi_critical_value",
    "status_name",
    "two_proportion_pvalue",
    "wasserstein",
]

for _name in __all__:  # reprs and docs show the public path, as for httpx
    if callable(globals()[_name]) and hasattr(globals()[_name], "__module__"):
        globals()[_name].__module__ = __name__
del _name
