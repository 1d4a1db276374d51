"""The model dashboard's versions row: is the candidate (shadow or canary) as good as the version it replaces?

Read top down, as on-call does after MLVersionRollback or MLShadowDisagreement: the verdict the
rollout controller reads, the check that decided it, then the evidence per check (flips and
their Wilson bounds per segment, the score difference, realised metrics per version, decision
rates, score PSI, errors and latency), and last whether the shadow was even scored (drops).

Two kinds of series: the app's shadow counters (live, per rate interval) and the version
comparison's recording rules over a fixed window (``ml:<stem>:<window>``, windows from
``MixinConfig.version_windows``). The app's counters carry ``ml_model_version`` (the primary) and
``ml_shadow_version``; every recording rule names the candidate and the reference instead. Each
query requires the labels its legend names (``label!=""``), so a renamed label shows as "No data"
in the end-to-end test instead of one unlabelled line.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import units

from .. import _names as n
from . import _panels as p
from ._evaluation_rules import online_record
from ._promql import ALL_SEGMENTS, MV, RATE_INTERVAL, SEGMENT_LABELS, Exprs, M, V, matchers
from ._version_rules import version_windows
from .config import MixinConfig

__all__ = ["version_panels"]

SHADOW = n.LABEL_SHADOW_VERSION
CANDIDATE = n.LABEL_CANDIDATE_VERSION
REFERENCE = n.LABEL_REFERENCE_VERSION
PAIR = f"{M}, {CANDIDATE}, {REFERENCE}"  # one comparison: model, candidate, reference
SHADOW_PAIR = f"{MV}, {SHADOW}"  # one shadow comparison: model, primary version, shadow version

VS = f"{p.legend(CANDIDATE)} vs {p.legend(REFERENCE)}"
SHADOW_VS = f"{p.legend(SHADOW)} vs {p.legend(V)}"
SEGMENT = f"{p.legend(n.LABEL_SEGMENT_KEY)}={p.legend(n.LABEL_SEGMENT)}"

Items = list[db.Row | p.PanelBuilder]


def _present(*labels: str) -> tuple[str, ...]:
    """Matchers requiring each label: a series without it matches nothing."""
    return tuple(f'{label}!=""' for label in labels)


def _pairwise(e: Exprs, record: str, by: str, *extra: str, agg: str = "max") -> str:
    """A version_* recording rule per (model, candidate, reference) and ``by``."""
    sel = matchers(e.model_matcher, *_present(CANDIDATE, REFERENCE), *extra)
    return f"{agg} by ({by}) ({record}{sel})"


def _shadowed(e: Exprs, record: str, by: str, *extra: str) -> str:
    """A shadow_* recording rule per (model, candidate, reference) and ``by``; the selected
    versions are the primaries (the references) whose shadows are shown."""
    reference = e.version_matcher.replace(V, REFERENCE, 1)
    sel = matchers(e.model_matcher, reference, *_present(CANDIDATE), *extra)
    return f"max by ({by}) ({record}{sel})"


def version_panels(config: MixinConfig, e: Exprs) -> Items:
    """Rows and panels of the versions row, in layout order (ids 700-799)."""
    return [
        p.row(700, "Versions"),
        *_verdicts(config, e),
        *_shadow_evidence(config, e),
        *_canary_evidence(config, e),
        *_shadow_health(e),
    ]


def _verdicts(config: MixinConfig, e: Exprs) -> Items:
    """The verdict per window, and the checks it is the worst of."""
    windows = version_windows(config)
    first = windows[0]
    return [
        p.state_timeline_panel(
            701,
            "Version verdict",
            "Per candidate and reference: promote (every check's confidence bound inside its budget), "
            "inconclusive (too few pairs or predictions, or data missing: never promote) or roll back "
            f"(a check's bound outside its budget). Argo Rollouts and Flagger read the {first} verdict; "
            "MLVersionRollback pages on roll back.",
            [
                p.Query(_pairwise(e, n.windowed(n.VERSION_VERDICT_RECORD, w), PAIR, agg="min"), f"{w} {VS}")
                for w in windows
            ],
            mappings=p.version_verdict_mappings(),
            span=24,
            height=6,
        ),
        p.state_timeline_panel(
            702,
            f"Version checks ({first}, worst segment)",
            "Each check of the verdict, worst segment first: flip_rate (shadow decisions that differ), "
            "paired_accuracy (McNemar on labelled pairs), decision_rate, error_rate and latency (canary "
            "against the reference over the same window). The verdict is the worst of these.",
            [
                p.Query(
                    _pairwise(e, n.windowed(n.VERSION_CHECK_RECORD, first), f"{PAIR}, {n.LABEL_CHECK}", agg="min"),
                    f"{p.legend(n.LABEL_CHECK)} {VS}",
                )
            ],
            mappings=p.version_verdict_mappings(),
            span=24,
            height=8,
        ),
    ]


def _shadow_evidence(config: MixinConfig, e: Exprs) -> Items:
    """Flips per segment with their bounds, flips by kind, the score difference, paired accuracy."""
    return [*_flips(config, e), *_shadow_scores(config, e)]


def _flips(config: MixinConfig, e: Exprs) -> Items:
    """The flip ratio per segment with its Wilson bounds, and flips by kind from the app's counters."""
    first = version_windows(config)[0]
    by_segment = f"{PAIR}, {SEGMENT_LABELS}"
    seg = e.segment_matcher
    ratio = [
        (n.SHADOW_FLIP_RATIO_RECORD, "flip ratio"),
        (n.SHADOW_FLIP_RATIO_LOWER_RECORD, "lower"),
        (n.SHADOW_FLIP_RATIO_UPPER_RECORD, "upper"),
    ]
    pairs = n.SHADOW_PAIRS.series
    flips = f'{n.LABEL_FLIP}!="{n.FLIP_NONE}"'
    return [
        p.timeseries_panel(
            703,
            f"Flip ratio by segment, with Wilson bounds ({first})",
            "Share of shadow-scored requests whose decision differs between the two versions, per segment, "
            "with its Wilson confidence interval. The flip_rate check rolls back when the lower bound is above "
            "the budget and passes when the upper bound is below it.",
            [
                p.Query(_shadowed(e, n.windowed(record, first), by_segment, seg), f"{name} {VS} {SEGMENT}")
                for record, name in ratio
            ],
            unit=units.PercentUnit,
            min_val=0,
        ),
        p.timeseries_panel(
            704,
            "Flips / s by kind",
            "Requests the two versions decide differently, live from the app's counters, by flip "
            "(primary decision _to_ shadow decision): one direction only usually means a shifted score scale.",
            [
                p.Query(
                    f"sum by ({SHADOW_PAIR}, {n.LABEL_FLIP}) "
                    f"(rate({pairs}{e.app(ALL_SEGMENTS, flips)}[{RATE_INTERVAL}]))",
                    f"{p.legend(n.LABEL_FLIP)} {SHADOW_VS}",
                )
            ],
            unit=units.OpsPerSecond,
            min_val=0,
        ),
    ]


