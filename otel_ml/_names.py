"""Every metric name, unit and attribute key otel-ml emits, in one place.

Each instrument is declared once with its OpenTelemetry name and unit (semantic-convention
style: dotted, no ``_total``, unit as UCUM) and the exact Prometheus series name that name
becomes after the standard OTel-to-Prometheus translation (dots to underscores, ``s`` to
``_seconds``, counters gain ``_total``). The app's collector, the OTLP exporter, the sidecar
and the operations kit all import these constants, so a rename happens here or nowhere.
The module is one long table on purpose (about 40 declarations): splitting it would give a
name two places to be looked up in. The one spelling of a bucket bound (``le``) lives here too;
what user data may become a label is ``_label_hygiene``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, Literal, NamedTuple

from prometheus_client.utils import floatToGoString

__all__ = [
    "Instrument",
    "INSTRUMENTS",
    "format_le",
    "le_labels",
    "bin_bounds",
    "normalize_le",
    "instrument_of_sample",
]

Kind = Literal["counter", "histogram", "gauge"]


class Instrument(NamedTuple):
    """One metric: its OTel identity and the Prometheus family it is exposed as."""

    otel_name: str
    unit: str
    kind: Kind
    prometheus: str  # family name, without _total/_bucket suffixes
    description: str

    @property
    def series(self) -> str:
        """The sample name a counter is scraped as (``<family>_total``), else the family name."""
        return self.prometheus + "_total" if self.kind == "counter" else self.prometheus

    @property
    def bucket_series(self) -> str:
        """A histogram's cumulative bucket samples (``<family>_bucket{le=...}``)."""
        return self.prometheus + "_bucket"

    @property
    def count_series(self) -> str:
        """A histogram's observation count sample (``<family>_count``)."""
        return self.prometheus + "_count"

    @property
    def sum_series(self) -> str:
        """A histogram's sum of observed values (``<family>_sum``)."""
        return self.prometheus + "_sum"

    @property
    def sample_names(self) -> tuple[str, ...]:
        """Every sample name the family is exposed with: three for a histogram, else one."""
        if self.kind == "histogram":
            return (self.bucket_series, self.count_series, self.sum_series)
        return (self.series,)


# --- attribute keys (OTel) and the Prometheus labels they become ------------------------------
ATTR_MODEL_NAME: Final = "ml.model.name"
ATTR_MODEL_VERSION: Final = "ml.model.version"
ATTR_FEATURE: Final = "ml.feature"
ATTR_CATEGORY: Final = "ml.category"
ATTR_SEGMENT_KEY: Final = "ml.segment.key"
ATTR_SEGMENT: Final = "ml.segment"
ATTR_DECISION: Final = "ml.decision"
ATTR_ERROR_TYPE: Final = "error.type"
ATTR_FALLBACK_REASON: Final = "ml.fallback.reason"

# span-only attributes
ATTR_REQUEST_ID: Final = "ml.request.id"
ATTR_SCORE: Final = "ml.prediction.score"
ATTR_PREDICTION_TOKEN: Final = "ml.prediction.token"  # the signed token of a single-row call (labels by token)
ATTR_SCORE_MEAN: Final = "ml.prediction.score_mean"
ATTR_PREDICTION_DECISION: Final = "ml.prediction.decision"
ATTR_BATCH_SIZE: Final = "ml.batch.size"
ATTR_FALLBACK: Final = "ml.prediction.fallback"
ATTR_SEGMENT_PREFIX: Final = "ml.segment."  # + segment key, e.g. ml.segment.region
ATTR_FEATURE_PREFIX: Final = "ml.feature."  # + feature name, only with record_features=True
SPAN_NAME: Final = "ml.predict"


def prometheus_label(attribute: str) -> str:
    """The Prometheus label an OTel attribute key becomes (``ml.model.name`` -> ``ml_model_name``)."""
    return attribute.replace(".", "_")


LABEL_MODEL_NAME: Final = prometheus_label(ATTR_MODEL_NAME)
LABEL_MODEL_VERSION: Final = prometheus_label(ATTR_MODEL_VERSION)
LABEL_FEATURE: Final = prometheus_label(ATTR_FEATURE)
LABEL_CATEGORY: Final = prometheus_label(ATTR_CATEGORY)
LABEL_SEGMENT_KEY: Final = prometheus_label(ATTR_SEGMENT_KEY)
LABEL_SEGMENT: Final = prometheus_label(ATTR_SEGMENT)
LABEL_DECISION: Final = prometheus_label(ATTR_DECISION)
LABEL_ERROR_TYPE: Final = prometheus_label(ATTR_ERROR_TYPE)
LABEL_FALLBACK_REASON: Final = prometheus_label(ATTR_FALLBACK_REASON)
LABEL_WINDOW: Final = "ml_window"
LABEL_LE: Final = "le"

# --- reserved label values --------------------------------------------------------------------
OTHER: Final = "__other__"  # cardinality overflow, and the baseline's rare-category bucket
UNKNOWN: Final = "__unknown__"  # a category the baseline never saw
ALL: Final = "__all__"  # the segment key/value that counts every prediction once

# --- app instruments: what @monitor counts ----------------------------------------------------
FEATURE_VALUE: Final = Instrument(
    "ml.feature.value",
    "{value}",
    "histogram",
    "ml_feature_value",
    "Numeric feature values, bucketed by the baseline's bin edges.",
)
FEATURE_CATEGORY: Final = Instrument(
    "ml.feature.category",
    "{observation}",
    "counter",
    "ml_feature_category",
    "Categorical feature observations by vocabulary entry; unseen values count as __unknown__.",
)
FEATURE_MISSING: Final = Instrument(
    "ml.feature.missing",
    "{observation}",
    "counter",
    "ml_feature_missing",
    "Feature observations that were absent, None or NaN.",
)
PREDICTION_SCORE: Final = Instrument(
    "ml.prediction.score",
    "{score}",
    "histogram",
    "ml_prediction_score",
    "Model scores, bucketed by the baseline's score bin edges.",
)
PREDICTIONS: Final = Instrument(
    "ml.predictions",
    "{prediction}",
    "counter",
    "ml_predictions",
    "Predictions by segment and decision; every prediction is counted once per segment key.",
)
PREDICTION_DURATION: Final = Instrument(
    "ml.prediction.duration",
    "s",
    "histogram",
    "ml_prediction_duration_seconds",
    "Wall time of one call of the instrumented inference function.",
)
PREDICTION_ERRORS: Final = Instrument(
    "ml.prediction.errors",
    "{error}",
    "counter",
    "ml_prediction_errors",
    "Calls of the inference function that raised, by exception type.",
)
PREDICTION_FALLBACKS: Final = Instrument(
    "ml.prediction.fallbacks",
    "{call}",
    "counter",
    "ml_prediction_fallbacks",
    "Calls that answered with a fallback instead of the model, by reason.",
)
INSTRUMENTATION_ERRORS: Final = Instrument(
    "ml.instrumentation.errors",
    "{error}",
    "counter",
    "ml_instrumentation_errors",
    "Failures inside otel-ml itself; the inference result was passed through unchanged.",
)
CARDINALITY_OVERFLOW: Final = Instrument(
    "ml.cardinality.overflow",
    "{observation}",
    "counter",
    "ml_cardinality_overflow",
    "Observations whose label value was folded into __other__ by the cardinality budget.",
)
ATTR_ATTRIBUTE: Final = "ml.attribute"  # which segment key, feature or label overflowed
LABEL_ATTRIBUTE: Final = prometheus_label(ATTR_ATTRIBUTE)

