"""The evaluation loop inside the sidecar: predictions wait in the join store, labels become
counters, and the gauges equal independent computations (scikit-learn on the binned scores).

Realised metrics: ROC AUC of the scores replaced by their baseline bin (Mann-Whitney on bins is
exactly that), precision/recall/F1 at the served rule and at every edge, Brier score, log loss,
and the calibration error computed by hand with numpy. CBPE: the AUC of the window's bins with
the baseline calibration as sample weights. Replicas: two sidecars that each saw part of the
predictions and labels sum to one sidecar that saw all of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import (
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from otel_ml import Baseline, ModelMonitor, fit_baseline
from otel_ml.instrument import counts_metrics_data
from otel_ml.sidecar import SidecarState, StateSettings
from otel_ml.sidecar._collector import SidecarCollector
from otel_ml.sidecar._label_input import LabelEvent, parse_label_events, parse_predictions
from otel_ml.sidecar._otlp_input import metric_batches
from otel_ml.sidecar._series import Prediction

T0 = 1_790_000_000.0  # a fixed "now" (2026-09-21): every store partition and delay is reproducible
THRESHOLD = 0.5
Gauges = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _data(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, n)
    region = rng.choice(["eu", "us", "apac"], n, p=[0.5, 0.3, 0.2])
    logit = 1.6 * x + np.where(region == "us", 0.5, 0.0) - 0.3
    p = 1.0 / (1.0 + np.exp(-logit))
    y = rng.random(n) < p
    return pd.DataFrame({"x": x, "region": region, "score": p, "y": y})


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _data(40_000, seed=1)


def fit_loans(reference: pd.DataFrame, version: str = "v7") -> Baseline:
    """The labelled baseline of the loans model these tests score (segments by region)."""
    return fit_baseline(
        reference[["x", "region"]],
        model="loans",
        version=version,
        scores=reference["score"].to_numpy(),
        labels=reference["y"].to_numpy(),
        segments=["region"],
        decision=THRESHOLD,
    )


@pytest.fixture(scope="module")
def labelled_baseline(reference: pd.DataFrame) -> Baseline:
    return fit_loans(reference)


def _state(baseline: Baseline, tmp: Path | None = None, **settings: Any) -> SidecarState:
    join_store = None if tmp is None else tmp / "joins.sqlite"
    return SidecarState([baseline], StateSettings(join_store=join_store, **settings), now=T0)


def _predictions(frame: pd.DataFrame, prefix: str, t: float) -> list[Prediction]:
    return [
        Prediction(f"{prefix}-{i}", "loans", "v7", float(s), "true" if s > THRESHOLD else "false", (("region", r),), t)
        for i, (s, r) in enumerate(zip(frame["score"], frame["region"]))
    ]


def _labels(frame: pd.DataFrame, prefix: str, t: float, rows: Iterable[int] | None = None) -> list[LabelEvent]:
    rows = range(len(frame)) if rows is None else rows
    y = frame["y"].to_numpy()
    return [LabelEvent("true" if y[i] else "false", request_id=f"{prefix}-{i}", label_time=t) for i in rows]


def gauges(state: SidecarState, now: float) -> Gauges:
    return {(inst.prometheus, frozenset(labels.items())): v for inst, labels, v in state.outputs(now)}


def gauge(found: Gauges, name: str, **labels: str) -> float:
    hits = [v for (g, lab), v in found.items() if g == name and set(labels.items()) <= lab]
    assert len(hits) == 1, f"{name} {labels}: {len(hits)} matches"
    return hits[0]


def bin_index(baseline: Baseline, scores: np.ndarray) -> np.ndarray:
    assert baseline.score is not None
    return np.searchsorted(np.asarray(baseline.score.edges), scores, side="left")  # right-closed, like le


class TestRealisedMetrics:
    @pytest.fixture(scope="class")
    def window(self) -> pd.DataFrame:
        return _data(6_000, seed=2)

    @pytest.fixture(scope="class")
    def found(self, labelled_baseline: Baseline, window: pd.DataFrame) -> Gauges:
        state = _state(labelled_baseline)
        assert state.add_predictions(_predictions(window, "r", T0 + 10), now=T0 + 10) == len(window)
        joined, unmatched = state.apply_labels(_labels(window, "r", T0 + 600), now=T0 + 600)
        assert (joined, unmatched) == (len(window), 0)
        return gauges(state, T0 + 700)

    def test_auc_is_sklearns_on_the_binned_scores(
        self, found: Gauges, labelled_baseline: Baseline, window: Any
    ) -> None:
        expected = roc_auc_score(window["y"], bin_index(labelled_baseline, window["score"].to_numpy()))
        got = gauge(found, "ml_online_roc_auc", ml_segment_key="__all__", ml_window="1h")
        assert got == pytest.approx(expected, abs=1e-12)
        exact = roc_auc_score(window["y"], window["score"])
        assert abs(got - exact) < 2e-3, "30 quantile bins keep the binned AUC within 2e-3 of the exact one"

    def test_served_rule_and_losses_are_sklearns(self, found: Gauges, window: pd.DataFrame) -> None:
        y, s = window["y"].to_numpy(), window["score"].to_numpy()
        served = s > THRESHOLD
        for name, expected in (
            ("ml_online_precision", precision_score(y, served)),
            ("ml_online_recall", recall_score(y, served)),
            ("ml_online_f1", f1_score(y, served)),
        ):
            got = gauge(found, name, ml_segment_key="__all__", ml_threshold="served", ml_window="1h")
            assert got == pytest.approx(expected, abs=1e-12), name
        assert gauge(found, "ml_online_brier_score", ml_segment_key="__all__", ml_window="1h") == pytest.approx(
            brier_score_loss(y, s), abs=1e-12
        )
        assert gauge(found, "ml_online_log_loss", ml_segment_key="__all__", ml_window="1h") == pytest.approx(
            log_loss(y, s), abs=1e-12
        )

    def test_calibration_error_by_hand(self, found: Gauges, labelled_baseline: Baseline, window: Any) -> None:
        y, s = window["y"].to_numpy(), window["score"].to_numpy()
        b = bin_index(labelled_baseline, s)
        ece = sum(abs(s[b == k].sum() - y[b == k].sum()) for k in np.unique(b)) / len(s)
        got = gauge(found, "ml_online_calibration_error", ml_segment_key="__all__", ml_window="1h")
        assert got == pytest.approx(ece, abs=1e-12)

    def test_curve_at_every_edge(self, found: Gauges, labelled_baseline: Baseline, window: Any) -> None:
        from otel_ml._names import format_le

        assert labelled_baseline.score is not None
        y, s = window["y"].to_numpy(), window["score"].to_numpy()
        for edge in labelled_baseline.score.edges:
            if not (s > edge).any():
                continue
            got = gauge(
                found, "ml_online_precision", ml_segment_key="__all__", ml_threshold=format_le(edge), ml_window="1h"
            )
            assert got == pytest.approx(precision_score(y, s > edge), abs=1e-12), edge
            got = gauge(
                found, "ml_online_recall", ml_segment_key="__all__", ml_threshold=format_le(edge), ml_window="1h"
            )
            assert got == pytest.approx(recall_score(y, s > edge), abs=1e-12), edge

    def test_per_segment(self, found: Gauges, labelled_baseline: Baseline, window: pd.DataFrame) -> None:
        for region, part in window.groupby("region"):
            expected = roc_auc_score(part["y"], bin_index(labelled_baseline, part["score"].to_numpy()))
            got = gauge(found, "ml_online_roc_auc", ml_segment_key="region", ml_segment=str(region), ml_window="1h")
            assert got == pytest.approx(expected, abs=1e-12)
            assert gauge(found, "ml_online_labels", ml_segment=str(region), ml_window="1h") == len(part)


def test_a_quiet_window_has_no_performance_samples(labelled_baseline: Baseline) -> None:
    found = gauges(_state(labelled_baseline), T0 + 10)
    for name in ("ml_online_roc_auc", "ml_online_precision", "ml_estimated_roc_auc", "ml_online_log_loss"):
        assert not [k for k in found if k[0] == name], name
    assert all(v == v for v in found.values()), "no NaN on /metrics"


def test_cbpe_is_the_weighted_auc_of_the_window_bins(labelled_baseline: Baseline) -> None:
    """The app's score histogram of a window, weighted by the baseline's per-bin positive rate."""
    assert labelled_baseline.score is not None and labelled_baseline.score.calibration is not None
    window = _data(5_000, seed=3, shift=0.4)
    monitor = ModelMonitor(baseline=labelled_baseline, decision=THRESHOLD, registry=CollectorRegistry())
    monitor.record(window[["x", "region"]], window["score"].to_numpy())
    state = _state(labelled_baseline)
    state.apply_metrics(metric_batches(_otlp_request(monitor))[0], "otlp", now=T0 + 5)
    found = gauges(state, T0 + 10)
    counts = np.bincount(
        bin_index(labelled_baseline, window["score"].to_numpy()), minlength=len(labelled_baseline.score.calibration)
    )
    q = np.asarray(labelled_baseline.score.calibration)
    bins = np.arange(counts.size)
    expected = roc_auc_score(
        np.r_[np.ones(counts.size), np.zeros(counts.size)],
        np.r_[bins, bins],
        sample_weight=np.r_[counts * q, counts * (1 - q)],
    )
    assert gauge(found, "ml_estimated_roc_auc", ml_window="1h") == pytest.approx(expected, abs=1e-12)
    above = bins >= labelled_baseline.score.first_positive_bin
    tp, fp = (counts * q)[above].sum(), (counts * (1 - q))[above].sum()
    assert gauge(found, "ml_estimated_precision", ml_window="1h") == pytest.approx(tp / (tp + fp), abs=1e-12)
    lower = gauge(found, "ml_reference_band_lower", ml_metric="roc_auc", ml_window="1h")
    upper = gauge(found, "ml_reference_band_upper", ml_metric="roc_auc", ml_window="1h")
    perf = labelled_baseline.score.performance
    assert perf is not None
    labelled = labelled_baseline.score.labelled_count
    half = 3 * perf.stddev["roc_auc"] * math.sqrt(perf.chunk_size / counts.sum() + perf.chunk_size / labelled)
    assert (lower, upper) == pytest.approx((perf.value["roc_auc"] - half, perf.value["roc_auc"] + half))


def _otlp_request(monitor: ModelMonitor) -> Any:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    return encode_metrics(counts_metrics_data([monitor.counters.snapshot()], start_time_ns=1))


def exposition(state: SidecarState) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    registry.register(SidecarCollector(state))
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


_LABEL_COUNTERS = (
    "ml_labelled_score_bucket",
    "ml_labelled_score_count",
    "ml_labelled_score_sum",
    "ml_labelled_score_bin_sum_total",
    "ml_outcomes_total",
    "ml_outcome_log_loss_total",
    "ml_outcome_squared_error_total",
    "ml_label_delay_seconds_bucket",
    "ml_label_delay_seconds_count",
    "ml_label_delay_seconds_sum",
    "ml_labels_received_total",
    "ml_labels_unmatched_total",
)


def test_two_sidecars_sum_to_one(labelled_baseline: Baseline) -> None:
    """Each replica's sidecar saw half the predictions and whichever labels the load balancer sent it;
    labels for the other half are unmatched there. Summed, the joined counters are one sidecar's."""
    window = _data(3_000, seed=4)
    one, a, b = (_state(labelled_baseline) for _ in range(3))
    preds = _predictions(window, "r", T0 + 10)
    labels = _labels(window, "r", T0 + 3600 * 5)
    one.add_predictions(preds, now=T0 + 10)
    a.add_predictions(preds[::2], now=T0 + 10)
    b.add_predictions(preds[1::2], now=T0 + 10)
    one.apply_labels(labels, now=T0 + 3600 * 5)
    a.apply_labels(labels[::2], now=T0 + 3600 * 5)
    b.apply_labels(labels[1::2], now=T0 + 3600 * 5)
    whole, left, right = exposition(one), exposition(a), exposition(b)
    keys = {k for k in (*whole, *left, *right) if k[0] in _LABEL_COUNTERS}
    assert any(k[0] == "ml_labelled_score_bucket" for k in keys)
    for key in keys:
        assert left.get(key, 0.0) + right.get(key, 0.0) == pytest.approx(whole.get(key, 0.0), rel=1e-12), key