def _shadow_scores(config: MixinConfig, e: Exprs) -> Items:
    """How far the shadow's scores are from the primary's, and who is right on labelled pairs."""
    first = version_windows(config)[0]
    by_segment = f"{PAIR}, {SEGMENT_LABELS}"
    return [
        p.heatmap_panel(
            705,
            "Score difference, shadow minus primary",
            "Requests per bucket of (shadow score - primary score) on the same input, symmetric around 0, all "
            "selected versions. A band off 0 is a shifted score; a wide spread is a different ranking.",
            p.Query(
                f"sum by ({n.LABEL_LE}) "
                f"(increase({n.SHADOW_SCORE_DIFFERENCE.bucket_series}{e.app()}[{RATE_INTERVAL}]))",
                p.legend(n.LABEL_LE),
            ),
        ),
        p.timeseries_panel(
            706,
            f"Paired accuracy, shadow minus primary ({first})",
            "On labelled requests both versions scored: accuracy of the shadow minus the primary per segment. "
            "The paired_accuracy check is McNemar's non-inferiority test on the discordant pairs.",
            [
                p.Query(
                    _shadowed(e, n.windowed(n.SHADOW_ACCURACY_DIFFERENCE_RECORD, first), by_segment, e.segment_matcher),
                    f"{VS} {SEGMENT}",
                )
            ],
            unit=units.PercentUnit,
        ),
    ]


def _canary_evidence(config: MixinConfig, e: Exprs) -> Items:
    """Realised metrics per version, decision-rate differences, score PSI, error and latency ratios."""
    return [_realised(config, e), *_canary_ratios(config, e)]


