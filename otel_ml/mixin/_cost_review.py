"""The model dashboard's Cost and Review rows: what a prediction costs, and what reviewers find.

Cost: cost per 1,000 predictions per basis (never summed across bases) and per source, per cost
segment, against realised or estimated accuracy over time (the cost/quality frontier), against
the p99 latency, the CPU attribution ratio (below 1: work on other threads, BLAS's included, is
not billed per call) and tokens. Review: the stratified (weighted) error rate with its +-2
standard-error band and the reference error rate, the queue (pending, oldest age), and per stratum
the population, the sampled, the labelled and the errors, so a weighted rate is never read without
what it rests on. All from the recording rules of ``_cost_rules`` and ``_review_rules``.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import units

from .. import _names as n
from . import _panels as p
from ._cost_rules import cost_windows
from ._promql import MV, RATE_INTERVAL, SEGMENT_LABELS, Exprs, V, matchers
from ._review_rules import STRATUM
from .config import MixinConfig

__all__ = ["cost_panels", "fleet_economics_panels", "review_panels"]

BASIS, SOURCE = n.LABEL_COST_BASIS, n.LABEL_COST_SOURCE
SEGMENT = f"{p.legend(n.LABEL_SEGMENT_KEY)}={p.legend(n.LABEL_SEGMENT)}"
Items = list[db.Row | p.PanelBuilder]


def _right_axis(panel: p.PanelBuilder, regexp: str, unit: str) -> p.PanelBuilder:
    """Series whose name matches ``regexp`` on a right-hand axis in their own unit."""
    properties = [
        dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        dm.DynamicConfigValue(id_val="unit", value=unit),
    ]
    return panel.override_by_regexp(regexp, properties)


def _recorded(e: Exprs, record: str, by: str, *extra: str) -> str:
    """A recording rule for the selected model and versions, aggregated to ``by``."""
    return f"max by ({by}) ({record}{matchers(e.model_matcher, e.version_matcher, *extra)})"


def cost_panels(config: MixinConfig, e: Exprs) -> Items:
    """Rows and panels of the Cost row (ids 800-899)."""
    w = cost_windows(config)[0]
    per_1k = n.windowed(n.COST_PER_1K_RECORD, w)
    all_sources = f'{SOURCE}="{n.ALL}"'
    by_basis = _recorded(e, per_1k, f"{MV}, {BASIS}", all_sources)
    return [
        p.row(800, "Cost"),
        p.timeseries_panel(
            801,
            f"Cost per 1K predictions by basis ({w})",
            "USD per 1,000 predictions (batch rows count one each), every source of a basis summed. Bases are "
            "never added: configured_rate (the configured $/CPU-hour and price table), allocation (OpenCost's "
            "node prices x the pods' allocation, split by predictions), billed (what the app reported per "
            "call). MLCostOverBudget compares each basis with its budget.",
            [p.Query(by_basis, f"{p.legend(BASIS)} {p.legend(V)}")],
            unit=units.Dollars,
            min_val=0,
        ),
        p.timeseries_panel(
            802,
            f"Cost per 1K predictions by source ({w})",
            "The same per source: compute (CPU seconds, GPU wall share), api (add_cost), tokens (add_tokens x "
            "prices), and compute at allocation (OpenCost).",
            [
                p.Query(
                    _recorded(e, per_1k, f"{MV}, {SOURCE}, {BASIS}", f'{SOURCE}!="{n.ALL}"'),
                    f"{p.legend(SOURCE)} {p.legend(BASIS)} {p.legend(V)}",
                )
            ],
            unit=units.Dollars,
            min_val=0,
        ),
        p.timeseries_panel(
            803,
            f"Cost per 1K predictions by segment ({w})",
            "Where the model declares cost_segment, the cost per 1,000 predictions of each value of that segment "
            "key, per basis (its own predictions as the denominator).",
            [
                p.Query(
                    _recorded(
                        e,
                        n.windowed(n.SEGMENT_COST_PER_1K_RECORD, w),
                        f"{MV}, {BASIS}, {SEGMENT_LABELS}",
                        all_sources,
                        e.segment_matcher,
                    ),
                    f"{SEGMENT} {p.legend(BASIS)} {p.legend(V)}",
                )
            ],
            unit=units.Dollars,
            min_val=0,
            span=8,
        ),
        *_frontier(config, e, by_basis),
        *_usage(config, e),
    ]


def _frontier(config: MixinConfig, e: Exprs, by_basis: str) -> Items:
    """Cost beside quality and beside latency, over time: is a cheaper version as good and as fast?"""
    overall = f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"'
    p99 = f"ml:{n.PREDICTION_DURATION.prometheus.removeprefix('ml_')}:quantile_rate{config.recording_window}"
    frontier = p.timeseries_panel(
        804,
        "Cost per 1K vs accuracy",
        "Cost per 1,000 predictions (left) beside accuracy (right): realised on labelled predictions over the "
        "sidecar window, and estimated from scores (CBPE) before labels arrive. Pick two versions to compare "
        "where each sits on the cost / quality frontier.",
        [
            p.Query(by_basis, f"cost {p.legend(BASIS)} {p.legend(V)}"),
            p.Query(e.gauge(n.ONLINE_ACCURACY, MV, overall), f"accuracy realised {p.legend(V)}"),
            p.Query(e.gauge(n.ESTIMATED_ACCURACY), f"accuracy estimated {p.legend(V)}"),
        ],
        unit=units.Dollars,
        min_val=0,
        span=8,
    )
    latency = p.timeseries_panel(
        805,
        "Cost per 1K vs p99 latency",
        "Cost per 1,000 predictions (left) beside the p99 latency of a call (right): a cheaper instance type "
        "or a smaller model trades one against the other.",
        [
            p.Query(by_basis, f"cost {p.legend(BASIS)} {p.legend(V)}"),
            p.Query(_recorded(e, p99, MV, 'quantile="0.99"'), f"p99 latency {p.legend(V)}"),
        ],
        unit=units.Dollars,
        min_val=0,
        span=8,
    )
    return [
        _right_axis(frontier, "accuracy .*", units.PercentUnit),
        _right_axis(latency, "p99 latency .*", units.Seconds),
    ]


def _usage(config: MixinConfig, e: Exprs) -> Items:
    """CPU attribution, tokens and the price table's age: what the cost figures rest on."""
    w = cost_windows(config)[0]
    tokens = f"sum by ({MV}, {n.LABEL_TOKEN_TYPE}) (rate({n.TOKENS.series}{e.app()}[{RATE_INTERVAL}]))"
    updated = f"min by ({MV}) ({n.PRICE_CONFIG_UPDATED.series}{e.app()})"
    return [
        p.share_panel(
            806,
            f"CPU attribution ratio ({w})",
            "CPU seconds of the calling threads during calls / CPU seconds of the serving processes. Below 1, "
            "the rest is work on other threads (BLAS, thread pools) or outside calls: compute cost per call is a "
            "lower bound by that much.",
            [p.Query(_recorded(e, n.windowed(n.CPU_ATTRIBUTION_RECORD, w), MV), p.legend(V))],
            span=8,
        ),
        p.timeseries_panel(
            807,
            "Tokens / s by type",
            "Input and output tokens the model's calls reported (add_tokens), the tokens cost's base.",
            [p.Query(tokens, f"{p.legend(n.LABEL_TOKEN_TYPE)} {p.legend(V)}")],
            unit=units.Short,
            min_val=0,
            span=8,
        ),
        p.stat_panel(
            808,
            "Price table age",
            "Time since the updated date of the oldest price table a process of the version prices with. "
            f"MLPricesStale fires beyond {config.prices_max_age_seconds / 86400:g} days.",
            [p.Query(f"time() - {updated}", p.legend(V))],
            unit=units.Seconds,
            threshold_steps=p.yellow_then_red(config.prices_max_age_seconds),
            span=8,
            height=8,
        ),
    ]


