"""Recording rules comparing two versions of a model: shadow pairs, canaries, checks, the verdict.

Every check is ``ml:version_check:<w>{ml_model_name, ml_candidate_version, ml_reference_version,
ml_check, ml_segment_key, ml_segment}`` in {-1, 0, 1} and the verdict is their minimum per
(model, candidate, reference): -1 if any check is -1, 1 only if every present check is 1, else 0.
The statistics are those of :mod:`otel_ml.evaluation._versions` (the tests hold the two
together); z is computed here, at generation, from ``version_confidence`` and ``version_max_checks``.

Shadow pairs (the same requests): candidate = ``ml_shadow_version``, reference =
``ml_model_version``. Canary pairs (different requests): the reference is, per model, the
version with the most ``__all__`` predictions over ``version_reference_window`` among versions
that are nobody's shadow; every other version with predictions there is a candidate.

NaN never reaches a check: ratios divide by ``(x > 0)`` (no sample), comparisons use ``bool``
(NaN gives 0) and each overall (``__all__``) check falls back to ``0 *`` its pair, so it is
present and 0 at zero traffic. Segments below their minimum are not judged at all.
"""

from __future__ import annotations

from .. import _names as n
from .._durations import prometheus_duration
from ..evaluation._versions import bonferroni_z, flip_skew
from . import _rule_helpers as q
from ._evaluation_rules import _bins
from ._rule_helpers import Rule, record
from .config import MixinConfig

__all__ = ["check_record", "verdict_record", "version_rules", "version_windows"]


M, V, SV = n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION, n.LABEL_SHADOW_VERSION
C, R = n.LABEL_CANDIDATE_VERSION, n.LABEL_REFERENCE_VERSION
SK, S, LE = n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT, n.LABEL_LE
PAIR: tuple[str, ...] = (M, C, R)
SEG: tuple[str, ...] = (*PAIR, SK, S)
OVERALL = f'{SK}="{n.ALL}"'
SEGMENTS = f'{SK}!="{n.ALL}"'


def version_windows(c: MixinConfig) -> list[str]:
    """The comparison's windows, shortest first: the alerts and rollout controllers read the first."""
    return sorted(set(c.version_windows), key=prometheus_duration)


def check_record(window: str) -> str:
    return n.windowed(n.VERSION_CHECK_RECORD, window)


def verdict_record(window: str) -> str:
    return n.windowed(n.VERSION_VERDICT_RECORD, window)


def _as(expr: str, dst: str, src: str) -> str:
    """``expr`` with label ``src`` copied into ``dst``."""
    return f'label_replace({expr}, "{dst}", "$1", "{src}", "(.*)")'


def _drop(expr: str, label: str) -> str:
    return f'label_replace({expr}, "{label}", "", "", "")'


def _overall(expr: str) -> str:
    """``expr`` labelled as the overall segment (for checks that have no segments)."""
    return f'label_replace(label_replace({expr}, "{SK}", "{n.ALL}", "", ""), "{S}", "{n.ALL}", "", "")'


def _z(c: MixinConfig) -> str:
    return repr(bonferroni_z(c.version_confidence, c.version_max_checks))


def _validate(c: MixinConfig) -> None:
    bonferroni_z(c.version_confidence, c.version_max_checks)
    for w in (*c.version_windows, c.version_reference_window):
        prometheus_duration(w)
    if not c.version_windows:
        raise ValueError("version_windows must name at least one window")
    budgets = (c.version_flip_budget, c.version_decision_rate_budget, c.version_error_rate_budget)
    if not all(0 < b < 1 for b in (*budgets, c.version_latency_budget, c.version_accuracy_margin)):
        raise ValueError("version budgets and the accuracy margin must be between 0 and 1")
    if min(c.version_min_pairs, c.version_min_segment_pairs, c.version_min_labelled_pairs) < 1:
        raise ValueError("version minimum counts must be >= 1")


def _three_way(safe: str, harmful: str) -> str:
    return f"(\n  ({safe})\n  -\n  ({harmful})\n)"