def _realised(config: MixinConfig, e: Exprs) -> p.PanelBuilder:
    """The evaluation loop's realised metrics, one line per selected version, over the longest window."""
    last = version_windows(config)[-1]
    overall = f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"'
    realised = [("roc_auc", "AUC"), ("accuracy", "accuracy")]
    selected = matchers(e.model_matcher, e.version_matcher, overall)
    return p.timeseries_panel(
        707,
        f"Realised metrics per version ({last})",
        "AUC and accuracy on labelled predictions, side by side for every selected version (pick the "
        "candidate and the reference in Version): the realised evidence behind paired_accuracy.",
        [
            p.Query(
                f"max by ({MV}) ({online_record(metric, last)}{selected})",
                f"{name} {p.legend(V)}",
            )
            for metric, name in realised
        ],
        max_val=1,
        span=24,
    )


def _canary_ratios(config: MixinConfig, e: Exprs) -> Items:
    """Candidate against reference over the same window: decision rates, score PSI, errors, latency."""
    first = version_windows(config)[0]
    # error rates, not their ratio: with no errors on the reference the ratio has no sample
    ratios = [
        (n.VERSION_CANDIDATE_ERROR_RATE_RECORD, "candidate error rate"),
        (n.VERSION_REFERENCE_ERROR_RATE_RECORD, "reference error rate"),
        (n.VERSION_LATENCY_P99_RATIO_RECORD, "p99 latency ratio"),
    ]
    return [
        p.timeseries_panel(
            708,
            f"Decision-rate difference by segment ({first})",
            "Candidate minus reference share of the positive decision per segment, over the same window "
            "(different requests): the decision_rate check's two-proportion test reads these.",
            [
                p.Query(
                    _pairwise(
                        e,
                        n.windowed(n.VERSION_DECISION_RATE_DIFFERENCE_RECORD, first),
                        f"{PAIR}, {SEGMENT_LABELS}",
                        e.segment_matcher,
                    ),
                    f"{VS} {SEGMENT}",
                )
            ],
            unit=units.PercentUnit,
            span=8,
        ),
        p.timeseries_panel(
            709,
            f"Score PSI, candidate vs reference ({first})",
            "Population stability index of the candidate's score distribution against the reference's over "
            "the same window: a canary sees other requests, so a small PSI is expected, a large one is a "
            "different model.",
            [p.Query(_pairwise(e, n.windowed(n.VERSION_SCORE_PSI_RECORD, first), PAIR), VS)],
            min_val=0,
            span=8,
        ),
        p.timeseries_panel(
            710,
            f"Error rates and p99 latency ratio, candidate and reference ({first})",
            "Share of calls that raised for the candidate and for the reference, and the candidate's p99 "
            "latency divided by the reference's (1 is parity); the error_rate and latency checks roll back "
            "when the candidate is confidently worse by more than their budgets.",
            [p.Query(_pairwise(e, n.windowed(record, first), PAIR), f"{name} {VS}") for record, name in ratios],
            min_val=0,
            span=8,
        ),
    ]


def _shadow_health(e: Exprs) -> Items:
    """Whether the shadow was scored at all: pairs compared and requests dropped, by reason."""
    pairs = f"sum by ({SHADOW_PAIR}) (rate({n.SHADOW_PAIRS.series}{e.app(ALL_SEGMENTS)}[{RATE_INTERVAL}]))"
    dropped = f"sum by ({SHADOW_PAIR}, {n.LABEL_REASON}) (rate({n.SHADOW_DROPPED.series}{e.app()}[{RATE_INTERVAL}]))"
    return [
        p.timeseries_panel(
            711,
            "Shadow pairs and drops / s",
            "Requests the shadow scored and compared, and requests it dropped by reason (queue_full: the "
            "shadow cannot keep up; error: it raised; timeout: too slow). The served call is never affected; "
            "MLShadowDropping pages when queue_full drops are too large a share of the submitted requests. Drops "
            "show 0 while a shadow has none.",
            [
                p.Query(pairs, f"pairs {SHADOW_VS}"),
                p.Query(
                    f"({dropped} or on({SHADOW_PAIR}) ({pairs} * 0))", f"dropped {p.legend(n.LABEL_REASON)} {SHADOW_VS}"
                ),
            ],
            unit=units.OpsPerSecond,
            min_val=0,
            span=24,
        ),
    ]
