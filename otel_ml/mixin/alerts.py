"""Alerting rules as data: one function per group, each a pure function of :class:`MixinConfig`.

Rules are written with an abstract level (:data:`PAGE` or :data:`TICKET`) and no team or
runbook. :func:`alert_groups` then passes over every alert once (:func:`_finish`) to set
``severity``, ``team``, the extra and overridden labels and ``runbook_url``, and to check that
``summary`` and ``description`` exist, so no alert can ship without them (the
kubernetes-mixin ``add-runbook-links`` idea).

Every drift, coverage and segment alert reads the sidecar's verdicts for one window
(``alert_window``) and refuses to page on low traffic: the sidecar's drift and segment
decision-rate verdicts are statistical tests, controlled family-wise per model (Holm across its
features, or across its segments x decisions) and -1 below their minimum counts (both windows
when they compare two), and the coverage alerts carry an explicit minimum count. They also carry
``keep_firing_for``, so a sidecar restart (a gap of a few scrapes in their series) neither
resolves them nor restarts their ``for:``. Serving alerts read
the app's counters through the recording rules of :mod:`otel_ml.mixin.rules`, so both rule
files must be loaded.
"""

from __future__ import annotations

from typing import Any

from .. import _names as n
from .._durations import parse_duration
from . import _rule_helpers as q
from .config import MixinConfig
from .rules import latency_burn_rate_record, ratio_record

__all__ = ["PAGE", "TICKET", "alert_groups", "alert_names"]

PAGE = "page"  # maps to MixinConfig.severity_page
TICKET = "ticket"  # maps to MixinConfig.severity_ticket

Rule = dict[str, Any]
M, V, F = n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION, n.LABEL_FEATURE
SK, S, D = n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT, n.LABEL_DECISION


def _l(label: str) -> str:
    """The alert template of a label value."""
    return "{{ $labels." + label + " }}"


MODEL_TEXT = f"{_l(M)} {_l(V)}"
FEATURE_TEXT = f"feature {_l(F)} of {MODEL_TEXT}"
SEGMENT_TEXT = f"segment {_l(SK)}={_l(S)} of {MODEL_TEXT}"


def _alert(name: str, expr: str, for_: str, level: str, summary: str, description: str, **labels: str) -> Rule:
    parse_duration(for_)  # a typo in a for: duration fails at generation, not in Prometheus
    return {
        "alert": name,
        "expr": expr.strip() + "\n",
        "for": for_,
        "labels": {"severity": level, **labels},
        "annotations": {"summary": summary, "description": description},
    }


def _across_restarts(c: MixinConfig, rules: list[Rule]) -> list[Rule]:
    """Add ``keep_firing_for`` to alerts that read the sidecar's windows (see MixinConfig)."""
    if parse_duration(c.keep_firing_for) == 0:
        return rules
    out = []
    for rule in rules:
        copy: Rule = {}
        for key, value in rule.items():
            copy[key] = value
            if key == "for":
                copy["keep_firing_for"] = c.keep_firing_for
        out.append(copy)
    return out


def drift_alerts(c: MixinConfig) -> list[Rule]:
    """Feature and score distribution drift, from the sidecar's sample-size-aware verdicts."""
    win = f'{n.LABEL_WINDOW}="{c.alert_window}"'
    f_on, m_on = q.labels(c, *q.FEATURE), q.labels(c, *q.MODEL)

    def verdict(value: str, status: str, by: str) -> str:
        return f"""
max by ({by}) ({value}{q.sidecar(c, win)})
and on ({by})
(max by ({by}) ({status}{q.sidecar(c, win)}) == {n.DRIFT_STATUS_DRIFT})
"""

    return _across_restarts(
        c,
        [
            _alert(
                "MLFeatureDrift",
                verdict(n.FEATURE_PSI.prometheus, n.FEATURE_DRIFT_STATUS.prometheus, f_on),
                c.drift_for,
                TICKET,
                f"Feature {_l(F)} of model {MODEL_TEXT} has drifted from its training baseline.",
                f"The sidecar's drift verdict for {FEATURE_TEXT} over the last {c.alert_window} has been "
                f"'drift' for {c.drift_for}: PSI is {{{{ $value | printf \"%.3f\" }}}}, above the drift threshold "
                "and above the critical value for this sample size, which the sidecar sets family-wise across "
                "the model's features (Holm), so a clean model with many features does not page by chance. Inputs "
                "no longer look like the training data, so predictions on them are less trustworthy.",
            ),
            _alert(
                "MLScoreDistributionShift",
                verdict(n.SCORE_PSI.prometheus, n.SCORE_DRIFT_STATUS.prometheus, m_on),
                c.score_drift_for,
                TICKET,
                f"Score distribution of model {MODEL_TEXT} has shifted from its training baseline.",
                f"The sidecar's drift verdict for the prediction scores of {MODEL_TEXT} over the last "
                f"{c.alert_window} has been 'drift' for {c.score_drift_for}: PSI is "
                '{{ $value | printf "%.3f" }}. Decisions made on thresholds of this score change with it.',
            ),
        ],
    )