# --- shadow: the same requests scored by two versions ---------------------------------------------
def _shadow_rules(c: MixinConfig, w: str, z: str) -> list[Rule]:
    """Pairs, flips, Wilson bounds of the flip share (for dashboards) and the flip_rate checks per
    segment: the score tests at the budget that "Wilson bound beyond the budget" is, corrected for
    the binomial's skew (see :func:`otel_ml.evaluation._versions.flip_check`)."""
    seg, seg_flip = q.labels(c, *SEG), q.labels(c, *SEG, n.LABEL_FLIP)
    src, src_flip = q.labels(c, M, V, SV, SK, S), q.labels(c, M, V, SV, SK, S, n.LABEL_FLIP)
    pairs_series = n.SHADOW_PAIRS.series

    def renamed(by: str, sel: str) -> str:
        inner = f"sum by ({by}) (increase({pairs_series}{sel}[{w}]))"
        return _as(_as(inner, C, SV), R, V)

    pairs, flips, count = (
        n.windowed(n.SHADOW_PAIRS_RECORD, w),
        n.windowed(n.SHADOW_FLIPS_RECORD, w),
        f"ml:shadow_flipped_pairs:{w}",
    )
    ratio, lower, upper = (
        n.windowed(r, w)
        for r in (n.SHADOW_FLIP_RATIO_RECORD, n.SHADOW_FLIP_RATIO_LOWER_RECORD, n.SHADOW_FLIP_RATIO_UPPER_RECORD)
    )
    z2 = f"{z} ^ 2"
    wilson = f"""
(
  {ratio} + {z2} / 2 / {pairs}
  {{sign}} {z} * sqrt({ratio} * (1 - {ratio}) / {pairs} + {z2} / 4 / {pairs} ^ 2)
)
/
(1 + {z2} / {pairs})
"""
    flipped = f'{n.LABEL_FLIP}!="{n.FLIP_NONE}"'
    check = _flip_rate_check(c, seg, pairs, count, z)
    return [
        record(pairs, f"sum by ({seg}) (\n  {renamed(src, q.app(c))}\n)"),
        record(flips, f"sum by ({seg_flip}) (\n  {renamed(src_flip, q.app(c, flipped))}\n)"),
        record(count, f"sum by ({seg}) ({flips})\nor\n0 * {pairs}"),
        record(ratio, f"{count}\n/ on ({seg})\n({pairs} > 0)"),
        record(lower, wilson.replace("{sign}", "-")),
        record(upper, wilson.replace("{sign}", "+")),
        record(check_record(w), check, **{n.LABEL_CHECK: n.CHECK_FLIP_RATE}),
    ]


def _flip_rate_check(c: MixinConfig, seg: str, pairs: str, count: str, z: str) -> str:
    """The flip_rate check: overall always present (0 below the minimum pairs), a segment only
    with enough pairs; each the score tests at the budget (continuity and skewness corrected)."""
    budget, skew = q.num(c.version_flip_budget), repr(flip_skew(c.version_flip_budget, float(z)))
    variance = repr(c.version_flip_budget * (1 - c.version_flip_budget))

    def test(matcher: str) -> str:
        """The score tests at the budget (see flip_check): continuity and skewness corrected."""
        f, pn = f"{count}{{{matcher}}}", f"{pairs}{{{matcher}}}"
        return _three_way(
            f"{f} + 0.5 < bool on ({seg}) ({budget} * {pn} - {z} * sqrt({variance} * {pn}) + {skew})",
            f"{f} - 0.5 > bool on ({seg}) ({budget} * {pn} + {z} * sqrt({variance} * {pn}) + {skew})",
        )

    return f"""
(
  {test(OVERALL)}
  * on ({seg})
  ({pairs}{{{OVERALL}}} >= bool {c.version_min_pairs})
  or on ({seg})
  0 * {pairs}{{{OVERALL}}}
)
or
(
  {test(SEGMENTS)}
  and on ({seg})
  {pairs}{{{SEGMENTS}}} >= {c.version_min_segment_pairs}
)
"""