# --- shadow scoring: a second version scored off the request path on the same input ------------
# The comparison series carry the primary's ml_model_version and the shadow's ml_shadow_version.
ATTR_SHADOW_VERSION: Final = "ml.shadow.version"
LABEL_SHADOW_VERSION: Final = prometheus_label(ATTR_SHADOW_VERSION)
ATTR_FLIP: Final = "ml.flip"  # "none", or "<primary decision>_to_<shadow decision>"
LABEL_FLIP: Final = prometheus_label(ATTR_FLIP)
FLIP_NONE: Final = "none"
ATTR_DROP_REASON: Final = "reason"
SHADOW_DROP_REASONS: Final = ("queue_full", "error", "timeout")
# span-only: on the shadow's own ml.predict span, the version whose request it shadowed
ATTR_SHADOW_OF: Final = "ml.shadow.primary_version"
SHADOW_PAIRS: Final = Instrument(
    "ml.shadow.pairs",
    "{pair}",
    "counter",
    "ml_shadow_pairs",
    "Requests scored by the primary and a shadow version, by segment and decision flip (none = same decision).",
)
SHADOW_SCORE_DIFFERENCE: Final = Instrument(
    "ml.shadow.score_difference",
    "{score}",
    "histogram",
    "ml_shadow_score_difference",
    "Shadow score minus primary score on the same request (symmetric buckets around 0).",
)
SHADOW_DROPPED: Final = Instrument(
    "ml.shadow.dropped",
    "{request}",
    "counter",
    "ml_shadow_dropped",
    "Requests the shadow did not score or compare, by reason (queue_full, error, timeout).",
)
# Buckets of shadow - primary: symmetric, finer near 0 where most pairs of close versions fall.
_SHADOW_HALF: Final = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
SHADOW_DIFFERENCE_BUCKETS: Final[tuple[float, ...]] = (*(-b for b in reversed(_SHADOW_HALF)), 0.0, *_SHADOW_HALF)

# --- unit economics: CPU time, cost with a declared basis, tokens, the price table -------------
# ml_cost_usd_total carries where a cost comes from and how it was priced; different bases are
# never summed (a configured rate, an allocation of the node bill, a vendor's bill).
ATTR_COST_SOURCE: Final = "ml.cost.source"
LABEL_COST_SOURCE: Final = prometheus_label(ATTR_COST_SOURCE)
ATTR_COST_BASIS: Final = "ml.cost.basis"
LABEL_COST_BASIS: Final = prometheus_label(ATTR_COST_BASIS)
COST_COMPUTE: Final = "compute"  # CPU time x $/CPU-hour, GPU wall share x $/GPU-hour
COST_API: Final = "api"  # what the app reports per call (otel_ml.add_cost)
COST_TOKENS: Final = "tokens"  # input/output tokens x the price table
COST_SOURCES: Final = (COST_COMPUTE, COST_API, COST_TOKENS)
BASIS_CONFIGURED_RATE: Final = "configured_rate"
BASIS_ALLOCATION: Final = "allocation"  # OpenCost's node prices x the pod's allocation (recording rule only)
BASIS_BILLED: Final = "billed"
COST_BASES: Final = (BASIS_CONFIGURED_RATE, BASIS_ALLOCATION, BASIS_BILLED)
# OpenTelemetry GenAI semantic conventions: the token type attribute and the span usage attributes
ATTR_TOKEN_TYPE: Final = "gen_ai.token.type"
LABEL_TOKEN_TYPE: Final = prometheus_label(ATTR_TOKEN_TYPE)
TOKEN_TYPES: Final = ("input", "output")
ATTR_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
ATTR_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
ATTR_COST_USD: Final = "ml.cost.usd"  # span-only: the cost the app reported for the call (add_cost)
ATTR_PRICE_HASH: Final = "ml.price.hash"  # the price table's content hash (12 hex digits of SHA-256)
LABEL_PRICE_HASH: Final = prometheus_label(ATTR_PRICE_HASH)
ATTR_PRICE_UPDATED: Final = "ml.price.updated"  # the table's own "updated" date, as written (RFC 3339)
LABEL_PRICE_UPDATED: Final = prometheus_label(ATTR_PRICE_UPDATED)
PREDICTION_CPU: Final = Instrument(
    "ml.prediction.cpu",
    "s",
    "counter",
    "ml_prediction_cpu_seconds",
    "CPU time of the calling thread during sync calls: a lower bound (other threads' work, BLAS's, is not in it).",
)
PROCESS_CPU: Final = Instrument(
    "ml.process.cpu",
    "s",
    "counter",
    "ml_process_cpu_seconds",
    "CPU time of the processes serving the model, all threads: the attribution ratio's denominator (never sum models).",
)
COST: Final = Instrument(
    "ml.cost.usd",
    "{USD}",  # no UCUM unit for money: the currency is in the name, as OTel's translation keeps it
    "counter",
    "ml_cost_usd",
    "Cost of the model's predictions in US dollars, by ml_cost_source and ml_cost_basis (never sum different bases).",
)
TOKENS: Final = Instrument(
    "ml.tokens",
    "{token}",
    "counter",
    "ml_tokens",
    "Tokens the model's calls used, by gen_ai_token_type (input, output), as the app reported them (add_tokens).",
)
PRICE_CONFIG_INFO: Final = Instrument(
    "ml.price.config.info",
    "",
    "gauge",
    "ml_price_config_info",
    "The price table the process prices with (1): its content hash and its updated date.",
)
PRICE_CONFIG_UPDATED: Final = Instrument(
    "ml.price.config.updated",
    "s",
    "gauge",
    "ml_price_config_updated_timestamp_seconds",
    "Unix time of the price table's updated date: how stale the prices are.",
)

