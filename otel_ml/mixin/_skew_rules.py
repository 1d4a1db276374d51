"""Recording rule of training/serving skew: the share of replayed rows whose decision flipped.

``otel-ml skew replay --pushgateway`` runs captured serving inputs through the training pipeline,
re-scores them and pushes the counts of that replay (a push replaces the previous one), so the
series are the last replay's totals, read as they are: no ``rate`` or ``increase``. The ratio is
flips / rows over the ``__all__`` segment (every row once), per model version:

- no rows (or no replay) records no sample, never NaN: the denominator keeps only rows > 0;
- rows but no flips series (a replay without a decision rule pushes none, a clean one may push
  none) records 0, not nothing: ``or 0 *`` the rows;
- flips are summed over ``ml_flip`` (``false_to_true``, ``true_to_false``, ...), leaving out an
  ``ml_flip="__all__"`` total should a replay push one, so it is never counted twice.

:mod:`otel_ml.mixin._skew_alerts` tests the counts themselves against the budget.
"""

from __future__ import annotations

from .. import _names as n
from . import _rule_helpers as q
from ._rule_helpers import Rule, record
from .config import MixinConfig

__all__ = ["skew_counts", "skew_rules"]


def skew_counts(c: MixinConfig) -> tuple[str, str]:
    """(flips, rows) of the last replay per model version, as PromQL; flips is 0 where rows exist."""
    m_on = q.labels(c, *q.MODEL)
    overall = f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"'
    not_total = f'{n.LABEL_FLIP}!="{n.ALL}"'
    rows = f"sum by ({m_on}) ({n.SKEW_ROWS.series}{q.skew(c, overall)})"
    flips = f"sum by ({m_on}) ({n.SKEW_DECISION_FLIPS.series}{q.skew(c, overall, not_total)})"
    return f"(\n  {flips}\n  or\n  0 * {rows}\n)", rows


def skew_rules(c: MixinConfig) -> list[Rule]:
    """``ml:skew_decision_flip_ratio`` per model version."""
    flips, rows = skew_counts(c)
    return [record(n.SKEW_FLIP_RATIO_RECORD, f"{flips}\n/\n({rows} > 0)")]
