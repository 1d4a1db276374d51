"""Recording rules of the evaluation loop: realised and estimated (CBPE) performance in PromQL.

Everything is computed from counters summed across replicas (``sum by``), so N sidecars that
each joined part of the labels give what one sidecar would, and from the baseline's reference
gauges, per model and version (never across versions: each version has its own baseline).

Per-bin counts come from cumulative buckets: bin (lower, upper] = bucket(le=upper) -
bucket(le=lower), the first bin's lower edge is "-Inf" (count 0 there). The baseline's
``ml_score_reference_ratio{ml_bin_upper, ml_bin_lower}`` names each bin's two edges spelled
like ``le``, which is how a bucket finds its lower neighbour with ``on(...) group_left``.

Formulas (P, N = labelled positives / negatives, P_b, N_b per bin, C+ cumulative positives):

- ROC AUC (Mann-Whitney on bins, ties half): ``sum_b N_b (P - C+(upper_b) + P_b / 2) / (P N)``;
- CBPE, with n_b the window's predictions and q_b the baseline's positive rate per bin, expected
  positives e_b = n_b q_b, E = sum e_b, n = sum n_b and C(lower_b) the window's cumulative count
  below the bin: ``AUC = (sum_b e_b (C(lower_b) + n_b / 2) - E^2 / 2) / (E (n - E))``. It is the
  same Mann-Whitney sum rewritten so it needs no cumulative sum of e_b (PromQL has none): every
  positive is compared with every prediction below it (ties half), minus the positive-positive pairs;
- at the served rule: precision TP / predicted positives, recall TP / positives, F1 2 TP / (predicted
  positives + positives), accuracy (TP + TN) / n (every joined label, scored or not), realised from
  ``ml_outcomes_total`` (exact), estimated from the bins the baseline's rule calls positive
  (``ml_score_reference_positive_decision``);
- ECE ``sum_b |S_b - P_b| / n``, Brier and log loss their summed terms over the labelled count.

Every ratio divides by ``(x > 0)``: a window without labels (or predictions) records no sample,
never NaN or 0. The reference band is ref +- 3 stddev sqrt(chunk / n + chunk / N_ref) with n the window's labels
(realised) or predictions (estimated), as NannyML scales its sampling error.
"""

from __future__ import annotations

from .. import _names as n
from .._durations import prometheus_duration
from . import _rule_helpers as q
from ._rule_helpers import Rule, record
from .config import MixinConfig

__all__ = [
    "BAND_SIGMAS",
    "PERFORMANCE_METRICS",
    "estimated_record",
    "estimated_band_record",
    "evaluation_rules",
    "evaluation_windows",
    "online_band_record",
    "online_record",
]


BAND_SIGMAS = 3  # the reference band is mean +- 3 sampling standard deviations
PERFORMANCE_METRICS = ("roc_auc", "precision", "recall", "f1", "accuracy")  # ml_metric values with a reference

UPPER, LOWER, LE = n.LABEL_BIN_UPPER, n.LABEL_BIN_LOWER, n.LABEL_LE


def evaluation_windows(c: MixinConfig) -> list[str]:
    """The configured evaluation windows plus those the alerts read, shortest first."""
    windows = {*c.evaluation_windows, c.performance_short_window, c.estimated_performance_window}
    return sorted(windows, key=prometheus_duration)


def online_record(metric: str, window: str) -> str:
    """Name of a realised metric's recording (``ml:online_roc_auc:24h``); per segment."""
    return f"ml:online_{metric}:{window}"


def online_band_record(window: str) -> str:
    """Name of the realised metrics' lower reference band at the window's label count (``ml_metric``)."""
    return f"ml:online_reference_band_lower:{window}"


def estimated_record(metric: str, window: str) -> str:
    """Name of a CBPE estimate's recording (``ml:estimated_roc_auc:1h``); per model version."""
    return f"ml:estimated_{metric}:{window}"