def coverage_alerts(c: MixinConfig) -> list[Rule]:
    """Features that go missing or arrive with values training never saw.

    ``missing_min_count`` counts *missing* values (the app's counter over ``alert_window``):
    a feature that is missing in every row has no non-missing observations to count.
    """
    parse_duration(c.alert_window)  # also used as a PromQL range here
    win = f'{n.LABEL_WINDOW}="{c.alert_window}"'
    f_on = q.labels(c, *q.FEATURE)
    missing_now = f"max by ({f_on}) ({n.FEATURE_MISSING_RATIO.prometheus}{q.sidecar(c, win)})"
    missing_ref = f"max by ({f_on}) ({n.FEATURE_REFERENCE_MISSING_RATIO.prometheus}{q.sidecar(c)})"
    missing = f"""
(
  {missing_now}
  - on ({f_on})
  ({missing_ref} or 0 * {missing_now})
) > {q.num(c.missing_ratio_increase_threshold)}
and on ({f_on})
sum by ({f_on}) (increase({n.FEATURE_MISSING.series}{q.app(c)}[{c.alert_window}])) >= {c.missing_min_count}
"""
    unknown = f"""
max by ({f_on}) ({n.FEATURE_UNKNOWN_RATIO.prometheus}{q.sidecar(c, win)}) > {q.num(c.unknown_ratio_threshold)}
and on ({f_on})
max by ({f_on}) ({n.FEATURE_WINDOW_COUNT.prometheus}{q.sidecar(c, win)}) >= {c.unknown_min_count}
"""
    return _across_restarts(
        c,
        [
            _alert(
                "MLFeatureMissingRatioHigh",
                missing,
                c.missing_for,
                TICKET,
                f"Feature {_l(F)} of model {MODEL_TEXT} is missing far more often than in training.",
                f"Over the last {c.alert_window}, the missing share of {FEATURE_TEXT} is "
                "{{ $value | humanizePercentage }} above its share in the training data (alert above "
                f"{q.num(c.missing_ratio_increase_threshold * 100)} points, with at least {c.missing_min_count} "
                "missing values). The model imputes these values, so its predictions degrade silently.",
            ),
            _alert(
                "MLUnknownCategorySurge",
                unknown,
                c.unknown_for,
                TICKET,
                f"Feature {_l(F)} of model {MODEL_TEXT} receives categories never seen in training.",
                f"Over the last {c.alert_window}, {{{{ $value | humanizePercentage }}}} of the values of "
                f"{FEATURE_TEXT} were not in the training vocabulary (alert above "
                f"{q.num(c.unknown_ratio_threshold * 100)}%). Typical cause: an upstream encoding change "
                "such as 'US' becoming 'United States'.",
            ),
        ],
    )


def _kit_minimums(c: MixinConfig, change: str, rate: str, r_on: str) -> list[str]:
    """The optional extra minimum effect on the window's change (both off by default).

    Relative: ``|ml_segment_decision_rate_change| >= r``, the ratio the dashboards show.
    Absolute: with ``R`` the rate now and ``C`` its relative change the reference is
    ``R / (1 + C)``, so ``|now - ref| >= a`` is ``R |C| >= a (1 + C)``, multiplied through by
    ``1 + C`` to avoid dividing by 0 when the rate collapsed to zero.
    """
    checks = []
    if c.decision_rate_min_relative_change > 0:
        checks.append(f"abs({change}) >= {q.num(c.decision_rate_min_relative_change)}")
    if c.decision_rate_min_absolute_change > 0:
        moved = f"(\n  abs({change})\n  * on ({r_on}) group_left ()\n  {rate}\n)"
        checks.append(f"{moved}\n>= {q.num(c.decision_rate_min_absolute_change)} * (1 + {change})")
    return checks