class TestJoinHealth:
    def test_unknown_duplicate_expired_and_delay(self, labelled_baseline: Baseline, tmp_path: Path) -> None:
        state = _state(labelled_baseline, tmp_path, join_ttl=2 * 86400.0)
        frame = _data(10, seed=5)
        state.add_predictions(_predictions(frame, "r", T0), now=T0)
        events = _labels(frame, "r", T0 + 120, rows=[0, 1]) + _labels(frame, "r", T0 + 120, rows=[0])
        events.append(LabelEvent("true", request_id="nobody", label_time=T0 + 120))
        assert state.apply_labels(events, now=T0 + 120) == (2, 2)
        late = _labels(frame, "r", T0 + 3 * 86400, rows=[2])
        assert state.apply_labels(late, now=T0 + 3 * 86400) == (0, 1)
        skewed = _labels(frame, "r", T0 - 30, rows=[3])  # the label producer's clock is behind
        state.apply_labels(skewed, now=T0 + 130)
        shown = exposition(state)
        reasons = {dict(k[1])["reason"]: v for k, v in shown.items() if k[0] == "ml_labels_unmatched_total"}
        assert reasons == {
            "duplicate": 1.0,
            "unknown_request_id": 1.0,
            "expired": 1.0,
            "sampled_out": 0.0,
            "not_queued": 0.0,  # review labels for ids not in the review queue: none here
        }
        delay = {dict(k[1])["le"]: v for k, v in shown.items() if k[0] == "ml_label_delay_seconds_bucket"}
        assert delay["60.0"] == 1.0 and delay["300.0"] == 3.0, "cumulative: the clamped one and two at 2 minutes"
        assert (
            shown[
                ("ml_label_negative_delays_total", frozenset({("ml_model_name", "loans"), ("ml_model_version", "v7")}))
            ]
            == 1.0
        )
        assert shown[("ml_labels_received_total", frozenset({("ml_source", "api")}))] == 6.0

    def test_label_body_with_token_inline_and_time(self) -> None:
        body = json.dumps(
            {
                "labels": [
                    {"request_id": "a", "label": True, "label_time": "2026-12-03T10:00:00Z", "source": "review"},
                    {"model": "loans", "version": "v7", "score": 0.3, "label": 0, "prediction_time": 1790000000},
                    {"token": "abc", "label": "true"},
                ]
            }
        ).encode()
        a, inline, token = parse_label_events(body)
        assert (a.request_id, a.outcome, a.source) == ("a", "true", "review")
        assert a.label_time == pytest.approx(1796292000.0)
        assert inline.inline is not None and inline.inline.time == 1790000000 and inline.outcome == "false"
        assert token.token == "abc" and token.inline is None

    @pytest.mark.parametrize(
        "event",
        [
            {"request_id": "a", "label": True, "label_time": "2026-12-03T10:00:00"},  # no offset
            {"request_id": "a", "label": True, "label_time": 1796292000000},  # milliseconds
            {"request_id": "a", "label": True, "source": ""},
            {"token": "", "label": True},
            {"label": True},
        ],
    )
    def test_bad_events_are_refused_whole(self, event: dict[str, Any]) -> None:
        from otel_ml.sidecar._series import IngestError

        with pytest.raises(IngestError) as caught:
            parse_label_events(json.dumps([{"request_id": "ok", "label": 1}, event]).encode())
        assert caught.value.status == 400 and "labels[1]" in str(caught.value)


