"""PromQL for the dashboards, built from :class:`MixinConfig` selectors and the names in ``_names``.

(The alert and recording rules have their own helpers in :mod:`otel_ml.mixin._rule_helpers`.)

Every expression is written so it returns a series whenever the app and the sidecar are running
with traffic: a panel that shows "No data" on a healthy system teaches on-call to ignore it.
Labelled counters (errors, fallbacks, overflow) only exist after their first increment, so
their panels fall back to ``<call rate> * 0`` per model version: an honest zero that still
disappears when the model itself stops reporting.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import _names as n
from .config import MixinConfig

__all__ = ["ALL_SEGMENTS", "MV", "PREDICTIONS", "RATE_INTERVAL", "SEGMENT_LABELS", "Exprs", "M", "V", "matchers"]

RATE_INTERVAL = "$__rate_interval"

M = n.LABEL_MODEL_NAME
V = n.LABEL_MODEL_VERSION
MV = f"{M}, {V}"
SEGMENT_LABELS = f"{n.LABEL_SEGMENT_KEY}, {n.LABEL_SEGMENT}"

PREDICTIONS = n.PREDICTIONS.series
CALLS = n.PREDICTION_DURATION.count_series
DURATION_BUCKET = n.PREDICTION_DURATION.bucket_series
SCORE_BUCKET = n.PREDICTION_SCORE.bucket_series
ALL_SEGMENTS = f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"'  # the segment key that counts every prediction once


def matchers(*parts: str) -> str:
    """``{a, b}`` from the non-empty matchers, or "" when there are none (``x{}`` does not parse)."""
    kept = [part.strip() for part in parts if part.strip()]
    return "{" + ", ".join(kept) + "}" if kept else ""


@dataclass(frozen=True)
class Exprs:
    """Expression factory bound to one config's selectors and the dashboards' template variables."""

    config: MixinConfig
    model_matcher: str = f'{M}=~"$model"'
    version_matcher: str = f'{V}=~"$version"'
    window_matcher: str = f'{n.LABEL_WINDOW}="$window"'
    segment_matcher: str = f'{n.LABEL_SEGMENT_KEY}=~"$segment"'

    # -- selectors ---------------------------------------------------------------------------------
    def app(self, *extra: str) -> str:
        """Series the instrumented app exposes (scraped directly or re-exposed by the sidecar)."""
        return matchers(self.config.app_selector, self.model_matcher, self.version_matcher, *extra)

    def side(self, *extra: str, window: bool = True) -> str:
        """Series the sidecar computes; most are per window."""
        return matchers(
            self.config.sidecar_selector,
            self.model_matcher,
            self.version_matcher,
            self.window_matcher if window else "",
            *extra,
        )

    def skew(self, *extra: str) -> str:
        """Series of the last training/serving skew replay (pushed to a Pushgateway by ``otel-ml skew``)."""
        return matchers(self.config.skew_selector, self.model_matcher, self.version_matcher, *extra)

    # -- app counters ------------------------------------------------------------------------------
    def rate(self, series: str, by: str, *extra: str) -> str:
        return f"sum by ({by}) (rate({series}{self.app(*extra)}[{RATE_INTERVAL}]))"

    def calls(self, by: str = MV) -> str:
        """Calls per second of the inference function, failed ones included."""
        return self.rate(CALLS, by)

    def predictions(self, by: str = MV) -> str:
        """Predictions per second (a batch call makes many), from the ``__all__`` segment key."""
        return self.rate(PREDICTIONS, by, ALL_SEGMENTS)

    def rate_or_zero(self, series: str, by: str = MV) -> str:
        """Rate of a labelled counter, or 0 per model version while it has no series yet."""
        return f"({self.rate(series, by)} or on({MV}) ({self.calls()} * 0))"

    def ratio_of_calls(self, series: str) -> str:
        """Share of calls counted by ``series`` (errors, fallbacks), 0 before the first one."""
        return f"{self.rate_or_zero(series)} / on({MV}) {self.calls()}"

    def latency_quantile(self, q: float, by: str = MV) -> str:
        return f"histogram_quantile({q}, {self.rate(DURATION_BUCKET, by + ', ' + n.LABEL_LE)})"

    def decision_rate(self, by: str, *extra: str) -> str:
        """Live share of predictions per decision, from the counters (not the sidecar's windows)."""
        num = self.rate(PREDICTIONS, f"{by}, {n.LABEL_DECISION}", *extra)
        den = self.rate(PREDICTIONS, by, *extra)
        return f"{num} / ignoring({n.LABEL_DECISION}) group_left() {den}"

    def score_heatmap(self) -> str:
        return f"sum by ({n.LABEL_LE}) (increase({SCORE_BUCKET}{self.app()}[{RATE_INTERVAL}]))"

    # -- sidecar gauges ----------------------------------------------------------------------------
    def gauge(self, inst: n.Instrument, by: str = MV, *extra: str, agg: str = "max", window: bool = True) -> str:
        """One sidecar gauge, aggregated away from job/instance so tables merge on our labels only."""
        grouping = f" by ({by})" if by else ""
        return f"{agg}{grouping} ({inst.series}{self.side(*extra, window=window)})"

    def drifting_features(self, by: str = MV) -> str:
        """Features whose verdict is drift; 0 (not "no data") while the sidecar reports none."""
        status = f"{n.FEATURE_DRIFT_STATUS.series}{self.side()}"
        grouping = f" by ({by})" if by else ""
        return f"count{grouping} ({status} == {n.DRIFT_STATUS_DRIFT}) or on({by}) (count{grouping} ({status}) * 0)"

    def changed_segments(self, by: str = MV) -> str:
        """Segments with a decision-rate verdict of "changed" (any decision or reference); 0 while none."""
        status = f"{n.SEGMENT_DECISION_RATE_STATUS.series}{self.side(self.segment_matcher)}"
        worst = f"max by ({by + ', ' if by else ''}{SEGMENT_LABELS}) ({status})"
        grouping = f" by ({by})" if by else ""
        return f"count{grouping} ({worst} == {n.DRIFT_STATUS_DRIFT}) or on({by}) (count{grouping} ({status}) * 0)"

    def decision_rate_change_top(self, k: int) -> str:
        """The k segment decision-rate changes largest in absolute value, sign kept."""
        by = f"{MV}, {SEGMENT_LABELS}, {n.LABEL_DECISION}, {n.LABEL_REFERENCE}"
        change = self.gauge(n.SEGMENT_DECISION_RATE_CHANGE, by, self.segment_matcher)
        return f"{change} and topk({k}, abs({change}))"

    def seconds_since_ingest(self, by: str = MV) -> str:
        return f"time() - {self.gauge(n.SIDECAR_LAST_INGEST, by, window=False)}"

    def psi_over_critical(self, by: str) -> str:
        """PSI in units of its sample-size-aware critical value: above 1 is more than noise."""
        return f"{self.gauge(n.FEATURE_PSI, by)} / {self.gauge(n.FEATURE_PSI_CRITICAL, by)}"

    def ingest_errors(self) -> str:
        """Sidecar ingest errors by reason; 0 while the sidecar is scraped and has had none."""
        sel = matchers(self.config.sidecar_selector)
        return (
            f"sum by ({n.LABEL_REASON}) (rate({n.SIDECAR_INGEST_ERRORS.series}{sel}[{RATE_INTERVAL}])) "
            f"or on() (sum(up{sel}) * 0)"
        )

    def sidecar_up(self) -> str:
        return f"sum(up{matchers(self.config.sidecar_selector)})"