def _decision_rate_expr(c: MixinConfig) -> str:
    """The sidecar's verdict "changed" (2) for a reference that may page; the value is the relative change.

    The verdict already needs significance after the sidecar's multiplicity correction, its
    minimum effect and minimum counts in both windows (else -1), so no count is read here.
    A reference rate of 0 has no relative change (the sidecar exports none): such a verdict
    still pages, with the value +Inf. The kit's own minimums are off by default (see
    MixinConfig: the sidecar's baseline verdict may rest on three pooled windows, which one
    window's change does not show).
    """
    refs = c.decision_rate_references
    if not refs:
        raise ValueError("decision_rate_references must name at least one ml_reference value")
    if min(c.decision_rate_min_relative_change, c.decision_rate_min_absolute_change) < 0:
        raise ValueError("decision_rate_min_relative_change and decision_rate_min_absolute_change must be >= 0")
    win = f'{n.LABEL_WINDOW}="{c.alert_window}"'
    sel = q.sidecar(c, win, f'{n.LABEL_REFERENCE}=~"{"|".join(refs)}"')
    d_on, r_on = q.labels(c, *q.DECISION, n.LABEL_REFERENCE), q.labels(c, *q.DECISION)
    change = f"max by ({d_on}) ({n.SEGMENT_DECISION_RATE_CHANGE.prometheus}{sel})"
    changed = f"(max by ({d_on}) ({n.SEGMENT_DECISION_RATE_STATUS.prometheus}{sel}) == {n.DRIFT_STATUS_DRIFT})"
    rate = f"max by ({r_on}) ({n.SEGMENT_DECISION_RATE.prometheus}{q.sidecar(c, win)})"
    checks = [changed, *_kit_minimums(c, change, rate, r_on)]
    measured = f"{change}\n" + "".join(f"and on ({d_on})\n{check}\n" for check in checks)
    from_zero = f"(\n  {changed}\n  unless on ({d_on})\n  {change}\n) * 0 + Inf"
    if c.decision_rate_min_absolute_change > 0:
        minimum = q.num(c.decision_rate_min_absolute_change)
        from_zero += f"\nand on ({r_on})\n{rate} >= {minimum}"
    return f"(\n{_indent(measured)})\nor on ({d_on})\n(\n{_indent(from_zero)}\n)\n"


def _indent(text: str) -> str:
    return "".join(f"  {line}" if line.strip() else line for line in text.splitlines(keepends=True))


def _decision_rate_description(c: MixinConfig) -> str:
    """What the page means, with the kit's minimum effect when it has one."""
    bar = []
    if c.decision_rate_min_relative_change > 0:
        bar.append(f"{q.num(c.decision_rate_min_relative_change * 100)}% relative")
    if c.decision_rate_min_absolute_change > 0:
        bar.append(f"{q.num(c.decision_rate_min_absolute_change * 100)} points absolute")
    minimum = f", and by at least {' and '.join(bar)}" if bar else ""
    return (
        f"Over the last {c.alert_window}, the share of predictions with decision {_l(D)} in {SEGMENT_TEXT} "
        f"changed by {{{{ $value | humanizePercentage }}}} relative to the {_l(n.LABEL_REFERENCE)}, and the "
        f"sidecar's test has called it 'changed' for {c.decision_rate_for}: significant after correcting for "
        f"the model's many segments and decisions, with enough predictions in both windows{minimum}. "
        "Customers in this segment are being treated differently than before."
    )