def _labelled_rules(c: MixinConfig, w: str, z: str) -> list[Rule]:
    """McNemar on labelled pairs: b = only the primary right, c = only the shadow right."""
    seg, seg_out = q.labels(c, *SEG), q.labels(c, *SEG, n.LABEL_PAIR_OUTCOME)
    src = q.labels(c, M, V, SV, SK, S, n.LABEL_PAIR_OUTCOME)
    inner = f"sum by ({src}) (increase({n.SHADOW_LABELLED_PAIRS.series}{q.sidecar(c)}[{w}]))"
    labelled = f"ml:shadow_labelled_pairs:{w}"
    total = f"sum by ({seg}) ({labelled})"

    def cell(outcome: str) -> str:
        return f'(sum by ({seg}) ({labelled}{{{n.LABEL_PAIR_OUTCOME}="{outcome}"}}) or 0 * {total})'

    b, cc = cell("primary_only"), cell("shadow_only")
    discordant = f"sqrt({b} + on ({seg}) {cc})"
    harm_lower, harm_upper = f"ml:shadow_accuracy_harm_lower:{w}", f"ml:shadow_accuracy_harm_upper:{w}"
    bound = f"""
(
  ({b} - on ({seg}) {cc})
  {{sign}} {z} * sqrt(clamp_min({b} + on ({seg}) {cc} - on ({seg}) ({b} - on ({seg}) {cc}) ^ 2 / on ({seg}) {total}, 0))
)
/ on ({seg})
({total} > 0)
"""
    margin = q.num(c.version_accuracy_margin)
    check = f"""
{_three_way(f"{harm_upper}{{{OVERALL}}} < bool {margin}", f"{harm_lower}{{{OVERALL}}} > bool {margin}")}
and on ({seg})
{total} >= {c.version_min_labelled_pairs}
"""
    return [
        record(labelled, f"sum by ({seg_out}) (\n  {_as(_as(inner, C, SV), R, V)}\n)"),
        record(n.windowed(n.SHADOW_MCNEMAR_Z_RECORD, w), f"({b} - on ({seg}) {cc})\n/ on ({seg})\n({discordant} > 0)"),
        record(
            n.windowed(n.SHADOW_ACCURACY_DIFFERENCE_RECORD, w), f"({cc} - on ({seg}) {b})\n/ on ({seg})\n({total} > 0)"
        ),
        record(harm_lower, bound.replace("{sign}", "-")),
        record(harm_upper, bound.replace("{sign}", "+")),
        record(check_record(w), check, **{n.LABEL_CHECK: n.CHECK_PAIRED_ACCURACY}),
    ]


# --- canary: different requests served by different versions --------------------------------------
def _pair_rules(c: MixinConfig) -> list[Rule]:
    """Which version is each model's canary reference, and which (candidate, reference) pairs exist.

    Ties: ``topk(1)`` keeps one of the tied versions, and which one is not defined by Prometheus
    (it may change between evaluations). Counts are extrapolated increases, so an exact tie needs
    two versions with identical 24h traffic; the likely one is no traffic at all, where every
    check is 0 anyway. Split traffic exactly 50/50 if you must, but expect the pair to swap.
    """
    w = c.version_reference_window
    m, mv, pair = q.labels(c, M), q.labels(c, M, V), q.labels(c, *PAIR)
    served = f"ml:version_served_predictions:{w}"
    shadows = f"group by ({mv}) (\n  {_as(f'count_over_time({n.SHADOW_PAIRS.series}{q.app(c)}[{w}])', V, SV)}\n)"
    reference = f"ml:version_reference:{w}"
    candidates = _drop(_as(f"{served} > 0", C, V), V)
    busiest = f"topk by ({m}) (1, {served} > 0 unless on ({mv}) {shadows})"
    return [
        record(served, f"sum by ({mv}) (increase({n.PREDICTIONS.series}{q.app(c, OVERALL)}[{w}]))"),
        record(reference, f"max by ({q.labels(c, M, R)}) (\n  {_as(busiest, R, V)}\n)"),
        record(
            pair_record(c),
            f"group by ({pair}) (\n  {candidates}\n  * on ({m}) group_left ({R})\n  {reference}\n)\n"
            f"unless on ({q.labels(c, M, C)})\n{_as(reference, C, R)}",
        ),
    ]


def pair_record(c: MixinConfig) -> str:
    """Name of the canary pairs (value 1 per model, candidate, reference)."""
    return f"ml:version_canary_pairs:{c.version_reference_window}"


def _candidate(c: MixinConfig, per_version: str) -> str:
    """``per_version`` (labels model, version, ...) as the candidate side of every canary pair."""
    return f"{_drop(_as(per_version, C, V), V)}\n* on ({q.labels(c, M, C)}) group_left ({R})\n{pair_record(c)}"


def _reference(c: MixinConfig, per_version: str, like: str, keys: tuple[str, ...]) -> str:
    """``per_version`` as the reference side of the pairs of the recorded candidate side ``like``
    (one reference per model, many candidates: the candidate side is the many side)."""
    on = q.labels(c, M, R, *keys)
    return f"0 * {like}\n+ on ({on}) group_left ()\n{_drop(_as(per_version, R, V), V)}"


def _harm_check(
    c: MixinConfig, z: str, rates: tuple[str, str], counts: tuple[str, str], budget: float, two_sided: bool
) -> str:
    """The three-way check of candidate - reference rate (Wald, unpooled) on the pair labels."""
    (rc, rr), (nc, nr) = rates, counts
    se = f"sqrt({rc} * (1 - {rc}) / {nc} + {rr} * (1 - {rr}) / {nr})"
    diff = f"({rc} - {rr})"
    harm = f"abs{diff}" if two_sided else diff
    b = q.num(budget)
    return _three_way(f"{harm} + {z} * {se} < bool {b}", f"{harm} - {z} * {se} > bool {b}")