class TestBatchPath:
    def test_columns_become_predictions(self) -> None:
        body = json.dumps(
            {
                "model": "loans",
                "version": "v7",
                "request_ids": ["a", "b"],
                "scores": [0.1, None],
                "decisions": ["false", None],
                "segments": {"region": ["eu", "us"]},
                "times": [1790000000, 1790000001.5],
            }
        ).encode()
        a, b = parse_predictions(body, max_rows=10)
        assert a == Prediction("a", "loans", "v7", 0.1, "false", (("region", "eu"),), 1790000000.0)
        assert (b.score, b.decision, b.time) == (None, None, 1790000001.5)

    @pytest.mark.parametrize(
        "block",
        [
            {"model": "loans", "version": "v7", "request_ids": ["a", "b"], "scores": [0.1]},
            {"model": "loans", "version": "v7", "request_ids": ["a"], "scores": [float("inf")]},
            {"model": "loans", "version": "v7", "request_ids": [None]},
            {"model": "loans", "request_ids": ["a"]},
            {"model": "loans", "version": "v7", "request_ids": ["a"], "segments": {"region": ["eu", "us"]}},
        ],
    )
    def test_bad_blocks_are_refused_whole(self, block: dict[str, Any]) -> None:
        from otel_ml.sidecar._series import IngestError

        with pytest.raises(IngestError) as caught:
            parse_predictions(json.dumps(block, allow_nan=True).encode(), max_rows=10)
        assert caught.value.status == 400

    def test_too_many_rows_is_413(self) -> None:
        from otel_ml.sidecar._series import IngestError

        body = json.dumps({"model": "m", "version": "v", "request_ids": [str(i) for i in range(11)]}).encode()
        with pytest.raises(IngestError) as caught:
            parse_predictions(body, max_rows=10)
        assert caught.value.status == 413