# --- human review: stratified hash sampling whose inclusion probabilities travel with the ids ---
# A stratum is (model, version, segment, review bin): the score's bins plus extra edges around
# the decision threshold. ml_stratum spells the review bin as an interval, e.g. "(0.65,0.7]".
ATTR_STRATUM: Final = "ml.stratum"
LABEL_STRATUM: Final = prometheus_label(ATTR_STRATUM)
REVIEW_CORRECT: Final = "correct"
REVIEW_ERROR: Final = "error"
REVIEW_OUTCOMES: Final = (REVIEW_CORRECT, REVIEW_ERROR)
REVIEW_SOURCE: Final = "review"  # the ml_source of labels that answer a review item
STRATUM_NO_SCORE: Final = "none"  # the ml_stratum of calls without a finite score (the last stratum)
REVIEW_DROP_BUFFER_FULL: Final = "buffer_full"  # the app's review client had no room (submit() -> False)
REVIEW_DROP_SEND_FAILED: Final = "send_failed"  # still unsent when the process exited
REVIEW_DROP_REJECTED: Final = "rejected"  # the sidecar answered 4xx/507, or the item is not JSON
# span-only
ATTR_REVIEW_SAMPLED: Final = "ml.review.sampled"
ATTR_REVIEW_PROBABILITY: Final = "ml.review.inclusion_probability"
REVIEW_DROP_REASONS: Final = (REVIEW_DROP_BUFFER_FULL, REVIEW_DROP_SEND_FAILED, REVIEW_DROP_REJECTED)
REVIEW_POPULATION: Final = Instrument(
    "ml.review.population",
    "{prediction}",
    "counter",
    "ml_review_population",
    "Predictions by review stratum (ml_segment_key, ml_segment, ml_stratum): the N_h of the stratified estimate.",
)
REVIEW_SAMPLED: Final = Instrument(
    "ml.review.sampled",
    "{prediction}",
    "counter",
    "ml_review_sampled",
    "Predictions selected for human review by hash64(salt, request_id) < pi * 2^64, by stratum.",
)
REVIEW_DROPPED: Final = Instrument(
    "ml.review.dropped",
    "{prediction}",
    "counter",
    "ml_review_dropped",
    "Selected predictions the app could not hand to the sidecar's review queue, by reason.",
)
REVIEW_LABELLED: Final = Instrument(
    "ml.review.labelled",
    "{prediction}",
    "counter",
    "ml_review_labelled",
    "Reviewed predictions by stratum and ml_outcome (correct, error): the r_h and e_h of the stratified estimate.",
)
REVIEW_QUEUED: Final = Instrument(
    "ml.review.queued",
    "{prediction}",
    "counter",
    "ml_review_queued",
    "Review items the sidecar accepted into its queue (a retried item is counted once).",
)
REVIEW_QUEUE_DROPPED: Final = Instrument(
    "ml.review.queue.dropped",
    "{prediction}",
    "counter",
    "ml_review_queue_dropped",
    "Review items the sidecar's queue refused or let go unreviewed, by reason (full, expired).",
)
REVIEW_WEBHOOK_FAILURES: Final = Instrument(
    "ml.review.webhook.failures",
    "{request}",
    "counter",
    "ml_review_webhook_failures",
    "Failed deliveries to the review webhook (connection, timeout, non-2xx); the batch is sent again.",
)
REVIEW_PENDING: Final = Instrument(
    "ml.review.pending",
    "{prediction}",
    "gauge",
    "ml_review_pending",
    "Review items queued and not yet labelled.",
)
REVIEW_OLDEST_PENDING: Final = Instrument(
    "ml.review.oldest_pending.age",
    "s",
    "gauge",
    "ml_review_oldest_pending_age_seconds",
    "Age of the oldest review item not yet labelled (0 when none is pending).",
)
# the sidecar's review queue: why an item left it unreviewed, and why a review label found none
REVIEW_QUEUE_FULL: Final = "full"
REVIEW_QUEUE_EXPIRED: Final = "expired"
REVIEW_QUEUE_DROP_REASONS: Final = (REVIEW_QUEUE_FULL, REVIEW_QUEUE_EXPIRED)
REVIEW_NOT_QUEUED: Final = "not_queued"  # ml_labels_unmatched_total reason: a review label for no queued item
REVIEW_NO_DECISION: Final = "no_decision"  # ... for an item whose prediction had no decision to judge