def review_panels(config: MixinConfig, e: Exprs) -> Items:
    """Rows and panels of the Review row (ids 900-999)."""
    w = config.review_error_rate_window
    seg = e.segment_matcher
    by = f"{MV}, {SEGMENT_LABELS}"
    rate = _recorded(e, n.windowed(n.REVIEW_ERROR_RATE_RECORD, w), by, seg)
    se = _recorded(e, n.windowed(n.REVIEW_ERROR_RATE_STDERR_RECORD, w), by, seg)
    accuracy = e.side(f'{n.LABEL_METRIC}="accuracy"', window=False)
    reference = f"1 - max by ({MV}) ({n.REFERENCE_PERFORMANCE.series}{accuracy})"
    return [
        p.row(900, "Review"),
        p.share_panel(
            901,
            f"Reviewed error rate with stderr band ({w})",
            "Share of predictions human reviewers judge wrong, weighted by stratum population (reviews are "
            "sampled unevenly: borderline scores and rare segments more), with +-2 standard errors, and the "
            "baseline's error rate (1 - reference accuracy). MLReviewErrorRateOutOfBand runs a z-test against it.",
            [
                p.Query(rate, f"error rate {SEGMENT} {p.legend(V)}"),
                p.Query(f"{rate} - 2 * {se}", f"-2 se {SEGMENT} {p.legend(V)}"),
                p.Query(f"{rate} + 2 * {se}", f"+2 se {SEGMENT} {p.legend(V)}"),
                p.Query(reference, f"reference {p.legend(V)}"),
            ],
            span=24,
        ),
        p.timeseries_panel(
            902,
            "Reviews pending",
            "Review items queued and not yet labelled, per version (all sidecars).",
            [p.Query(f"sum by ({MV}) ({n.REVIEW_PENDING.series}{e.side(window=False)})", p.legend(V))],
            min_val=0,
        ),
        p.timeseries_panel(
            903,
            "Oldest pending review age",
            f"Age of the oldest item waiting for review; MLReviewBacklogGrowing fires beyond "
            f"{config.review_pending_sla_seconds / 3600:g} hours.",
            [p.Query(e.gauge(n.REVIEW_OLDEST_PENDING, window=False), p.legend(V))],
            unit=units.Seconds,
            min_val=0,
            threshold_steps=p.red_above(config.review_pending_sla_seconds),
        ),
        _strata(config, e),
    ]