def _performance_expr(c: MixinConfig) -> str:
    """The short window's metric is worse than the long window's by a relative threshold.

    The long window contains the short one, so the short window's label count bounds both.
    """
    s_on = q.labels(c, *q.SEGMENT)
    metric = c.performance_metric
    online = (n.ONLINE_PRECISION, n.ONLINE_RECALL, n.ONLINE_ACCURACY, n.ONLINE_BRIER)
    if metric not in {i.prometheus for i in online}:
        raise ValueError(f"performance_metric must be one of {[i.prometheus for i in online]}, got {metric!r}")
    short = f'{n.LABEL_WINDOW}="{c.performance_short_window}"'
    long = f'{n.LABEL_WINDOW}="{c.performance_long_window}"'
    now = f"max by ({s_on}) ({metric}{q.sidecar(c, short)})"
    before = f"max by ({s_on}) ({metric}{q.sidecar(c, long)})"
    # A drop is a fall for precision/recall/accuracy and a rise for the Brier score.
    worse = f"{now} - on ({s_on}) {before}" if metric == n.ONLINE_BRIER.prometheus else f"{before} - on ({s_on}) {now}"
    return f"""
(
  {worse}
) / on ({s_on}) {before} > {q.num(c.performance_drop_threshold)}
and on ({s_on})
max by ({s_on}) ({n.ONLINE_LABEL_COUNT.prometheus}{q.sidecar(c, short)}) >= {c.performance_min_labels}
"""


def decision_alerts(c: MixinConfig) -> list[Rule]:
    """Decision rates per segment, and label-based performance once outcomes arrive."""
    decision_rate, performance = _decision_rate_expr(c), _performance_expr(c)
    metric_name = c.performance_metric.removeprefix("ml_online_").replace("_", " ")
    return _across_restarts(
        c,
        [
            _alert(
                "MLSegmentDecisionRateChange",
                decision_rate,
                c.decision_rate_for,
                PAGE,
                f"Rate of decision {_l(D)} changed for {SEGMENT_TEXT}.",
                _decision_rate_description(c),
            ),
            _alert(
                "MLOnlinePerformanceDrop",
                performance,
                c.performance_for,
                TICKET,
                f"Online {metric_name} of {SEGMENT_TEXT} dropped.",
                f"On labelled predictions, the {metric_name} of {SEGMENT_TEXT} over the last "
                f"{c.performance_short_window} is {{{{ $value | humanizePercentage }}}} worse than over "
                f"the last {c.performance_long_window} (alert beyond {q.num(c.performance_drop_threshold * 100)}%, "
                f"with at least {c.performance_min_labels} labels). The model is making more mistakes.",
            ),
        ],
    )


def _burn(c: MixinConfig, long: str, short: str, rate: float, for_: str, level: str) -> Rule:
    """One multi-window burn-rate alert (Google SRE workbook ch. 5)."""
    m_on = q.labels(c, *q.MODEL)
    calls = n.PREDICTION_DURATION.prometheus + "_count"
    threshold = q.num(c.latency_slo_threshold_seconds)
    target = q.num(c.latency_slo_target * 100)
    expr = f"""
{latency_burn_rate_record(long)} > {q.num(rate)}
and on ({m_on})
{latency_burn_rate_record(short)} > {q.num(rate)}
and on ({m_on})
sum by ({m_on}) (increase({calls}{q.app(c)}[{short}])) >= {c.slo_min_calls}
"""
    days = 30 / rate
    return _alert(
        "MLLatencySLOBurn",
        expr,
        for_,
        level,
        f'Model {MODEL_TEXT} is burning its latency error budget {{{{ $value | printf "%.1f" }}}}x too fast.',
        f"Over the last {long} (and {short}), the share of predictions of {MODEL_TEXT} slower than "
        f'{threshold}s used up the error budget of the {target}% SLO {{{{ $value | printf "%.1f" }}}} '
        f"times faster than sustainable (alert above {q.num(rate)}x, so a 30-day budget would last "
        f"{days:.1f} days).",
        long_window=long,
    )