def _rules_agree(expositions: dict[str, Gauges], expected: Gauges, tmp_path: Path, minimum: int) -> None:
    """What Prometheus would scrape from these sidecars (instance -> exposition), through the
    shipped recording rules in promtool: every 1h gauge in ``expected`` has its rule's value."""
    import subprocess

    import yaml
    from _rule_vocabulary import PROMTOOL, ROOT

    if PROMTOOL is None:
        pytest.fail("promtool is needed (apt-get install prometheus)")
    series = []
    for instance, shown in expositions.items():
        for (name, labels), value in shown.items():
            all_labels = {**dict(labels), "job": "otel-ml-sidecar", "instance": instance}
            text = ", ".join(f'{k}="{v}"' for k, v in sorted(all_labels.items()))
            counter = name.endswith(("_total", "_bucket", "_count", "_sum"))
            values = f"0 {value!r}x10" if counter else f"{value!r}x11"  # increase() over 1h is exact
            series.append({"series": f"{name}{{{text}}}", "values": values})
    cases = []
    for (name, labels), value in expected.items():
        lab = dict(labels)
        if lab.get("ml_window") != "1h":
            continue
        served = lab.get("ml_threshold", "served") == "served"
        rule = _RULE_OF.get(name) if served else _CURVE_RULE_OF[name]
        if rule is None:
            continue
        sel = ", ".join(f'{k}="{v}"' for k, v in sorted(lab.items()) if k in _RULE_LABELS and v != "served")
        cases.append(
            {
                "expr": f"count(abs({rule}{{{sel}}} - {value!r}) < 1e-9)",
                "eval_time": "10m",
                "exp_samples": [{"labels": "{}", "value": 1}],
            }
        )
    assert len(cases) >= minimum, len(cases)
    doc = {
        "rule_files": [str(ROOT / "alert_rules" / "otel-ml-recording.yaml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": cases}],
    }
    path = tmp_path / "sidecar_vs_rules.yaml"
    path.write_text(yaml.safe_dump(doc, width=100000))
    result = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]