def _decision_rules(c: MixinConfig, w: str, z: str) -> list[Rule]:
    """Positive-decision share per segment, candidate minus reference (two-proportion, equivalence)."""
    seg, src = q.labels(c, *SEG), q.labels(c, M, V, SK, S)
    counts = f"sum by ({src}) (increase({n.PREDICTIONS.series}{q.app(c)}[{w}]))"
    positive = q.app(c, f'{n.LABEL_DECISION}="{c.positive_decision}"')
    positives = f"(\n  sum by ({src}) (increase({n.PREDICTIONS.series}{positive}[{w}]))\n  or\n  0 * {counts}\n)"
    nc, nr = f"ml:version_candidate_predictions:{w}", f"ml:version_reference_predictions:{w}"
    rc, rr = f"ml:version_candidate_decision_rate:{w}", f"ml:version_reference_decision_rate:{w}"
    ref_n, ref_pos = (_reference(c, x, nc, (SK, S)) for x in (counts, positives))

    def sel(record: str, matcher: str) -> str:
        return f"{record}{{{matcher}}}"

    def judged(matcher: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return (sel(rc, matcher), sel(rr, matcher)), (sel(nc, matcher), sel(nr, matcher))

    budget = c.version_decision_rate_budget
    overall_rates, overall_n = judged(OVERALL)
    seg_rates, seg_n = judged(SEGMENTS)
    pairs = _overall(f"0 * {pair_record(c)}")
    check = f"""
(
  {_harm_check(c, z, overall_rates, overall_n, budget, True)}
  * ({overall_n[0]} >= bool {c.version_min_pairs})
  * ({overall_n[1]} >= bool {c.version_min_pairs})
  or on ({seg})
  {pairs}
)
or
(
  {_harm_check(c, z, seg_rates, seg_n, budget, True)}
  and ({seg_n[0]} >= {c.version_min_segment_pairs})
  and ({seg_n[1]} >= {c.version_min_segment_pairs})
)
"""
    return [
        record(nc, _candidate(c, counts)),
        record(nr, ref_n),
        record(rc, f"(\n{_candidate(c, positives)}\n)\n/ on ({seg})\n({nc} > 0)"),
        record(rr, f"(\n{ref_pos}\n)\n/ on ({seg})\n({nr} > 0)"),
        record(n.windowed(n.VERSION_DECISION_RATE_DIFFERENCE_RECORD, w), f"{rc} - on ({seg}) {rr}"),
        record(check_record(w), check, **{n.LABEL_CHECK: n.CHECK_DECISION_RATE}),
    ]


def _serving_rules(c: MixinConfig, w: str, z: str) -> list[Rule]:
    """Error and slow-call shares of calls, candidate minus reference (one-sided), and ratios."""
    pair, mv, mv_le = q.labels(c, *PAIR), q.labels(c, M, V), q.labels(c, M, V, LE)
    duration = n.PREDICTION_DURATION
    calls = f"sum by ({mv}) (increase({duration.count_series}{q.app(c)}[{w}]))"
    errors = f"(\n  sum by ({mv}) (increase({n.PREDICTION_ERRORS.series}{q.app(c)}[{w}]))\n  or\n  0 * {calls}\n)"
    fast_sel = q.app(c, f'{LE}="{q.le_value(c.latency_slo_threshold_seconds)}"')
    slow = f"(\n  {calls}\n  - on ({mv})\n  sum by ({mv}) (increase({duration.bucket_series}{fast_sel}[{w}]))\n)"
    p99 = f"histogram_quantile(0.99, sum by ({mv_le}) (increase({duration.bucket_series}{q.app(c)}[{w}])))"
    nc, nr = f"ml:version_candidate_calls:{w}", f"ml:version_reference_calls:{w}"
    rules = [record(nc, _candidate(c, calls)), record(nr, _reference(c, calls, nc, ()))]
    pairs = _overall(f"0 * {pair_record(c)}")
    for name, per_version, budget in (
        ("error", errors, c.version_error_rate_budget),
        ("slow", slow, c.version_latency_budget),
    ):
        rc, rr = f"ml:version_candidate_{name}_rate:{w}", f"ml:version_reference_{name}_rate:{w}"
        rules += [
            record(rc, f"(\n{_candidate(c, per_version)}\n)\n/ on ({pair})\n({nc} > 0)"),
            record(rr, f"(\n{_reference(c, per_version, nc, ())}\n)\n/ on ({pair})\n({nr} > 0)"),
        ]
        check = f"""
{
            _overall(f'''(
  {_harm_check(c, z, (rc, rr), (nc, nr), budget, False)}
  * ({nc} >= bool {c.version_min_pairs})
  * ({nr} >= bool {c.version_min_pairs})
)''')
        }
or on ({q.labels(c, *SEG)})
{pairs}
"""
        rules.append(
            record(
                check_record(w), check, **{n.LABEL_CHECK: n.CHECK_ERROR_RATE if name == "error" else n.CHECK_LATENCY}
            )
        )
    errors_c, errors_r = (
        n.windowed(n.VERSION_CANDIDATE_ERROR_RATE_RECORD, w),
        n.windowed(n.VERSION_REFERENCE_ERROR_RATE_RECORD, w),
    )
    p99_c, p99_r = _candidate(c, p99), _reference(c, p99, nc, ())
    rules += [
        record(n.windowed(n.VERSION_ERROR_RATIO_RECORD, w), f"{errors_c}\n/ on ({pair})\n({errors_r} > 0)"),
        record(
            n.windowed(n.VERSION_LATENCY_P99_RATIO_RECORD, w),
            f"(\n({p99_c})\n>= 0\n)\n/ on ({pair})\n(\n({p99_r})\n> 0\n)",
        ),
    ]
    return rules


def _psi_rules(c: MixinConfig, w: str) -> list[Rule]:
    """Score PSI of candidate vs reference over the same window, on the bins both share.

    A bin is shared when both versions' baselines have it with the same lower and upper edge
    (``ml_score_reference_ratio{ml_bin_upper, ml_bin_lower}``: PromQL cannot order ``le`` values,
    so it cannot merge bins between edges only one version has); each version's shares are of all
    its predictions, and the mass outside the shared bins is one remainder bin, so the figure is
    the PSI of that coarser partition (equal to the plain PSI when the edges are identical). Empty
    bins are floored at 1e-4, as in the sidecar's PSI. No sample below ``version_psi_min_bins``.
    """
    pair, pair_bin = q.labels(c, *PAIR), q.labels(c, *PAIR, n.LABEL_BIN_UPPER, n.LABEL_BIN_LOWER)
    mv = q.labels(c, M, V)
    bucket, bins = f"ml:version_score_bucket:increase{w}", f"ml:version_score_bin:increase{w}"
    share = f"ml:version_score_bin_share:{w}"
    cand, ref = f"ml:version_candidate_score_share:{w}", f"ml:version_reference_score_share:{w}"
    eps = q.PSI_EPSILON

    def floored(x: str) -> str:
        return f"clamp_min({x}, {eps})"

    def term(a: str, b: str) -> str:
        return f"({floored(a)} - {floored(b)}) * ln({floored(a)} / {floored(b)})"

    rest_c = f"(1 - sum by ({pair}) ({cand}))"
    rest_r = f"(1 - sum by ({pair}) ({ref}))"
    shared = f"count by ({pair}) ({ref}) >= {c.version_psi_min_bins}"
    le_keys = q.labels(c, M, V, LE)
    edges = (n.LABEL_BIN_UPPER, n.LABEL_BIN_LOWER)
    every_bin = _candidate(c, share)  # the candidate's bins; the reference side keeps the shared ones
    return [
        record(bucket, f"sum by ({le_keys}) (increase({n.PREDICTION_SCORE.bucket_series}{q.app(c)}[{w}]))"),
        record(bins, _bins(c, bucket, q.MODEL, n.SCORE_REFERENCE_RATIO.series)),
        record(share, f"{bins}\n/ on ({mv}) group_left ()\n(sum by ({mv}) ({bins}) > 0)"),
        record(ref, _reference(c, share, f"(\n{every_bin}\n)", edges)),
        record(cand, f"{every_bin}\nand on ({pair_bin})\n{ref}"),
        record(
            n.windowed(n.VERSION_SCORE_PSI_RECORD, w),
            f"(\n  sum by ({pair}) ({term(cand, ref)})\n  + on ({pair})\n  ({term(rest_c, rest_r)})\n)\n"
            f"and on ({pair})\n{shared}",
        ),
    ]


def version_rules(c: MixinConfig) -> list[Rule]:
    """Pairs first (the checks read them), then per window the checks and the verdict."""
    _validate(c)
    z = _z(c)
    rules = _pair_rules(c)
    for w in version_windows(c):
        rules += _shadow_rules(c, w, z)
        rules += _labelled_rules(c, w, z)
        rules += _decision_rules(c, w, z)
        rules += _serving_rules(c, w, z)
        rules += _psi_rules(c, w)
        rules.append(record(verdict_record(w), f"min by ({q.labels(c, *PAIR)}) ({check_record(w)})"))
    return rules