def serving_alerts(c: MixinConfig) -> list[Rule]:
    """Latency SLO burn (multi-window, multi-burn-rate), inference errors, otel-ml's own errors."""
    m_on = q.labels(c, *q.MODEL)
    calls = n.PREDICTION_DURATION.prometheus + "_count"
    errors = f"""
{ratio_record(n.PREDICTION_ERRORS.prometheus, c.error_rate_window)} > {q.num(c.error_ratio_threshold)}
and on ({m_on})
sum by ({m_on}) (increase({calls}{q.app(c)}[{c.error_rate_window}])) >= {c.slo_min_calls}
"""
    instrumentation = f"""
sum by ({q.labels(c, *q.MODEL, n.LABEL_ERROR_TYPE)})
  (rate({n.INSTRUMENTATION_ERRORS.series}{q.app(c)}[{c.instrumentation_error_window}]))
/ on ({m_on}) group_left ()
sum by ({m_on}) (rate({calls}{q.app(c)}[{c.instrumentation_error_window}]))
> {q.num(c.instrumentation_error_ratio_threshold)}
"""
    page_long, page_short = c.latency_page_windows
    ticket_long, ticket_short = c.latency_ticket_windows
    return [
        _burn(c, page_long, page_short, c.latency_page_burn_rate, c.latency_page_for, PAGE),
        _burn(c, ticket_long, ticket_short, c.latency_ticket_burn_rate, c.latency_ticket_for, TICKET),
        _alert(
            "MLPredictionErrorRate",
            errors,
            c.error_for,
            PAGE,
            f"Model {MODEL_TEXT} fails {{{{ $value | humanizePercentage }}}} of its predictions.",
            f"Over the last {c.error_rate_window}, {{{{ $value | humanizePercentage }}}} of the calls of the "
            f"inference function of {MODEL_TEXT} raised an exception (alert above "
            f"{q.num(c.error_ratio_threshold * 100)}%, with at least {c.slo_min_calls} calls). Callers get "
            "errors or fallbacks instead of predictions.",
        ),
        _alert(
            "MLInstrumentationErrors",
            instrumentation,
            c.instrumentation_error_for,
            TICKET,
            f"otel-ml instrumentation of {MODEL_TEXT} is failing ({_l(n.LABEL_ERROR_TYPE)}).",
            f"otel-ml failed {{{{ $value | humanizePercentage }}}} of the time per inference call of "
            f"{MODEL_TEXT} over the last {c.instrumentation_error_window} with {_l(n.LABEL_ERROR_TYPE)} "
            f"(alert above {q.num(c.instrumentation_error_ratio_threshold * 100)}%). Predictions are "
            "unaffected, but the drift and segment metrics of this model are incomplete.",
        ),
    ]


BLIND = "Drift, coverage, segment and label-based alerts cannot fire while it lasts."


def _input_alerts(c: MixinConfig) -> list[Rule]:
    """Rejected inputs, and scrape targets that do not answer (their own, slower alert)."""
    inst_on = q.labels(c, "job", "instance")
    inst_reason = q.labels(c, "job", "instance", n.LABEL_REASON)
    inputs = f'__name__=~"{n.SIDECAR_INGEST_ERRORS.series}|{n.SIDECAR_INGESTED.series}"'
    # An unanswered scrape (the app not started yet) is not a rejected input.
    unreachable = "|".join(c.scrape_unreachable_reasons)
    answered = f'{n.LABEL_REASON}!~"{unreachable}"'
    errors = n.SIDECAR_INGEST_ERRORS.series
    ingest_errors = f"""
sum by ({inst_reason}) (rate({errors}{q.sidecar(c, answered)}[{c.ingest_error_window}]))
/ on ({inst_on}) group_left ()
sum by ({inst_on}) (rate({q.sidecar(c, inputs, answered)}[{c.ingest_error_window}]))
> {q.num(c.ingest_error_ratio_threshold)}
"""
    # Failed connections and not one successful scrape in the window (a whole target down).
    not_answered = f'{n.LABEL_REASON}=~"{unreachable}"'
    scraped = f'{n.LABEL_SOURCE}="scrape"'
    w = c.scrape_down_window
    target_down = f"""
sum by ({inst_on}) (increase({errors}{q.sidecar(c, not_answered)}[{w}])) > 0
unless on ({inst_on})
sum by ({inst_on}) (increase({n.SIDECAR_INGESTED.series}{q.sidecar(c, scraped)}[{w}])) > 0
"""
    return [
        _alert(
            "MLSidecarIngestErrors",
            ingest_errors,
            c.ingest_error_for,
            TICKET,
            "otel-ml sidecar {{ $labels.instance }} rejects its inputs ({{ $labels.reason }}).",
            f"Over the last {c.ingest_error_window}, {{{{ $value | humanizePercentage }}}} of the inputs of the "
            "otel-ml sidecar {{ $labels.instance }} failed with reason {{ $labels.reason }} (alert above "
            f"{q.num(c.ingest_error_ratio_threshold * 100)}%). Windows miss that data, so drift and "
            "decision rates are computed on part of the traffic.",
        ),
        _alert(
            "MLSidecarScrapeTargetDown",
            target_down,
            c.scrape_down_for,
            TICKET,
            "otel-ml sidecar {{ $labels.instance }} cannot reach its scrape target.",
            "The otel-ml sidecar {{ $labels.instance }} failed to connect to the app it scrapes "
            f'{{{{ $value | printf "%.0f" }}}} times in the last {w} without one successful scrape, and '
            f"this has lasted {c.scrape_down_for} ({unreachable}): the app is down or not started, or the "
            f"scrape URL is wrong. {BLIND}",
        ),
    ]