# --- cost and review recording rules and alerts (the mixin's; add new ones below this line) ---
COST_RATE_RECORD: Final = "ml:cost_usd_per_second"  # by model, version, ml_cost_source, ml_cost_basis
COST_PER_1K_RECORD: Final = "ml:cost_per_1k_predictions"  # 1000 x cost / predictions, per basis
CPU_ATTRIBUTION_RECORD: Final = "ml:prediction_cpu_attribution_ratio"
POD_ALLOCATION_COST_RECORD: Final = "ml:pod_cost_usd_per_second"  # OpenCost series, per namespace and pod
REVIEW_ERROR_RATE_RECORD: Final = "ml:review_error_rate"  # stratified inverse-probability-weighted estimate
REVIEW_ERROR_RATE_STDERR_RECORD: Final = "ml:review_error_rate_stderr"
ALERT_COST_OVER_BUDGET: Final = "MLCostOverBudget"
ALERT_PRICES_STALE: Final = "MLPricesStale"
ALERT_REVIEW_BACKLOG: Final = "MLReviewBacklogGrowing"
ALERT_REVIEW_ERROR_RATE: Final = "MLReviewErrorRateOutOfBand"
# (helper M, issue 16) the per-segment cost, the allocation cost's pieces and the review estimate's inputs
SEGMENT_COST_PER_1K_RECORD: Final = "ml:segment_cost_per_1k_predictions"  # where ml_cost_usd_total has segment labels
POD_PREDICTION_SHARE_RECORD: Final = "ml:pod_prediction_share"  # the model's share of its pod's predictions
# per model, instant (recorded each evaluation): the pods' allocated cost and the predictions it pays for
ALLOCATION_COST_RECORD: Final = "ml:allocation_cost_usd_per_second"
ALLOCATION_PREDICTIONS_RECORD: Final = "ml:allocation_predictions_per_second"
REVIEW_POPULATION_RECORD: Final = "ml:review_population"  # N_h: increase over the window, per stratum
REVIEW_LABELLED_RECORD: Final = "ml:review_labelled"  # r_h
REVIEW_ERRORS_RECORD: Final = "ml:review_errors"  # e_h (0 where a reviewed stratum had no error)
REVIEW_REVIEWED_RECORD: Final = "ml:review_reviewed"  # sum of r_h per model, version and segment
# the z-test's standard error: each stratum's rate smoothed to (e_h + 0.5) / (r_h + 1), so it is never 0
REVIEW_ERROR_RATE_TEST_STDERR_RECORD: Final = "ml:review_error_rate_test_stderr"
# OpenCost's exporter series the allocation rule prices pods with (opencost/opencost, pkg/costmodel
# metrics.go): containers carry namespace, pod, container, node (and instance, deprecated, holding
# the node name too); node prices carry node (and instance, instance_type, region, ...). The join is
# on node: Prometheus overwrites instance with the scrape target unless honor_labels is set.
OPENCOST_CPU_ALLOCATION: Final = "container_cpu_allocation"  # CPUs, max(request, usage)
OPENCOST_MEMORY_ALLOCATION: Final = "container_memory_allocation_bytes"
OPENCOST_GPU_ALLOCATION: Final = "container_gpu_allocation"
OPENCOST_NODE_CPU_COST: Final = "node_cpu_hourly_cost"  # USD per CPU-hour
OPENCOST_NODE_RAM_COST: Final = "node_ram_hourly_cost"  # USD per GiB-hour
OPENCOST_NODE_GPU_COST: Final = "node_gpu_hourly_cost"  # USD per GPU-hour
LABEL_NODE: Final = "node"
LABEL_NAMESPACE: Final = "namespace"  # Kubernetes service discovery puts these on the app's series too
LABEL_POD: Final = "pod"
LABEL_CONTAINER: Final = "container"

# --- training/serving skew: serving capture (the app's) and replays (pushed by ``otel-ml skew``) ----
CAPTURE_RECORDS: Final = Instrument(
    "ml.capture.records",
    "{record}",
    "counter",
    "ml_capture_records",
    "Served calls written to the capture spool (raw request, served features, score, decision), opt-in.",
)
CAPTURE_WRITTEN: Final = Instrument(
    "ml.capture.written",
    "By",
    "counter",
    "ml_capture_written_bytes",
    "Bytes written to the capture spool's files, headers included.",
)
CAPTURE_DROPPED: Final = Instrument(
    "ml.capture.dropped",
    "{record}",
    "counter",
    "ml_capture_dropped",
    "Sampled calls not in the spool, by reason: queue_full, too_large, unserializable, write_error, evicted.",
)
CAPTURE_DROP_QUEUE_FULL: Final = "queue_full"  # the writer thread is behind: never block the call
CAPTURE_DROP_TOO_LARGE: Final = "too_large"  # one record over Capture(max_record_bytes=)
CAPTURE_DROP_UNSERIALIZABLE: Final = "unserializable"  # the raw request or a feature is no JSON value
CAPTURE_DROP_WRITE_ERROR: Final = "write_error"  # the disk refused (full, read-only, quota)
CAPTURE_DROP_EVICTED: Final = "evicted"  # in a finished file deleted to keep the spool under its size cap
CAPTURE_DROP_REASONS: Final = (
    CAPTURE_DROP_QUEUE_FULL,
    CAPTURE_DROP_TOO_LARGE,
    CAPTURE_DROP_UNSERIALIZABLE,
    CAPTURE_DROP_WRITE_ERROR,
    CAPTURE_DROP_EVICTED,
)
ATTR_CAPTURED: Final = "ml.capture.sampled"  # span-only: the call's record went to the capture spool

# A replay's counts describe that replay (each push replaces the job's group on the Pushgateway).
ATTR_SKEW_RESULT: Final = "ml.skew.result"
LABEL_SKEW_RESULT: Final = prometheus_label(ATTR_SKEW_RESULT)
SKEW_MATCH: Final = "match"  # equal, or within --rtol/--atol for numbers; both missing counts as a match
SKEW_MISMATCH: Final = "mismatch"  # different values in the same baseline bin (or no baseline)
SKEW_MISSING_SERVING: Final = "missing_serving"  # the training pipeline has a value, serving had none
SKEW_MISSING_TRAINING: Final = "missing_training"  # serving had a value, the training pipeline gives none
SKEW_BIN_CHANGE: Final = "bin_change"  # different values in different baseline bins: the drift view moves
SKEW_RESULTS: Final = (SKEW_MATCH, SKEW_MISMATCH, SKEW_MISSING_SERVING, SKEW_MISSING_TRAINING, SKEW_BIN_CHANGE)
ATTR_SKEW_STAGE: Final = "ml.skew.stage"
LABEL_SKEW_STAGE: Final = prometheus_label(ATTR_SKEW_STAGE)
SKEW_STAGES: Final = ("pipeline", "model", "record")  # where a row failed: raised, raised, unreadable
SKEW_ROWS: Final = Instrument(
    "ml.skew.rows",
    "{row}",
    "counter",
    "ml_skew_rows",
    "Captured rows the last replay ran through the training pipeline and re-scored, by segment.",
)
SKEW_FEATURE: Final = Instrument(
    "ml.skew.feature",
    "{value}",
    "counter",
    "ml_skew_feature",
    "Feature values of the last replay by ml_skew_result: served vs the training pipeline's.",
)
SKEW_SCORE_DIFFERENCE: Final = Instrument(
    "ml.skew.score_difference",
    "{score}",
    "histogram",
    "ml_skew_score_difference",
    "Replayed score minus served score per row of the last replay (symmetric buckets around 0).",
)
SKEW_DECISION_FLIPS: Final = Instrument(
    "ml.skew.decision_flips",
    "{row}",
    "counter",
    "ml_skew_decision_flips",
    "Rows of the last replay whose replayed decision differs from the served one, by segment and ml_flip.",
)
SKEW_ROW_ERRORS: Final = Instrument(
    "ml.skew.row_errors",
    "{row}",
    "counter",
    "ml_skew_row_errors",
    "Rows the last replay could not compare, by ml_skew_stage (pipeline or model raised, record unreadable).",
)
SKEW_LAST_RUN: Final = Instrument(
    "ml.skew.last_run.timestamp",
    "s",
    "gauge",
    "ml_skew_last_run_timestamp_seconds",
    "Unix time the last replay of the model version finished.",
)
SKEW_INSTRUMENTS: Final[tuple[Instrument, ...]] = (
    SKEW_ROWS,
    SKEW_FEATURE,
    SKEW_SCORE_DIFFERENCE,
    SKEW_DECISION_FLIPS,
    SKEW_ROW_ERRORS,
    SKEW_LAST_RUN,
)
SKEW_JOB: Final = "otel_ml_skew"  # the Pushgateway job of replays; grouped by model and version
PUSHGATEWAY_PUSH_TIME: Final = "push_time_seconds"  # the Pushgateway's own gauge: when a group was last pushed
SKEW_FLIP_RATIO_RECORD: Final = "ml:skew_decision_flip_ratio"  # flips / rows of the last replay, per model
ALERT_SKEW_FLIPS: Final = "MLSkewDecisionFlipsOverBudget"
ALERT_SKEW_STALE: Final = "MLSkewReplayStale"