def estimated_band_record(side: str, window: str) -> str:
    """Name of the reference band (``lower``/``upper``) at the window's prediction count (``ml_metric``)."""
    return f"ml:estimated_reference_band_{side}:{window}"


def _moved(series: str, label: str) -> str:
    """``series`` with its ``le`` moved into ``label`` (a bucket read as a bin edge)."""
    return f'label_replace(label_replace({series}, "{label}", "$1", "{LE}", "(.+)"), "{LE}", "", "{LE}", ".*")'


def _bins(c: MixinConfig, bucket: str, keys: tuple[str, ...], reference: str) -> str:
    """Per-bin counts of the recorded cumulative ``bucket`` (labels ``keys`` + le) as (upper, lower) bins.

    ``reference`` (a baseline gauge per model version with ml_bin_upper/ml_bin_lower) gives each
    bin its lower edge; the bin is bucket(upper) - bucket(lower), the first bin's lower bucket 0.
    """
    k, k_lower = q.labels(c, *keys), q.labels(c, *keys, LOWER)
    r_upper, r_bin = q.labels(c, *q.MODEL, UPPER), q.labels(c, *q.MODEL, UPPER, LOWER)
    ref = reference + q.sidecar(c, f'{UPPER}!=""')
    return f"""
(
  {_moved(bucket, UPPER)}
  + on ({r_upper}) group_left ({LOWER})
  (0 * max by ({r_bin}) ({ref}))
)
- on ({k_lower}) group_left ()
(
  {_moved(bucket, LOWER)}
  or
  0 * label_replace(max by ({k}) ({bucket}), "{LOWER}", "-Inf", "", "")
)
"""


def _guarded(numerator: str, denominator: str, on: str) -> str:
    return f"(\n  {numerator}\n)\n/ on ({on})\n({denominator} > 0)"


def _band(c: MixinConfig, count: str, metric: str, sign: str) -> str:
    """ref +- 3 stddev sqrt(chunk / count + chunk / reference labels) of ``metric``, per series of
    the recorded ``count``: the window's sampling error and the reference value's own."""
    m_on = q.labels(c, *q.MODEL)
    metric_sel = q.sidecar(c, f'{n.LABEL_METRIC}="{metric}"')
    ref = f"max by ({m_on}) ({n.REFERENCE_PERFORMANCE.series}{metric_sel})"
    std = f"max by ({m_on}) ({n.REFERENCE_PERFORMANCE_STDDEV.series}{metric_sel})"
    chunk = f"max by ({m_on}) ({n.REFERENCE_CHUNK.series}{q.sidecar(c)})"
    labelled = f"max by ({m_on}) ({n.REFERENCE_LABELLED.series}{q.sidecar(c)})"
    return f"""
{ref}
{sign} on ({m_on}) group_right ()
(
  sqrt(
    {chunk} / on ({m_on}) group_right () ({count} > 0)
    + on ({m_on}) group_left ()
    ({chunk} / on ({m_on}) ({labelled} > 0))
  )
  * on ({m_on}) group_left ()
  ({BAND_SIGMAS} * {std})
)
"""