def test_the_shipped_rules_equal_the_sidecars_gauges(labelled_baseline: Baseline, tmp_path: Path) -> None:
    """Realised per segment, the curve at every edge, CBPE, its bands and the gap: rules = gauges."""
    window = _data(4_000, seed=6)
    state = _state(labelled_baseline)
    monitor = ModelMonitor(baseline=labelled_baseline, decision=THRESHOLD, registry=CollectorRegistry())
    monitor.record(window[["x", "region"]], window["score"].to_numpy())
    state.apply_metrics(metric_batches(_otlp_request(monitor))[0], "otlp", now=T0 + 5)
    state.add_predictions(_predictions(window, "r", T0 + 10), now=T0 + 10)
    state.apply_labels(_labels(window, "r", T0 + 600, rows=range(0, len(window), 2)), now=T0 + 600)
    _rules_agree({"sc1": exposition(state)}, gauges(state, T0 + 700), tmp_path, minimum=100)


def test_two_sidecars_with_token_labels_sum_in_promql_to_one(labelled_baseline: Baseline, tmp_path: Path) -> None:
    """Two pods' sidecars, each with half the predictions in its store. The outcome pipeline sends
    request-id labels to the pod that served, and token labels to whichever sidecar the load
    balancer picks (here: the other one). Summed by the shipped rules, the two give exactly the
    gauges of one sidecar that saw everything; a tampered token is counted, never joined."""
    from otel_ml import _token

    key = bytes(range(32))
    vocabulary = _token.TokenVocabulary.of(labelled_baseline)
    window = _data(3_000, seed=8)
    predictions = _predictions(window, "r", T0 + 10)
    y = window["y"].to_numpy()
    by_id = [
        LabelEvent("true" if y[i] else "false", request_id=f"r-{i}", label_time=T0 + 900) for i in range(0, 3000, 3)
    ]

    def token_label(i: int) -> LabelEvent:
        p = predictions[i]
        token = _token.encode_token(
            vocabulary,
            key,
            minute=int(p.time // 60),
            score=p.score,
            decision=p.decision,
            segments=dict(p.segments),
            request_id=p.request_id,
        )
        return LabelEvent("true" if y[i] else "false", token=token, label_time=T0 + 900)

    by_token = [token_label(i) for i in range(1, 3000, 3)]
    tampered = by_token[0].token[:-2] + ("A" if by_token[0].token[-2] != "A" else "B") + by_token[0].token[-1]
    forged = LabelEvent("true", token=tampered, label_time=T0 + 900)
    one, a, b = (_state(labelled_baseline, token_keys=(key,)) for _ in range(3))
    one.add_predictions(predictions, now=T0 + 10)
    a.add_predictions(predictions[0::2], now=T0 + 10)
    b.add_predictions(predictions[1::2], now=T0 + 10)
    one.apply_labels([*by_id, *by_token, forged], now=T0 + 900)
    a.apply_labels([e for e in by_id if int(e.request_id[2:]) % 2 == 0], now=T0 + 900)  # type: ignore[index]
    b.apply_labels([e for e in by_id if int(e.request_id[2:]) % 2 == 1], now=T0 + 900)  # type: ignore[index]
    a.apply_labels([e for i, e in zip(range(1, 3000, 3), by_token) if i % 2 == 1], now=T0 + 900)
    b.apply_labels([e for i, e in zip(range(1, 3000, 3), by_token) if i % 2 == 0] + [forged], now=T0 + 900)
    assert b.unmatched_labels.get("forged_token") == 1 and one.unmatched_labels.get("forged_token") == 1
    assert sum(one.labels_received.values()) == len(by_id) + len(by_token) + 1
    _rules_agree({"a": exposition(a), "b": exposition(b)}, gauges(one, T0 + 1000), tmp_path, minimum=60)


_RULE_LABELS = {"ml_segment_key", "ml_segment", "ml_metric", "ml_threshold"}
_CURVE_RULE_OF = {f"ml_online_{m}": f"ml:online_{m}_at_threshold:1h" for m in ("precision", "recall", "f1")}
_RULE_OF = {
    **{f"ml_online_{m}": f"ml:online_{m}:1h" for m in ("roc_auc", "precision", "recall", "f1", "accuracy")},
    **{f"ml_online_{m}": f"ml:online_{m}:1h" for m in ("calibration_error", "brier_score", "log_loss")},
    **{f"ml_estimated_{m}": f"ml:estimated_{m}:1h" for m in ("roc_auc", "precision", "recall", "f1", "accuracy")},
    "ml_reference_band_lower": "ml:estimated_reference_band_lower:1h",
    "ml_reference_band_upper": "ml:estimated_reference_band_upper:1h",
    "ml_estimated_vs_realised_gap": "ml:estimated_vs_realised_gap:1h",
}