APP_INSTRUMENTS: Final[tuple[Instrument, ...]] = (
    FEATURE_VALUE,
    FEATURE_CATEGORY,
    FEATURE_MISSING,
    PREDICTION_SCORE,
    PREDICTIONS,
    PREDICTION_DURATION,
    PREDICTION_ERRORS,
    PREDICTION_FALLBACKS,
    INSTRUMENTATION_ERRORS,
    CARDINALITY_OVERFLOW,
    SHADOW_PAIRS,
    SHADOW_SCORE_DIFFERENCE,
    SHADOW_DROPPED,
    PREDICTION_CPU,
    PROCESS_CPU,
    COST,
    TOKENS,
    REVIEW_POPULATION,
    REVIEW_SAMPLED,
    REVIEW_DROPPED,
    CAPTURE_RECORDS,
    CAPTURE_WRITTEN,
    CAPTURE_DROPPED,
)
# The app's gauges: per-process facts (not summable counts). A scrape reads them from each
# process; the sidecar re-exposes the last value each source pushed over OTLP.
APP_GAUGES: Final[tuple[Instrument, ...]] = (PRICE_CONFIG_INFO, PRICE_CONFIG_UPDATED)

INSTRUMENTS: Final[dict[str, Instrument]] = {i.otel_name: i for i in APP_INSTRUMENTS}

# Latency buckets in seconds: the OTel SDK's default histogram bounds (0, 5, 10, ... 10000) are sized
# for milliseconds and would put every sub-second call into its first bucket.
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# --- sidecar outputs: gauges per model, version and window -----------------------------------
# Labels: ml_model_name, ml_model_version, plus ml_window ("1h", "24h", "7d", ...) and:
#   feature gauges: ml_feature;  segment gauges: ml_segment_key, ml_segment, ml_decision.
LABEL_REFERENCE: Final = "ml_reference"  # what a change is relative to: previous_window | baseline
LABEL_BIN_LOWER: Final = "ml_bin_lower"  # lower edge of a numeric reference bin ("-Inf" for the first)
# Upper edge of a numeric reference bin, spelled exactly like the app histogram's ``le`` value
# ("+Inf" for the last); not called ``le`` because promtool reserves that for histograms.
LABEL_BIN_UPPER: Final = "ml_bin_upper"
LABEL_REASON: Final = "reason"
LABEL_SOURCE: Final = "ml_source"
LABEL_OUTCOME: Final = "ml_outcome"

DRIFT_STATUS_INSUFFICIENT: Final = -1
DRIFT_STATUS_OK: Final = 0
DRIFT_STATUS_WARN: Final = 1
DRIFT_STATUS_DRIFT: Final = 2
REFERENCE_PREVIOUS: Final = "previous_window"
REFERENCE_BASELINE: Final = "baseline"


def _gauge(prometheus: str, description: str) -> Instrument:
    return Instrument(prometheus.replace("_", "."), "", "gauge", prometheus, description)


