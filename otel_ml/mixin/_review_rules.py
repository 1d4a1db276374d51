"""Recording rules of human review: the stratified (inverse-probability-weighted) error rate.

Reviews are drawn per stratum h = (model, version, segment, review bin) with inclusion
probability pi_h, so a plain share of errors among reviews over-weights the borderline strata the
sampler favours. The stratified estimator weights each stratum's error rate by its population:

    p = sum_h N_h e_h / r_h / sum_h N_h        Var = sum_h (N_h / N)^2 p_h (1 - p_h) / r_h

over the strata with r_h > 0 (N only over those: a stratum nobody reviewed is missing at random
only within itself, so it is left out rather than guessed), with N_h the predictions
(``ml_review_population_total``, the app), r_h the reviews and e_h the errors among them
(``ml_review_labelled_total``, the sidecar) in the window. It is
``otel_ml._review_sampling.stratified_error_rate`` in PromQL. Labels arrive later than their
predictions: r_h and e_h count reviews that arrived in the window, N_h predictions made in it.

Per review segment (``ml_segment_key``, ``ml_segment``) and overall (``"__all__"``, every stratum
of the model version once). The z-test's standard error smooths each stratum's rate to
(e_h + 0.5) / (r_h + 1), so a window whose reviews are all correct (p_h = 0, stderr 0) still has a
finite z. A window without reviews records no sample, never NaN or 0.
"""

from __future__ import annotations

from .. import _names as n
from .._durations import prometheus_duration
from . import _rule_helpers as q
from ._rule_helpers import Rule, record
from .config import MixinConfig

__all__ = ["STRATUM", "review_rules", "review_windows"]

STRATUM: tuple[str, ...] = (*q.SEGMENT, n.LABEL_STRATUM)


def review_windows(c: MixinConfig) -> list[str]:
    """The configured review windows plus the alert's, shortest first."""
    for w in (*c.review_windows, c.review_error_rate_window):
        prometheus_duration(w)
    return sorted({*c.review_windows, c.review_error_rate_window}, key=prometheus_duration)


def _overall_too(c: MixinConfig, build: str, per_segment: str) -> str:
    """The per-segment result, plus the overall one labelled ``__all__`` where the app has no
    ``__all__`` strata of its own (it has them when no review segment is declared)."""
    overall = (
        f'label_replace(label_replace(\n{build}\n, "{n.LABEL_SEGMENT_KEY}", "{n.ALL}", "", ""), '
        f'"{n.LABEL_SEGMENT}", "{n.ALL}", "", "")'
    )
    return f"(\n{per_segment}\n)\nor\n{overall}"


def _estimate(c: MixinConfig, w: str, by: tuple[str, ...], only: str) -> dict[str, str]:
    """p, its stderr, the z-test's stderr and the reviews, grouped ``by`` over strata matching ``only``."""
    h, g = q.labels(c, *STRATUM), q.labels(c, *by)
    sel = q.selector("", only)
    pop = f"{n.windowed(n.REVIEW_POPULATION_RECORD, w)}{sel}"
    rev = f"{n.windowed(n.REVIEW_LABELLED_RECORD, w)}{sel}"
    err = f"{n.windowed(n.REVIEW_ERRORS_RECORD, w)}{sel}"
    rate = f"({err} / on ({h}) ({rev} > 0))"
    smoothed = f"(({err} + 0.5) / on ({h}) ({rev} + 1) and on ({h}) ({rev} > 0))"
    used = f"sum by ({g}) ({pop} and on ({h}) ({rev} > 0))"

    def variance(p_h: str) -> str:
        terms = f"{pop} ^ 2 * on ({h}) ({p_h} * (1 - {p_h}) / on ({h}) {rev})"
        return f"sum by ({g}) (\n  {terms}\n)\n/ on ({g})\n({used} ^ 2 > 0)"

    return {
        "p": f"sum by ({g}) ({pop} * on ({h}) {rate})\n/ on ({g})\n({used} > 0)",
        "stderr": f"sqrt(\n{variance(rate)}\n)",
        "test": f"sqrt(\n{variance(smoothed)}\n)",
        "reviewed": f"sum by ({g}) ({rev})",
    }


def _window_rules(c: MixinConfig, w: str) -> list[Rule]:
    h = q.labels(c, *STRATUM)
    labelled = n.REVIEW_LABELLED
    errors = q.sidecar(c, f'{n.LABEL_OUTCOME}="{n.REVIEW_ERROR}"')
    rules = [
        record(
            n.windowed(n.REVIEW_POPULATION_RECORD, w),
            f"sum by ({h}) (increase({n.REVIEW_POPULATION.series}{q.app(c)}[{w}]))",
        ),
        record(
            n.windowed(n.REVIEW_LABELLED_RECORD, w),
            f"sum by ({h}) (increase({labelled.series}{q.sidecar(c)}[{w}]))",
        ),
        record(
            n.windowed(n.REVIEW_ERRORS_RECORD, w),
            f"sum by ({h}) (increase({labelled.series}{errors}[{w}]))\n"
            f"or\n0 * {n.windowed(n.REVIEW_LABELLED_RECORD, w)}",
        ),
    ]
    per_segment = _estimate(c, w, q.SEGMENT, "")
    overall = _estimate(c, w, q.MODEL, f'{n.LABEL_SEGMENT_KEY}!="{n.ALL}"')
    names = {
        "p": n.REVIEW_ERROR_RATE_RECORD,
        "stderr": n.REVIEW_ERROR_RATE_STDERR_RECORD,
        "test": n.REVIEW_ERROR_RATE_TEST_STDERR_RECORD,
        "reviewed": n.REVIEW_REVIEWED_RECORD,
    }
    rules += [
        record(n.windowed(stem, w), _overall_too(c, overall[key], per_segment[key])) for key, stem in names.items()
    ]
    return rules


def review_rules(c: MixinConfig) -> list[Rule]:
    """Per window: N_h, r_h, e_h per stratum, then the weighted error rate, its stderrs and the reviews."""
    rules: list[Rule] = []
    for w in review_windows(c):
        rules += _window_rules(c, w)
    return rules