def _realised_rules(c: MixinConfig, w: str) -> list[Rule]:
    """Realised metrics per segment from the sidecar's join-time counters."""
    s_on = q.labels(c, *q.SEGMENT)
    s_le = q.labels(c, *q.SEGMENT, LE)
    s_out = q.labels(c, *q.SEGMENT, n.LABEL_DECISION, n.LABEL_OUTCOME)
    positive = f'{n.LABEL_OUTCOME}="{c.positive_outcome}"'
    negative = f'{n.LABEL_OUTCOME}!="{c.positive_outcome}"'
    score = n.LABELLED_SCORE
    pos_bucket, neg_bucket = (
        f"ml:labelled_score_positive_bucket:increase{w}",
        f"ml:labelled_score_negative_bucket:increase{w}",
    )
    pos_bin, neg_bin = f"ml:labelled_score_positive_bin:increase{w}", f"ml:labelled_score_negative_bin:increase{w}"
    positives, negatives = f"ml:labelled_positives:increase{w}", f"ml:labelled_negatives:increase{w}"
    labelled = f"ml:labelled_predictions:increase{w}"
    outcomes = f"ml:outcomes:increase{w}"

    def bucket(sel: str) -> str:
        return f"sum by ({s_le}) (increase({score.bucket_series}{q.sidecar(c, sel)}[{w}]))"

    judged = f"sum by ({s_on}) ({outcomes})"  # every joined label, with a score or without

    def cell(*matchers: str) -> str:
        """Sum of the recorded confusion counts matching ``matchers``; 0 (not nothing) where none."""
        return f"(sum by ({s_on}) ({outcomes}{q.selector('', *matchers)}) or 0 * {judged})"

    decided = f'{n.LABEL_DECISION}="{c.positive_decision}"'
    declined = f'{n.LABEL_DECISION}!="{c.positive_decision}"'
    tp, tn = cell(decided, positive), cell(declined, negative)
    predicted, actual = cell(decided), cell(positive)
    auc = _realised_auc(c, pos_bucket, pos_bin, neg_bin, positives)
    ece = _calibration_error(c, w, pos_bin)

    def total(inst: n.Instrument) -> str:
        return f"sum by ({s_on}) (increase({inst.series}{q.sidecar(c)}[{w}]))"

    rules = [
        record(pos_bucket, bucket(positive)),
        record(neg_bucket, bucket(negative)),
        record(pos_bin, _bins(c, pos_bucket, q.SEGMENT, n.SCORE_REFERENCE_RATIO.series)),
        record(neg_bin, _bins(c, neg_bucket, q.SEGMENT, n.SCORE_REFERENCE_RATIO.series)),
        record(positives, f"sum by ({s_on}) ({pos_bin})"),
        record(negatives, f"sum by ({s_on}) ({neg_bin})"),
        record(labelled, f"sum by ({s_on}) (increase({score.count_series}{q.sidecar(c)}[{w}]))"),
        record(outcomes, f"sum by ({s_out}) (increase({n.OUTCOMES.series}{q.sidecar(c)}[{w}]))"),
        record(online_record("roc_auc", w), _guarded(auc.strip(), f"{positives} * on ({s_on}) {negatives}", s_on)),
        record(online_record("precision", w), _guarded(tp, predicted, s_on)),
        record(online_record("recall", w), _guarded(tp, actual, s_on)),
        record(online_record("f1", w), _guarded(f"2 * {tp}", f"{predicted} + {actual}", s_on)),
        record(online_record("accuracy", w), _guarded(f"{tp} + {tn}", judged, s_on)),
        record(online_record("calibration_error", w), _guarded(ece.strip(), labelled, s_on)),
        record(online_record("brier_score", w), _guarded(total(n.OUTCOME_SQUARED_ERROR), labelled, s_on)),
        record(online_record("log_loss", w), _guarded(total(n.OUTCOME_LOG_LOSS), labelled, s_on)),
    ]
    rules += [
        record(online_band_record(w), _band(c, labelled, metric, "-"), **{n.LABEL_METRIC: metric})
        for metric in PERFORMANCE_METRICS
    ]
    return rules + _curve_rules(c, w, pos_bucket, neg_bucket, positives, negatives)


def _realised_auc(c: MixinConfig, pos_bucket: str, pos_bin: str, neg_bin: str, positives: str) -> str:
    """Mann-Whitney on bins: sum_b N_b (P - C+_b + P_b / 2); the positives above a bin are P minus
    the cumulative bucket at its upper edge, joined by the edge moved into ``ml_bin_upper``."""
    s_on, s_upper = q.labels(c, *q.SEGMENT), q.labels(c, *q.SEGMENT, UPPER)
    pos_upper = _moved(pos_bucket, UPPER)
    return f"""
sum by ({s_on}) (
  {neg_bin}
  * on ({s_upper})
  (
    {pos_bin} / 2
    + on ({s_upper}) group_left ()
    ({positives} - on ({s_on}) group_right () {pos_upper})
  )
)"""


