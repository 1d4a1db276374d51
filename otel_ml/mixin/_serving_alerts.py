"""Alerts on the running system rather than the data: the serving path (latency SLO burn,
inference errors, otel-ml's own errors) and the sidecar the data alerts depend on.

The serving alerts read the app's counters through the recording rules of
:mod:`otel_ml.mixin.rules` (named by :mod:`otel_ml.mixin._rule_helpers`), so both rule files
must be loaded.
"""

from __future__ import annotations

from .. import _names as n
from . import _rule_helpers as q
from ._alert_helpers import MODEL_TEXT, PAGE, TICKET, Rule, alert, label
from ._rule_helpers import latency_burn_rate_record, ratio_record
from .config import MixinConfig

__all__ = ["serving_alerts", "sidecar_alerts"]

BLIND = "Drift, coverage, segment and label-based alerts cannot fire while it lasts."


def _burn(c: MixinConfig, long: str, short: str, rate: float, for_: str, level: str) -> Rule:
    """One multi-window burn-rate alert (Google SRE workbook ch. 5)."""
    m_on = q.labels(c, *q.MODEL)
    calls = n.PREDICTION_DURATION.count_series
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
    return alert(
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
    calls = n.PREDICTION_DURATION.count_series
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
        alert(
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
        alert(
            "MLInstrumentationErrors",
            instrumentation,
            c.instrumentation_error_for,
            TICKET,
            f"otel-ml instrumentation of {MODEL_TEXT} is failing ({label(n.LABEL_ERROR_TYPE)}).",
            f"otel-ml failed {{{{ $value | humanizePercentage }}}} of the time per inference call of "
            f"{MODEL_TEXT} over the last {c.instrumentation_error_window} with {label(n.LABEL_ERROR_TYPE)} "
            f"(alert above {q.num(c.instrumentation_error_ratio_threshold * 100)}%). Predictions are "
            "unaffected, but the drift and segment metrics of this model are incomplete.",
        ),
    ]


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
        alert(
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
        alert(
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
time() - max by ({model_on}) ({n.SIDECAR_LAST_INGEST.series}{q.sidecar(c)}) > {c.ingest_stale_seconds}
"""
    return [
        alert(
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
        alert(
            "MLSidecarNotIngesting",
            stale,
            c.ingest_stale_for,
            TICKET,
            f"otel-ml sidecar receives no data for model {label(n.LABEL_MODEL_NAME)}.",
            f"The sidecar last accepted data for any version of model {label(n.LABEL_MODEL_NAME)} "
            f"{{{{ $value | humanizeDuration }}}} ago (alert after {c.ingest_stale_seconds}s): its scrape "
            f"of the app or the app's OTLP push is broken, or the model was retired. {BLIND}",
        ),
        *_input_alerts(c),
    ]