def sidecar_alerts(c: MixinConfig) -> list[Rule]:
    """The sidecar itself: down, not receiving data, rejecting inputs. Without it drift is blind."""
    up = f"up{q.sidecar(c)}"
    model_on = q.labels(c, n.LABEL_MODEL_NAME)
    # Per model name, not version: after a rollout the old version stops receiving data on purpose.
    stale = f"""
time() - max by ({model_on}) ({n.SIDECAR_LAST_INGEST.prometheus}{q.sidecar(c)}) > {c.ingest_stale_seconds}
"""
    return [
        _alert(
            "MLSidecarDown",
            f"{up} == 0\nor\nabsent({up})\n",
            c.sidecar_down_for,
            TICKET,
            "otel-ml sidecar {{ if $labels.instance }}{{ $labels.instance }} is down"
            "{{ else }}is not scraped at all{{ end }}.",
            "{{ if $labels.instance }}Prometheus has failed to scrape the otel-ml sidecar "
            "{{ $labels.instance }} (job {{ $labels.job }})"
            f"{{{{ else }}}}Prometheus has no scrape target matching {up}: the sidecar is not deployed or "
            f"service discovery lost it{{{{ end }}}}, for {c.sidecar_down_for}. {BLIND}",
        ),
        _alert(
            "MLSidecarNotIngesting",
            stale,
            c.ingest_stale_for,
            TICKET,
            f"otel-ml sidecar receives no data for model {_l(M)}.",
            f"The sidecar last accepted data for any version of model {_l(M)} "
            f"{{{{ $value | humanizeDuration }}}} ago (alert after {c.ingest_stale_seconds}s): its scrape "
            f"of the app or the app's OTLP push is broken, or the model was retired. {BLIND}",
        ),
        *_input_alerts(c),
    ]


_GROUPS = (
    ("otel-ml.drift", drift_alerts),
    ("otel-ml.coverage", coverage_alerts),
    ("otel-ml.decisions", decision_alerts),
    ("otel-ml.serving", serving_alerts),
    ("otel-ml.sidecar", sidecar_alerts),
)

_REQUIRED_ANNOTATIONS = ("summary", "description")


def _finish(rule: Rule, c: MixinConfig) -> Rule:
    """Severity, team, extra labels, overrides and runbook_url: the one pass every alert goes through."""
    name = rule["alert"]
    levels = {PAGE: c.severity_page, TICKET: c.severity_ticket}
    labels = dict(rule["labels"])
    level = labels.pop("severity")
    if level not in levels:
        raise ValueError(f"{name}: severity must be PAGE or TICKET, got {level!r}")
    labels = {
        "severity": levels[level],
        "team": c.team,
        **c.extra_alert_labels,
        **labels,
        **c.alert_label_overrides.get(name, {}),
    }
    missing = [a for a in _REQUIRED_ANNOTATIONS if not rule["annotations"].get(a)]
    if missing:
        raise ValueError(f"{name}: missing annotations {missing}")
    annotations = {**rule["annotations"], "runbook_url": c.runbook_url(name)}
    return {**rule, "labels": labels, "annotations": annotations}


def alert_groups(config: MixinConfig) -> list[dict[str, Any]]:
    """The alerting rule groups, every alert finished by :func:`_finish`."""
    unknown = set(config.alert_label_overrides) - {r["alert"] for _, build in _GROUPS for r in build(config)}
    if unknown:
        raise ValueError(f"alert_label_overrides names unknown alerts: {sorted(unknown)}")
    return [{"name": name, "rules": [_finish(r, config) for r in build(config)]} for name, build in _GROUPS]


def alert_names(config: MixinConfig) -> list[str]:
    """Every alert name, once each, in file order (two rules may share a name, e.g. two burn rates)."""
    names = (r["alert"] for g in alert_groups(config) for r in g["rules"])
    return list(dict.fromkeys(names))