FEATURE_PSI: Final = _gauge(
    "ml_feature_psi", "Population stability index of the feature in the window vs the baseline."
)
FEATURE_PSI_CRITICAL: Final = _gauge(
    "ml_feature_psi_critical",
    "PSI a drift-free sample of this size exceeds with probability alpha / features (family-wise threshold).",
)
FEATURE_JS_DISTANCE: Final = _gauge(
    "ml_feature_js_distance", "Jensen-Shannon distance (base 2) of the window vs the baseline."
)
FEATURE_DRIFT_PVALUE: Final = _gauge(
    "ml_feature_drift_pvalue", "Chi-square test p-value of the window's bin counts vs the baseline."
)
FEATURE_DRIFT_STATUS: Final = _gauge(
    "ml_feature_drift_status", "Drift verdict: 0 ok, 1 warn, 2 drift, -1 insufficient data."
)
# promtool reserves the _count suffix for histograms and summaries, hence _observations.
FEATURE_WINDOW_COUNT: Final = _gauge(
    "ml_feature_window_observations", "Non-missing observations of the feature in the window."
)
FEATURE_MISSING_RATIO: Final = _gauge(
    "ml_feature_missing_ratio", "Share of the window's observations that were missing."
)
FEATURE_UNKNOWN_RATIO: Final = _gauge(
    "ml_feature_unknown_ratio", "Share of a categorical feature's observations the baseline never saw."
)
FEATURE_REFERENCE_RATIO: Final = _gauge(
    "ml_feature_reference_ratio",
    "Baseline fraction per bin (numeric: ml_bin_upper, ml_bin_lower) or category (ml_category).",
)
FEATURE_REFERENCE_MISSING_RATIO: Final = _gauge(
    "ml_feature_reference_missing_ratio", "Share of missing values of the feature in the baseline (training data)."
)
SCORE_PSI: Final = _gauge("ml_score_psi", "PSI of the score distribution in the window vs the baseline.")
SCORE_PSI_CRITICAL: Final = _gauge("ml_score_psi_critical", "Sample-size-aware PSI critical value for the score.")
SCORE_JS_DISTANCE: Final = _gauge("ml_score_js_distance", "Jensen-Shannon distance of the score distribution.")
SCORE_DRIFT_PVALUE: Final = _gauge("ml_score_drift_pvalue", "Chi-square test p-value of the score bins.")
SCORE_DRIFT_STATUS: Final = _gauge(
    "ml_score_drift_status", "Score drift verdict: 0 ok, 1 warn, 2 drift, -1 insufficient data."
)
SCORE_WINDOW_COUNT: Final = _gauge("ml_score_window_observations", "Scores observed in the window.")
SCORE_REFERENCE_RATIO: Final = _gauge(
    "ml_score_reference_ratio", "Baseline fraction per score bin (ml_bin_upper, ml_bin_lower)."
)
SEGMENT_DECISION_RATE: Final = _gauge(
    "ml_segment_decision_rate", "Share of the segment's predictions in the window with this decision."
)
SEGMENT_DECISION_RATE_CHANGE: Final = _gauge(
    "ml_segment_decision_rate_change",
    "Relative change of the decision rate: (now - reference) / reference; ml_reference says which.",
)
SEGMENT_DECISION_RATE_STATUS: Final = _gauge(
    "ml_segment_decision_rate_status",
    "Decision-rate verdict vs ml_reference (family-wise test): 0 ok, 1 warn, 2 changed, -1 insufficient data.",
)
SEGMENT_DECISION_RATE_PVALUE: Final = _gauge(
    "ml_segment_decision_rate_pvalue",
    "Holm-adjusted p-value of the decision-rate test (family: the model's segments x decisions in the window).",
)
SEGMENT_WINDOW_COUNT: Final = _gauge("ml_segment_window_predictions", "Predictions of the segment in the window.")
ONLINE_PRECISION: Final = _gauge(
    "ml_online_precision",
    "Precision on labelled predictions in the window: ml_threshold=served for the decision, else score > edge.",
)
ONLINE_RECALL: Final = _gauge(
    "ml_online_recall",
    "Recall on labelled predictions in the window: ml_threshold=served for the decision, else score > edge.",
)
ONLINE_F1: Final = _gauge(
    "ml_online_f1", "F1 score on labelled predictions in the window: ml_threshold=served or a score edge."
)
ONLINE_ACCURACY: Final = _gauge("ml_online_accuracy", "Accuracy of decisions on labelled predictions in the window.")
ONLINE_ROC_AUC: Final = _gauge(
    "ml_online_roc_auc", "ROC AUC of the score on labelled predictions in the window (Mann-Whitney on score bins)."
)
ONLINE_CALIBRATION_ERROR: Final = _gauge(
    "ml_online_calibration_error",
    "Expected calibration error: sum over score bins of |scores - positives| / labelled predictions.",
)
ONLINE_BRIER: Final = _gauge(
    "ml_online_brier_score", "Mean squared error of the score against the 0/1 label (calibration)."
)
ONLINE_LOG_LOSS: Final = _gauge("ml_online_log_loss", "Mean log loss of the score against the 0/1 label.")
ONLINE_LABEL_COUNT: Final = _gauge("ml_online_labels", "Labelled predictions in the window.")
ESTIMATED_ROC_AUC: Final = _gauge(
    "ml_estimated_roc_auc",
    "ROC AUC estimated without labels (CBPE) from the window's score bins and the baseline's calibration.",
)
ESTIMATED_PRECISION: Final = _gauge(
    "ml_estimated_precision", "Precision of the served threshold estimated without labels (CBPE)."
)
ESTIMATED_RECALL: Final = _gauge(
    "ml_estimated_recall", "Recall of the served threshold estimated without labels (CBPE)."
)
ESTIMATED_F1: Final = _gauge("ml_estimated_f1", "F1 of the served threshold estimated without labels (CBPE).")
ESTIMATED_ACCURACY: Final = _gauge(
    "ml_estimated_accuracy", "Accuracy of the served threshold estimated without labels (CBPE)."
)
REFERENCE_BAND_LOWER: Final = _gauge(
    "ml_reference_band_lower",
    "Reference performance - 3 standard deviations of a window this size vs the reference (ml_metric).",
)
REFERENCE_BAND_UPPER: Final = _gauge(
    "ml_reference_band_upper",
    "Reference performance + 3 standard deviations of a window this size vs the reference (ml_metric).",
)
ESTIMATED_VS_REALISED_GAP: Final = _gauge(
    "ml_estimated_vs_realised_gap", "Estimated (CBPE) minus realised performance in the same window (ml_metric)."
)
REFERENCE_PERFORMANCE: Final = _gauge(
    "ml_reference_performance", "The baseline's performance on its labelled reference data (ml_metric)."
)
REFERENCE_PERFORMANCE_STDDEV: Final = _gauge(
    "ml_reference_performance_stddev",
    "Standard deviation of the metric over reference chunks of ml_reference_chunk_predictions rows.",
)
REFERENCE_CHUNK: Final = _gauge(
    "ml_reference_chunk_predictions", "Rows per reference chunk the performance standard deviation was measured on."
)
REFERENCE_LABELLED: Final = _gauge(
    "ml_reference_labelled_predictions",
    "Labelled reference rows the reference performance was measured on (its own error is in the band).",
)
SCORE_REFERENCE_POSITIVE_RATIO: Final = _gauge(
    "ml_score_reference_positive_ratio",
    "Baseline calibration: share of positive labels per score bin (ml_bin_upper, ml_bin_lower).",
)
SCORE_REFERENCE_POSITIVE_DECISION: Final = _gauge(
    "ml_score_reference_positive_decision",
    "Baseline served rule per score bin (ml_bin_upper, ml_bin_lower): 1 if score > decision_threshold there, else 0.",
)
LABEL_COVERAGE: Final = _gauge(
    "ml_label_coverage_ratio",
    "Share of the predictions of the last whole UTC day that ended ml_cohort_age ago that have their label.",
)
LABEL_COHORT_PREDICTIONS: Final = _gauge(
    "ml_label_cohort_predictions", "Predictions in the cohort ml_cohort_age old (stored, before sampling weights)."
)
OUTCOMES: Final = Instrument(
    "ml.outcomes",
    "{prediction}",
    "counter",
    "ml_outcomes",
    "Predictions joined with their delayed label, by decision and outcome (confusion matrix counts).",
)
OUTCOME_SQUARED_ERROR: Final = Instrument(
    "ml.outcome.squared_error",
    "{score}",
    "counter",
    "ml_outcome_squared_error",
    "Sum of (score - label)^2 over joined predictions: divided by the count it is the Brier score.",
)
OUTCOME_LOG_LOSS: Final = Instrument(
    "ml.outcome.log_loss",
    "{score}",
    "counter",
    "ml_outcome_log_loss",
    "Sum of the log loss of the score against the 0/1 label over joined predictions (p clipped to 1e-15).",
)
LABELLED_SCORE: Final = Instrument(
    "ml.labelled.score",
    "{score}",
    "histogram",
    "ml_labelled_score",
    "Scores of labelled predictions by outcome, bucketed by the baseline's score edges (AUC, precision at any edge).",
)
LABELLED_SCORE_BIN_SUM: Final = Instrument(
    "ml.labelled.score.bin_sum",
    "{score}",
    "counter",
    "ml_labelled_score_bin_sum",
    "Sum of the scores of labelled predictions per score bin (ml_bin_upper): the calibration error's numerator.",
)
LABEL_DELAY: Final = Instrument(
    "ml.label.delay",
    "s",
    "histogram",
    "ml_label_delay_seconds",
    "Time from a prediction to its label's time (negative delays clamped to 0 and counted).",
)
LABEL_NEGATIVE_DELAYS: Final = Instrument(
    "ml.label.negative_delays",
    "{label}",
    "counter",
    "ml_label_negative_delays",
    "Labels timed before their prediction (clock skew between the label producer and the app).",
)
LABELS_RECEIVED: Final = Instrument(
    "ml.labels.received",
    "{label}",
    "counter",
    "ml_labels_received",
    "Labels accepted by the sidecar, by ml_source (api, review, token, inline ...).",
)
LABELS_UNMATCHED: Final = Instrument(
    "ml.labels.unmatched",
    "{label}",
    "counter",
    "ml_labels_unmatched",
    "Posted labels that joined nothing, by reason (unknown_request_id, expired, duplicate, sampled_out, ...).",
)
SIDECAR_INGEST_ERRORS: Final = Instrument(
    "ml.sidecar.ingest.errors",
    "{error}",
    "counter",
    "ml_sidecar_ingest_errors",
    "Rejected or failed inputs, by reason; state already held is never changed by them.",
)
SIDECAR_INGESTED: Final = Instrument(
    "ml.sidecar.ingested",
    "{payload}",
    "counter",
    "ml_sidecar_ingested",
    "Accepted payloads, by source (otlp, scrape, labels, traces).",
)
SIDECAR_LAST_INGEST: Final = Instrument(
    "ml.sidecar.last_ingest",
    "s",
    "gauge",
    "ml_sidecar_last_ingest_timestamp_seconds",
    "Unix time of the last accepted data for the model version.",
)
SIDECAR_COMPUTE_DURATION: Final = Instrument(
    "ml.sidecar.compute.duration",
    "s",
    "gauge",
    "ml_sidecar_compute_duration_seconds",
    "Wall time of the last recomputation of every output.",
)