def _calibration_error(c: MixinConfig, w: str, pos_bin: str) -> str:
    """The numerator of ECE, sum_b |S_b - P_b|: a bin with positives but no score sum counts S_b = 0."""
    s_on, s_upper = q.labels(c, *q.SEGMENT), q.labels(c, *q.SEGMENT, UPPER)
    bin_sum = f"sum by ({s_upper}) (increase({n.LABELLED_SCORE_BIN_SUM.series}{q.sidecar(c)}[{w}]))"
    pos_per_upper = f"sum by ({s_upper}) ({pos_bin})"  # absent in a segment without positives: then 0
    return f"""
sum by ({s_on}) (
  abs(
    ({bin_sum} or on ({s_upper}) 0 * {pos_per_upper})
    - on ({s_upper})
    ({pos_per_upper} or on ({s_upper}) 0 * {bin_sum})
  )
)"""


def curve_record(metric: str, window: str) -> str:
    """Name of precision/recall/F1 of the rule score > edge (``ml_threshold``), overall segment only."""
    return f"ml:online_{metric}_at_threshold:{window}"


def _curve_rules(
    c: MixinConfig, w: str, pos_bucket: str, neg_bucket: str, positives: str, negatives: str
) -> list[Rule]:
    """The precision/recall/F1 curve at every finite score edge: with C+(t) and C-(t) the labelled
    positives and negatives at or below t, TP = P - C+(t), FP = N - C-(t), FN = C+(t). For the
    ``__all__`` segment only, as the sidecar's gauges (edges x segments would spend the series
    budget); the edge moves from ``le`` to ``ml_threshold``, spelled alike."""
    s_on, s_le = q.labels(c, *q.SEGMENT), q.labels(c, *q.SEGMENT, LE)
    overall = f'{{{n.LABEL_SEGMENT_KEY}="{n.ALL}", {LE}!="+Inf"}}'
    tp = f"({positives} - on ({s_on}) group_right () {pos_bucket}{overall})"
    fp = f"({negatives} - on ({s_on}) group_right () {neg_bucket}{overall})"
    actual = f"(0 * {pos_bucket}{overall} + on ({s_on}) group_left () {positives})"

    def at_threshold(expr: str) -> str:
        return _moved(f"(\n{expr}\n)", n.LABEL_THRESHOLD)

    return [
        record(curve_record("precision", w), at_threshold(_guarded(tp, f"{tp} + on ({s_le}) {fp}", s_le))),
        record(curve_record("recall", w), at_threshold(_guarded(tp, actual, s_le))),
        record(
            curve_record("f1", w),
            at_threshold(_guarded(f"2 * {tp}", f"{tp} + on ({s_le}) {fp} + on ({s_le}) {actual}", s_le)),
        ),
    ]


def score_bin_records(w: str) -> tuple[str, str]:
    """Names of the window's score buckets and bins CBPE reads (its own: no read across rule groups)."""
    return f"ml:estimation_score_bucket:increase{w}", f"ml:estimation_score_bin:increase{w}"