def _strata(config: MixinConfig, e: Exprs) -> p.PanelBuilder:
    """Per stratum over the alert's window: predictions, selected, reviewed, errors."""
    w = config.review_error_rate_window
    keys = ", ".join(STRATUM)
    sel = matchers(e.model_matcher, e.version_matcher, e.segment_matcher)
    sampled = f"sum by ({keys}) (increase({n.REVIEW_SAMPLED.series}{e.app(e.segment_matcher)}[{w}]))"
    columns = {"A": "Population", "B": "Sampled", "C": "Labelled", "D": "Errors"}
    queries = [
        p.Query(f"sum by ({keys}) ({n.windowed(n.REVIEW_POPULATION_RECORD, w)}{sel})"),
        p.Query(sampled),
        p.Query(f"sum by ({keys}) ({n.windowed(n.REVIEW_LABELLED_RECORD, w)}{sel})"),
        p.Query(f"sum by ({keys}) ({n.windowed(n.REVIEW_ERRORS_RECORD, w)}{sel})"),
    ]
    labels = {
        n.LABEL_MODEL_NAME: "Model",
        n.LABEL_MODEL_VERSION: "Version",
        n.LABEL_SEGMENT_KEY: "Segment key",
        n.LABEL_SEGMENT: "Segment",
        n.LABEL_STRATUM: "Stratum",
    }
    return p.table_panel(
        904,
        f"Population, sampled and labelled per stratum ({w})",
        "Per review stratum (segment x score bin, with extra bins at the threshold): predictions (N_h), "
        "selected for review, reviewed (r_h) and found wrong (e_h). The weighted rate uses N_h e_h / r_h: a "
        "stratum with few reviews weighs as much as its population, and one with none is left out. Sampled "
        "but not labelled is the backlog.",
        queries,
        columns=columns,
        labels=labels,
        sort_by="Population",
    )


def fleet_economics_panels(config: MixinConfig, e: Exprs) -> Items:
    """The fleet's Cost and review row (ids 700-799): every model version side by side."""
    w = cost_windows(config)[0]
    mv_legend = p.legend(n.LABEL_MODEL_NAME, V)
    per_1k = _recorded(e, n.windowed(n.COST_PER_1K_RECORD, w), f"{MV}, {BASIS}", f'{SOURCE}="{n.ALL}"')
    review = n.windowed(n.REVIEW_ERROR_RATE_RECORD, config.review_error_rate_window)
    overall = f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"'
    return [
        p.row(700, "Cost and review"),
        p.timeseries_panel(
            701,
            f"Cost per 1K predictions by model and basis ({w})",
            "USD per 1,000 predictions of every model version, per basis (configured_rate, allocation, billed; "
            "never summed). The model view's Cost row breaks it down by source and segment.",
            [p.Query(per_1k, f"{mv_legend} {p.legend(BASIS)}")],
            unit=units.Dollars,
            min_val=0,
        ),
        p.share_panel(
            702,
            f"Reviewed error rate by model ({config.review_error_rate_window})",
            "Share of predictions human reviewers judge wrong, weighted by stratum population, per model version "
            "(all review segments). The model view's Review row shows its standard error and strata.",
            [p.Query(_recorded(e, review, MV, overall), mv_legend)],
        ),
    ]