SIDECAR_OVERFLOW: Final = Instrument(
    "ml.sidecar.cardinality.overflow",
    "{observation}",
    "counter",
    "ml_sidecar_cardinality_overflow",
    "Series folded into __other__ by the sidecar's own label budgets (e.g. a flood of segment values).",
)
JOIN_STORE_ROWS: Final = Instrument(
    "ml.join_store.rows", "{prediction}", "gauge", "ml_join_store_rows", "Predictions held in the on-disk join store."
)
JOIN_STORE_BYTES: Final = Instrument(
    "ml.join_store.bytes", "By", "gauge", "ml_join_store_bytes", "Bytes on disk of the join store (database and WAL)."
)
JOIN_STORE_EVICTED: Final = Instrument(
    "ml.join_store.evicted",
    "{prediction}",
    "counter",
    "ml_join_store_evicted",
    "Predictions dropped from the join store, by reason: ttl (day partition expired) or cap (sampled out).",
)
JOIN_SAMPLE_RATIO: Final = Instrument(
    "ml.join.sample_ratio",
    "1",
    "gauge",
    "ml_join_sample_ratio",
    "Share of request ids the join store keeps (2^-k above its byte cap): labelled counts are a sample of this size.",
)
# Label delay buckets in seconds: 1m, 5m, 15m, 30m, 1h, 3h, 6h, 12h, 1d, 2d, 3d, 7d, 14d, 30d.
LABEL_DELAY_BUCKETS: Final[tuple[float, ...]] = (
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    10800.0,
    21600.0,
    43200.0,
    86400.0,
    172800.0,
    259200.0,
    604800.0,
    1209600.0,
    2592000.0,
)
LABEL_THRESHOLD: Final = "ml_threshold"  # "served" (the decision) or a score edge spelled like le
THRESHOLD_SERVED: Final = "served"
LABEL_METRIC: Final = "ml_metric"  # roc_auc, precision, recall, f1, accuracy
LABEL_COHORT_AGE: Final = "ml_cohort_age"
# A label joined to a primary and a shadow prediction of one request: who was right (McNemar's b and c).
LABEL_PAIR_OUTCOME: Final = "ml_pair_outcome"
PAIR_OUTCOMES: Final = ("both_correct", "primary_only", "shadow_only", "both_wrong")
SHADOW_LABELLED_PAIRS: Final = Instrument(
    "ml.shadow.labelled_pairs",
    "{pair}",
    "counter",
    "ml_shadow_labelled_pairs",
    "Labelled requests with a primary and a shadow prediction, by segment and which decision was right.",
)
# Recording-rule labels of the version comparison (ml:version_verdict:<w>, ml:version_check:<w>).
LABEL_CANDIDATE_VERSION: Final = "ml_candidate_version"
LABEL_REFERENCE_VERSION: Final = "ml_reference_version"
LABEL_CHECK: Final = "ml_check"
# Its values: the checks a verdict is the worst of (per segment where the check is per segment).
CHECK_FLIP_RATE: Final = "flip_rate"
CHECK_PAIRED_ACCURACY: Final = "paired_accuracy"
CHECK_DECISION_RATE: Final = "decision_rate"
CHECK_ERROR_RATE: Final = "error_rate"
CHECK_LATENCY: Final = "latency"
VERSION_CHECKS: Final = (CHECK_FLIP_RATE, CHECK_PAIRED_ACCURACY, CHECK_DECISION_RATE, CHECK_ERROR_RATE, CHECK_LATENCY)
# Values of ml:version_verdict:<w> and ml:version_check:<w>: never NaN, 0 whenever data is missing.
VERDICT_PROMOTE: Final = 1
VERDICT_INCONCLUSIVE: Final = 0
VERDICT_ROLL_BACK: Final = -1
VERDICT_NAMES: Final = {
    VERDICT_PROMOTE: "promote",
    VERDICT_INCONCLUSIVE: "inconclusive",
    VERDICT_ROLL_BACK: "roll back",
}
# Recording rules of the version comparison, without their window: ``windowed(VERSION_VERDICT_RECORD, "1h")``
# is ``ml:version_verdict:1h``. All carry ml_candidate_version / ml_reference_version (for ml:shadow_*
# the shadow and its primary), never ml_model_version.
VERSION_VERDICT_RECORD: Final = "ml:version_verdict"
VERSION_CHECK_RECORD: Final = "ml:version_check"
SHADOW_PAIRS_RECORD: Final = "ml:shadow_pairs"
SHADOW_FLIP_RATIO_RECORD: Final = "ml:shadow_flip_ratio"
SHADOW_FLIP_RATIO_LOWER_RECORD: Final = "ml:shadow_flip_ratio_lower"  # Wilson bounds
SHADOW_FLIP_RATIO_UPPER_RECORD: Final = "ml:shadow_flip_ratio_upper"
SHADOW_FLIPS_RECORD: Final = "ml:shadow_flips"
SHADOW_MCNEMAR_Z_RECORD: Final = "ml:shadow_mcnemar_z"
SHADOW_ACCURACY_DIFFERENCE_RECORD: Final = "ml:shadow_accuracy_difference"
VERSION_DECISION_RATE_DIFFERENCE_RECORD: Final = "ml:version_decision_rate_difference"
VERSION_SCORE_PSI_RECORD: Final = "ml:version_score_psi"
VERSION_ERROR_RATIO_RECORD: Final = "ml:version_error_ratio"
VERSION_CANDIDATE_ERROR_RATE_RECORD: Final = "ml:version_candidate_error_rate"  # errors / calls, 0 without errors
VERSION_REFERENCE_ERROR_RATE_RECORD: Final = "ml:version_reference_error_rate"
VERSION_LATENCY_P99_RATIO_RECORD: Final = "ml:version_latency_p99_ratio"
# Alerts on the comparison (their runbooks are runbooks/<name>.md).
ALERT_SHADOW_DISAGREEMENT: Final = "MLShadowDisagreement"
ALERT_VERSION_ROLLBACK: Final = "MLVersionRollback"
ALERT_SHADOW_DROPPING: Final = "MLShadowDropping"