def _estimated_rules(c: MixinConfig, w: str) -> list[Rule]:
    """CBPE per model version from the app's score buckets and the baseline's calibration map."""
    m_on = q.labels(c, *q.MODEL)
    m_bin, m_lower = q.labels(c, *q.MODEL, UPPER, LOWER), q.labels(c, *q.MODEL, LOWER)
    bucket, bins = score_bin_records(w)
    m_le = q.labels(c, *q.MODEL, LE)
    rules = [
        record(bucket, f"sum by ({m_le}) (increase({n.PREDICTION_SCORE.bucket_series}{q.app(c)}[{w}]))"),
        record(bins, _bins(c, bucket, q.MODEL, n.SCORE_REFERENCE_RATIO.series)),
    ]
    expected = f"ml:estimated_positives_bin:{w}"
    predictions = f"ml:score_predictions:increase{w}"
    per_bin = q.sidecar(c, f'{UPPER}!=""')
    calibration = f"max by ({m_bin}) ({n.SCORE_REFERENCE_POSITIVE_RATIO.series}{per_bin})"
    decides = f"max by ({m_bin}) ({n.SCORE_REFERENCE_POSITIVE_DECISION.series}{per_bin})"
    first = f'0 * label_replace(max by ({m_on}) ({bucket}), "{LOWER}", "-Inf", "", "")'
    below = f"(\n    {_moved(bucket, LOWER)}\n    or\n    {first}\n  )"
    e_total = f"sum by ({m_on}) ({expected})"
    auc_num = f"""
sum by ({m_on}) (
  {expected}
  * on ({m_bin})
  (
    {bins} / 2
    + on ({m_lower}) group_left ()
    {below}
  )
)
- on ({m_on})
({e_total} ^ 2 / 2)"""
    e_negatives = f"({predictions} - on ({m_on}) {e_total})"
    tp = f"sum by ({m_on}) ({expected} * on ({m_bin}) {decides})"
    predicted = f"sum by ({m_on}) ({bins} * on ({m_bin}) {decides})"
    # TN = negatives among predicted negatives = (n - predicted) - (E - TP)
    tn = f"(({predictions} - on ({m_on}) {predicted}) - on ({m_on}) ({e_total} - on ({m_on}) {tp}))"
    rules += [
        record(expected, f"{bins}\n* on ({m_bin}) group_left ()\n{calibration}"),
        record(predictions, f"sum by ({m_on}) ({bins})"),
        record(
            estimated_record("roc_auc", w),
            _guarded(auc_num.strip(), f"{e_total} * on ({m_on}) {e_negatives}", m_on),
        ),
        record(estimated_record("precision", w), _guarded(tp, predicted, m_on)),
        record(estimated_record("recall", w), _guarded(tp, e_total, m_on)),
        record(estimated_record("f1", w), _guarded(f"2 * {tp}", f"{predicted} + on ({m_on}) {e_total}", m_on)),
        record(estimated_record("accuracy", w), _guarded(f"{tp} + on ({m_on}) {tn}", predictions, m_on)),
    ]
    return rules + _estimated_bands(c, w, predictions)


def _estimated_bands(c: MixinConfig, w: str, predictions: str) -> list[Rule]:
    """The reference band at the window's prediction count, and the gap to the realised metric."""
    m_on = q.labels(c, *q.MODEL)
    rules = [
        record(estimated_band_record(side, w), _band(c, predictions, metric, sign), **{n.LABEL_METRIC: metric})
        for side, sign in (("lower", "-"), ("upper", "+"))
        for metric in PERFORMANCE_METRICS
    ]
    overall = f'{{{n.LABEL_SEGMENT_KEY}="{n.ALL}"}}'
    rules += [  # what CBPE cannot see (concept drift) shows as a gap once labels exist
        record(
            f"ml:estimated_vs_realised_gap:{w}",
            f"{estimated_record(metric, w)}\n- on ({m_on})\nmax by ({m_on}) ({online_record(metric, w)}{overall})",
            **{n.LABEL_METRIC: metric},
        )
        for metric in PERFORMANCE_METRICS
    ]
    return rules


def evaluation_rules(c: MixinConfig) -> list[Rule]:
    """Realised and estimated performance for every evaluation window."""
    if not c.positive_decision or not c.positive_outcome:
        raise ValueError("positive_decision and positive_outcome must be non-empty label values")
    rules: list[Rule] = []
    for w in evaluation_windows(c):
        rules += _realised_rules(c, w)
        rules += _estimated_rules(c, w)
    return rules