COHORT_AGES: Final = ("1d", "7d", "30d")  # its values: the day of predictions that ended this long ago

SIDECAR_WINDOW_GAUGES: Final[tuple[Instrument, ...]] = (
    FEATURE_PSI,
    FEATURE_PSI_CRITICAL,
    FEATURE_JS_DISTANCE,
    FEATURE_DRIFT_PVALUE,
    FEATURE_DRIFT_STATUS,
    FEATURE_WINDOW_COUNT,
    FEATURE_MISSING_RATIO,
    FEATURE_UNKNOWN_RATIO,
    SCORE_PSI,
    SCORE_PSI_CRITICAL,
    SCORE_JS_DISTANCE,
    SCORE_DRIFT_PVALUE,
    SCORE_DRIFT_STATUS,
    SCORE_WINDOW_COUNT,
    SEGMENT_DECISION_RATE,
    SEGMENT_DECISION_RATE_CHANGE,
    SEGMENT_DECISION_RATE_STATUS,
    SEGMENT_DECISION_RATE_PVALUE,
    SEGMENT_WINDOW_COUNT,
    ONLINE_PRECISION,
    ONLINE_RECALL,
    ONLINE_F1,
    ONLINE_ACCURACY,
    ONLINE_ROC_AUC,
    ONLINE_CALIBRATION_ERROR,
    ONLINE_BRIER,
    ONLINE_LOG_LOSS,
    ONLINE_LABEL_COUNT,
    ESTIMATED_ROC_AUC,
    ESTIMATED_PRECISION,
    ESTIMATED_RECALL,
    ESTIMATED_F1,
    ESTIMATED_ACCURACY,
    REFERENCE_BAND_LOWER,
    REFERENCE_BAND_UPPER,
    ESTIMATED_VS_REALISED_GAP,
)


def windowed(record: str, window: str) -> str:
    """A recording rule's full name: its stem and the window it sums over (``ml:shadow_pairs:24h``)."""
    return f"{record}:{window}"


# --- bucket bounds: one spelling of ``le`` for the app, the OTLP path and the sidecar -------------
def format_le(value: float) -> str:
    """A bucket bound spelled the way prometheus_client spells ``le`` (Go's float formatting)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


@lru_cache(maxsize=4096)
def le_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` label values of a histogram with these finite edges, ``+Inf`` last."""
    return (*(format_le(e) for e in edges), "+Inf")


def bin_bounds(edges: tuple[float, ...]) -> list[tuple[str, str]]:
    """(upper, lower) of every bin, spelled like ``le``: the labels ml_bin_upper and ml_bin_lower."""
    uppers = le_labels(edges)
    return list(zip(uppers, ("-Inf", *uppers[:-1])))


def normalize_le(le: str) -> str:
    """One spelling per bucket bound, whatever client formatted it (``1e+06`` vs ``1000000.0``)."""
    try:
        value = float(le)
    except ValueError:
        return le
    return "+Inf" if value == float("inf") else format_le(value)


def _samples_of(instruments: tuple[Instrument, ...]) -> dict[str, Instrument]:
    return {sample: i for i in instruments for sample in i.sample_names}


def instrument_of_sample(sample_name: str) -> Instrument | None:
    """The app or sidecar counter a scraped sample name belongs to (``ml_predictions_total`` ->
    ``PREDICTIONS``, ``ml_prediction_score_bucket`` -> ``PREDICTION_SCORE``), else ``None``."""
    return _SAMPLE_INSTRUMENT.get(sample_name)


# the counters a scrape or an OTLP push may carry, by sample name (the sidecar keeps only these)
# Counted by the sidecar itself when a label joins its prediction, per model and version.
SIDECAR_COUNTERS: Final[tuple[Instrument, ...]] = (
    OUTCOMES,
    OUTCOME_SQUARED_ERROR,
    OUTCOME_LOG_LOSS,
    LABELLED_SCORE,
    LABELLED_SCORE_BIN_SUM,
    LABEL_DELAY,
    LABEL_NEGATIVE_DELAYS,
    SHADOW_LABELLED_PAIRS,
)
_SAMPLE_INSTRUMENT: Final = _samples_of(APP_INSTRUMENTS + SIDECAR_COUNTERS)
