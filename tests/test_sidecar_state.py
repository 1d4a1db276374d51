"""Sidecar state: windows, resets, outputs, bounds and persistence, without HTTP.

Expected values are computed here from the raw data (pandas binning, a hand-written PSI with
the documented 1e-4 floor, ``groupby`` decision rates), never read back from the sidecar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_training_frame
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from prometheus_client import CollectorRegistry, generate_latest
from scipy import stats

from otel_ml import Baseline, ModelMonitor
from otel_ml import _names as n
from otel_ml.instrument import counts_metrics_data
from otel_ml.sidecar import LimitSettings, SidecarState, StateSettings, WindowSpec, load_state, save_state
from otel_ml.sidecar._otlp_input import metric_batches
from otel_ml.sidecar._scrape import parse_exposition
from otel_ml.sidecar._series import IngestError

T0 = 1_700_000_000.0
WINDOW = WindowSpec("10m", 600.0, resolution=10)


def gauges(state: SidecarState, now: float, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{label items: value} of one output gauge, filtered by the given labels."""
    out = {}
    for inst, lab, value in state.outputs(now):
        if inst.prometheus == name and all(lab.get(k) == v for k, v in labels.items()):
            out[tuple(sorted(lab.items()))] = value
    return out


def one(state: SidecarState, now: float, name: str, **labels: str) -> float:
    values = gauges(state, now, name, **labels)
    assert len(values) == 1, (name, labels, values)
    return next(iter(values.values()))


def hand_psi(reference: np.ndarray, counts: np.ndarray) -> float:
    a = np.maximum(counts / counts.sum(), 1e-4)
    r = np.maximum(reference, 1e-4)
    return float(np.sum((a - r) * np.log(a / r)))


class App:
    """An instrumented app whose exposition the tests feed to the sidecar."""

    def __init__(self, baseline: Baseline) -> None:
        self.registry = CollectorRegistry()
        self.monitor = ModelMonitor(baseline=baseline, segments=["country"], decision=0.7, registry=self.registry)
        self.predict = self.monitor(lambda f: np.clip(0.5 + 0.3 * f["balance_z"].to_numpy(), 0, 1))

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()


@pytest.fixture
def state(baseline: Baseline) -> SidecarState:
    return SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)


def feed(state: SidecarState, app: App, now: float, source: str = "http://app/metrics") -> None:
    result = state.apply_metrics(parse_exposition(app.exposition(), source), "scrape", now=now)
    assert result.rejected == {}


class TestDrift:
    def test_psi_matches_an_independent_computation(self, state: SidecarState, baseline: Baseline) -> None:
        app = App(baseline)
        current = make_training_frame(4000, seed=7).drop(columns="score")
        current["balance_z"] += 0.8  # the shift
        app.predict(current)
        feed(state, app, T0 + 60)
        f = baseline.feature("balance_z")
        counts = pd.cut(current["balance_z"], [-np.inf, *f.edges, np.inf], right=True).value_counts(sort=False)
        expected = hand_psi(np.asarray(f.fractions), counts.to_numpy().astype(float))
        assert one(state, T0 + 61, "ml_feature_psi", ml_feature="balance_z") == pytest.approx(expected, rel=1e-9)
        assert one(state, T0 + 61, "ml_feature_drift_status", ml_feature="balance_z") == n.DRIFT_STATUS_DRIFT
        assert one(state, T0 + 61, "ml_feature_window_observations", ml_feature="balance_z") == 4000
        assert one(state, T0 + 61, "ml_feature_drift_status", ml_feature="amount") == n.DRIFT_STATUS_OK
        assert one(state, T0 + 61, "ml_score_drift_status") == n.DRIFT_STATUS_DRIFT

    def test_unknown_and_missing_ratios(self, state: SidecarState, baseline: Baseline) -> None:
        app = App(baseline)
        current = make_training_frame(1000, seed=3).drop(columns="score")
        current.loc[:249, "country"] = "United States"
        current.loc[:99, "amount"] = np.nan
        app.predict(current)
        feed(state, app, T0 + 30)
        assert one(state, T0 + 31, "ml_feature_unknown_ratio", ml_feature="country") == pytest.approx(0.25)
        assert one(state, T0 + 31, "ml_feature_missing_ratio", ml_feature="amount") == pytest.approx(0.1)
        assert one(state, T0 + 31, "ml_feature_drift_status", ml_feature="country") == n.DRIFT_STATUS_DRIFT

    def test_reference_gauges_are_the_baseline(self, state: SidecarState, baseline: Baseline) -> None:
        f = baseline.feature("balance_z")
        refs = gauges(state, T0, "ml_feature_reference_ratio", ml_feature="balance_z")
        assert sorted(refs.values()) == sorted(f.fractions)
        first = one(state, T0, "ml_feature_reference_ratio", ml_feature="balance_z", ml_bin_lower="-Inf")
        assert first == f.fractions[0]
        assert one(state, T0, "ml_feature_reference_ratio", ml_feature="country", ml_category="__unknown__") == 0.0

    def test_an_empty_window_has_insufficient_data(self, state: SidecarState) -> None:
        assert one(state, T0 + 1, "ml_feature_drift_status", ml_feature="amount") == n.DRIFT_STATUS_INSUFFICIENT
        assert gauges(state, T0 + 1, "ml_feature_psi") == {}  # "no data", not 0


class TestWindows:
    def test_old_traffic_leaves_the_window(self, state: SidecarState, baseline: Baseline) -> None:
        app = App(baseline)
        app.predict(make_training_frame(500, seed=1).drop(columns="score"))
        feed(state, app, T0 + 10)
        for t in range(0, 700, 30):  # the ticker, every 30 s for 11+ minutes
            state.tick(T0 + 20 + t)
        app.predict(make_training_frame(300, seed=2).drop(columns="score"))
        feed(state, app, T0 + 730)
        # only the last 300 rows are inside [now - 10m, now]
        assert one(state, T0 + 731, "ml_feature_window_observations", ml_feature="amount") == 300

    def test_decision_rate_change_vs_previous_window_and_baseline(
        self, state: SidecarState, baseline: Baseline
    ) -> None:
        app = App(baseline)
        first = make_training_frame(2000, seed=11).drop(columns="score")
        app.predict(first)
        feed(state, app, T0 + 60)
        for t in range(90, 660, 30):
            state.tick(T0 + t)
        second = make_training_frame(2000, seed=12).drop(columns="score")
        de = second["country"] == "DE"
        second.loc[de, "balance_z"] = -3.0  # DE approvals collapse: score = 0.5 + 0.3 * z < 0.7
        app.predict(second)
        feed(state, app, T0 + 700)
        now = T0 + 701

        def approval(frame: pd.DataFrame, country: str) -> float:
            score = np.clip(0.5 + 0.3 * frame["balance_z"], 0, 1)
            return float((score[frame["country"] == country] > 0.7).mean())

        rate = one(
            state, now, "ml_segment_decision_rate", ml_segment_key="country", ml_segment="DE", ml_decision="false"
        )
        assert rate == 1.0
        before, after = approval(first, "US"), approval(second, "US")

        def us_change(reference: str) -> float:
            labels = {"ml_segment_key": "country", "ml_segment": "US", "ml_decision": "true"}
            return one(state, now, "ml_segment_decision_rate_change", **labels, ml_reference=reference)

        assert us_change("previous_window") == pytest.approx((after - before) / before)
        assert baseline.score is not None
        ref = baseline.score.decision_rates["country"]["US"]["true"]
        assert us_change("baseline") == pytest.approx((after - ref) / ref)
        assert one(state, now, "ml_segment_window_predictions", ml_segment_key="country", ml_segment="DE") == de.sum()

    def test_a_collapsed_segment_is_the_only_changed_status(self, state: SidecarState, baseline: Baseline) -> None:
        app = App(baseline)
        app.predict(make_training_frame(3000, seed=13).drop(columns="score"))
        feed(state, app, T0 + 60)
        for t in range(90, 660, 30):
            state.tick(T0 + t)
        second = make_training_frame(3000, seed=14).drop(columns="score")
        de = second["country"] == "DE"
        second.loc[de, "balance_z"] = -3.0
        app.predict(second)
        feed(state, app, T0 + 700)
        now = T0 + 701
        statuses = gauges(state, now, "ml_segment_decision_rate_status", ml_segment_key="country", ml_decision="true")
        changed = {dict(k)["ml_segment"] for k, v in statuses.items() if v == 2}
        assert changed == {"DE"}
        assert {dict(k)["ml_reference"] for k, v in statuses.items() if v == 2} == {"baseline", "previous_window"}
        # Holm can only raise a p-value: US's adjusted p-value is at least its own exact test's
        assert baseline.score is not None
        us = second["country"] == "US"
        score = np.clip(0.5 + 0.3 * second.loc[us, "balance_z"], 0, 1)
        ref = baseline.score.decision_rates["country"]["US"]["true"]
        raw = stats.binomtest(int((score > 0.7).sum()), int(us.sum()), ref).pvalue
        adjusted = one(
            state,
            now,
            "ml_segment_decision_rate_pvalue",
            ml_segment_key="country",
            ml_segment="US",
            ml_decision="true",
            ml_reference="baseline",
        )
        assert adjusted >= min(raw, 1.0) * 0.8  # binomtest's two-sided rule differs a little from doubling

    def test_memory_does_not_grow_with_volume(self, baseline: Baseline) -> None:
        sizes = []
        for rows in (1_000, 100_000):
            state = SidecarState([baseline], StateSettings(windows=(WINDOW,)), now=T0)
            app = App(baseline)
            for i in range(10):
                app.predict(make_training_frame(rows // 10, seed=i).drop(columns="score"))
                feed(state, app, T0 + 60 * i)
                state.tick(T0 + 60 * i)
            model = next(iter(state.models.values()))
            snapshots = sum(len(r.vectors) for r in model.rings.values())
            ring_bytes = sum(v.nbytes for r in model.rings.values() for v in r.vectors)
            assert ring_bytes <= snapshots * model.size * 8
            sizes.append((model.size, snapshots))
        assert sizes[0] == sizes[1]  # same series, same snapshots: 100x the traffic costs nothing more


def test_the_ring_reaches_three_windows_back_for_the_pooled_look() -> None:
    from otel_ml.sidecar._windows import SnapshotRing

    ring = SnapshotRing(WINDOW, T0, 1)  # 10m window, a snapshot every minute
    assert ring.pooled(T0 + 300, np.array([5.0])) is None  # younger than one window: nothing to pool
    for minute in range(1, 61):  # one count per minute for an hour
        ring.maybe_take(T0 + 60 * minute, np.array([float(minute)]))
    now, totals = T0 + 3600, np.array([60.0])
    current, previous = ring.window(now, totals)
    pooled = ring.pooled(now, totals)
    assert current.tolist() == [10.0] and previous is not None and previous.tolist() == [10.0]
    assert pooled is not None and pooled.tolist() == [30.0]
    assert ring.times[0] <= now - 1800 < ring.times[1]  # nothing older than 3W is kept but the anchor


class TestResets:
    def test_an_app_restart_is_an_increase_not_a_negative(self, state: SidecarState, baseline: Baseline) -> None:
        before = App(baseline)
        before.predict(make_training_frame(800, seed=1).drop(columns="score"))
        feed(state, before, T0 + 10)
        after = App(baseline)  # the process restarted: its counters start again from zero
        after.predict(make_training_frame(300, seed=2).drop(columns="score"))
        feed(state, after, T0 + 20)
        # Prometheus' increase(): 800 before the reset, then the new value 300 is all increase
        assert one(state, T0 + 21, "ml_feature_window_observations", ml_feature="amount") == 1100

    def test_a_restart_counts_a_sparse_bin_that_grew(self, state: SidecarState, baseline: Baseline) -> None:
        """A bin can hold more after a restart than before; the histogram restarts as a whole."""
        seen = []
        for seed, rows, tail in ((1, 800, 2), (2, 300, 5)):
            app = App(baseline)  # the second one is the restarted process
            frame = make_training_frame(rows, seed=seed).drop(columns="score")
            frame["amount"] = 1.0
            frame.loc[: tail - 1, "amount"] = 1e9  # a few values in the open top bin
            app.predict(frame)
            seen.append(frame["amount"].to_numpy())
            feed(state, app, T0 + 10 * seed)
        values = np.concatenate(seen)
        edges = baseline.feature("amount").edges  # type: ignore[union-attr]
        truth = np.diff([np.count_nonzero(values <= e) for e in edges] + [values.size], prepend=0)
        model = state.models[("fraud", "v3")]
        counts, _ = model.layout.counts(model.current_totals().copy())
        row = model.layout.feature_names.index("amount")
        assert counts[row][: len(edges) + 1].tolist() == truth.tolist() and truth[-1] == 7
        assert one(state, T0 + 21, "ml_feature_window_observations", ml_feature="amount") == 1100

    def test_scraped_buckets_group_whatever_their_label_order(self, baseline: Baseline) -> None:
        from otel_ml.sidecar._series import bins_from_cumulative

        one_way = [
            ("ml_feature_value_bucket", (("a", "1"), ("b", "2"), ("le", le)), c) for le, c in (("1", 3), ("+Inf", 5))
        ]
        other_way = [("ml_feature_value_bucket", (("le", "10"), ("b", "2"), ("a", "1")), 4.0)]
        out = bins_from_cumulative([one_way[0], *other_way, one_way[1]])
        assert [value for _, _, value in out] == [3.0, 1.0, 1.0]  # le=1, le=10, +Inf of one histogram

    def test_two_replicas_are_summed(self, state: SidecarState, baseline: Baseline) -> None:
        for i, rows in enumerate((400, 600)):
            app = App(baseline)
            app.predict(make_training_frame(rows, seed=i).drop(columns="score"))
            feed(state, app, T0 + 10, source=f"http://replica-{i}/metrics")
            feed(state, app, T0 + 20, source=f"http://replica-{i}/metrics")  # re-scraped: no double count
        assert one(state, T0 + 21, "ml_feature_window_observations", ml_feature="amount") == 1000


class TestOtlpEqualsScrape:
    def test_same_state_from_both_inputs(self, baseline: Baseline) -> None:
        app = App(baseline)
        app.predict(make_training_frame(3000, seed=4).drop(columns="score"))
        app.monitor.counters.add_error("TimeoutError")
        scraped = SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
        feed(scraped, app, T0 + 5)
        pushed = SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
        request = encode_metrics(counts_metrics_data([app.monitor.counters.snapshot()], start_time_ns=1))
        batches, unlabelled = metric_batches(request)
        assert unlabelled == 0
        pushed.apply_metrics(batches, "otlp", now=T0 + 5)
        a, b = scraped.outputs(T0 + 6), pushed.outputs(T0 + 6)
        assert [(g[0], g[1]) for g in a] == [(g[0], g[1]) for g in b]
        np.testing.assert_allclose([g[2] for g in a], [g[2] for g in b], rtol=1e-12)
        # every series the scrape saw has the same total in both
        ms, mp = next(iter(scraped.models.values())), next(iter(pushed.models.values()))
        for key, i in ms.index.items():
            if key.name.endswith("_sum") and not ms.totals[i]:
                continue  # negative-bucket histograms expose no _sum in the text format
            if key.name == n.PROCESS_CPU.series:
                continue  # the app's process CPU grew between the two reads
            assert mp.totals[mp.index[key]] == pytest.approx(ms.totals[i]), key


class TestBounds:
    def test_a_flood_of_segment_values_stays_within_budget(self, baseline: Baseline) -> None:
        state = SidecarState(
            [baseline], StateSettings(windows=(WINDOW,), limits=LimitSettings(segment_budget=20), compute_ttl=0), now=T0
        )
        samples = [
            (
                n.PREDICTIONS.series,
                ((n.LABEL_SEGMENT_KEY, "user"), (n.LABEL_SEGMENT, f"u{i}"), (n.LABEL_DECISION, "true")),
                1.0,
            )
            for i in range(10_000)
        ]
        from otel_ml.sidecar._series import MetricBatch

        state.apply_metrics([MetricBatch("x", "fraud", "v3", True, 0, samples)], "otlp", now=T0 + 1)
        model = next(iter(state.models.values()))
        segments = {dict(k.labels)[n.LABEL_SEGMENT] for k in model.keys if k.name == n.PREDICTIONS.series}
        assert len(segments) == 21 and "__other__" in segments
        assert model.overflow()["ml.segment.user"] == 10_000 - 20
        assert (
            one(state, T0 + 2, "ml_segment_window_predictions", ml_segment_key="user", ml_segment="__other__")
            == 10_000 - 20
        )

    def test_unknown_models_are_counted(self, state: SidecarState, training_frame: pd.DataFrame) -> None:
        from otel_ml import fit_baseline

        other = App(fit_baseline(training_frame, model="other", version="1", score_column="score"))
        other.predict(training_frame.drop(columns="score").head(10))
        state.apply_metrics(parse_exposition(other.exposition(), "x"), "scrape", now=T0 + 1)
        assert state.ingest_errors == {"unknown_model": 1}

    def test_buckets_that_do_not_match_the_baseline_are_rejected(
        self, state: SidecarState, training_frame: pd.DataFrame
    ) -> None:
        from otel_ml import fit_baseline

        refit = fit_baseline(
            training_frame.sample(5000, random_state=1), model="fraud", version="v3", score_column="score"
        )
        stale = App(refit)
        stale.predict(training_frame.drop(columns="score").head(10))
        state.apply_metrics(parse_exposition(stale.exposition(), "x"), "scrape", now=T0 + 1)
        assert state.ingest_errors.get("bucket_mismatch", 0) > 0


class TestPersistence:
    def test_round_trip_keeps_windows(self, state: SidecarState, baseline: Baseline, tmp_path: Path) -> None:
        app = App(baseline)
        current = make_training_frame(3000, seed=9).drop(columns="score")
        current["amount"] *= 3
        app.predict(current)
        feed(state, app, T0 + 30)
        state.tick(T0 + 100)
        path = save_state(state, tmp_path / "state.npz", T0 + 100)
        restored = SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0 + 200)
        assert load_state(restored, path)
        assert restored.outputs(T0 + 101) == state.outputs(T0 + 101)
        # the restored source continues: a re-scrape of the same counters adds nothing
        feed(restored, app, T0 + 120)
        assert one(restored, T0 + 121, "ml_feature_window_observations", ml_feature="amount") == 3000

    def test_a_file_with_cumulative_buckets_is_converted_on_load(
        self, state: SidecarState, baseline: Baseline, tmp_path: Path
    ) -> None:
        """Files written before buckets were stored per bin (format 1) keep their windows."""
        import json

        app = App(baseline)
        app.predict(make_training_frame(2000, seed=4).drop(columns="score"))
        feed(state, app, T0 + 30)
        app.predict(make_training_frame(500, seed=5).drop(columns="score"))
        feed(state, app, T0 + 90)
        state.tick(T0 + 100)
        path = save_state(state, tmp_path / "state.npz", T0 + 100)
        # rewrite it as format 1 would have held it: each histogram's buckets cumulated in le order
        with np.load(path) as data:
            arrays = {k: np.array(data[k]) for k in data.files}
        meta = json.loads(bytes(arrays["meta"]).decode())
        keys = meta["models"][0]["keys"]
        groups: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for i, (name, labels) in enumerate(keys):
            if name.endswith("_bucket"):
                rest = sorted((k, v) for k, v in labels if k != "le")
                groups.setdefault((name, repr(rest)), []).append((float(dict(labels)["le"]), i))
        for name, values in arrays.items():
            if name.startswith("m0_"):
                for group in groups.values():
                    idx = [i for _, i in sorted(group)]
                    if max(idx) < values.shape[-1]:
                        values[..., idx] = np.cumsum(values[..., idx], axis=-1)
        meta["format"] = 1
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        old = tmp_path / "old.npz"
        with open(old, "wb") as fh:
            np.savez(fh, **arrays)
        restored = SidecarState([baseline], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0 + 200)
        assert load_state(restored, old)
        assert restored.outputs(T0 + 101) == state.outputs(T0 + 101)

    def test_a_scraped_histogram_whose_buckets_go_down_is_rejected_whole(
        self, state: SidecarState, baseline: Baseline
    ) -> None:
        app = App(baseline)
        app.predict(make_training_frame(200, seed=6).drop(columns="score"))
        text = app.exposition()
        bad = [line for line in text.splitlines() if line.startswith("ml_prediction_score_bucket")]
        broken = text.replace(bad[3], bad[3].rsplit(" ", 1)[0] + " 1e9")  # one bucket above the next
        with pytest.raises(IngestError) as rejected:
            state.apply_metrics(parse_exposition(broken, "x"), "scrape", now=T0 + 1)
        assert rejected.value.reason == "invalid_value"
        assert state.models[("fraud", "v3")].current_totals().sum() == 0  # nothing applied

    def test_a_changed_baseline_starts_fresh(
        self, state: SidecarState, baseline: Baseline, training_frame: pd.DataFrame, tmp_path: Path
    ) -> None:
        from otel_ml import fit_baseline

        app = App(baseline)
        app.predict(training_frame.drop(columns="score").head(100))
        feed(state, app, T0 + 5)
        path = save_state(state, tmp_path / "s.npz", T0 + 5)
        other = fit_baseline(training_frame.head(5000), model="fraud", version="v3", score_column="score")
        fresh = SidecarState([other], StateSettings(windows=(WINDOW,), compute_ttl=0), now=T0)
        assert load_state(fresh, path)  # readable, but the model is skipped
        assert one(fresh, T0 + 6, "ml_feature_drift_status", ml_feature="amount") == n.DRIFT_STATUS_INSUFFICIENT

    @pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04broken"])
    def test_a_corrupt_state_file_is_ignored(self, state: SidecarState, tmp_path: Path, content: bytes) -> None:
        path = tmp_path / "state.npz"
        path.write_bytes(content)
        assert load_state(state, path) is False


def test_outputs_cover_every_window(baseline: Baseline) -> None:
    windows = (WindowSpec.parse("1h"), WindowSpec.parse("24h"), WindowSpec.parse("7d"))
    state = SidecarState([baseline], StateSettings(windows=windows), now=T0)
    app = App(baseline)
    app.predict(make_training_frame(100).drop(columns="score"))
    feed(state, app, T0 + 1)
    seen: dict[str, set[str]] = {}
    for inst, labels, _ in state.outputs(T0 + 2):
        if n.LABEL_WINDOW in labels:
            seen.setdefault(inst.prometheus, set()).add(labels[n.LABEL_WINDOW])
    for name in (
        "ml_feature_psi",
        "ml_feature_drift_status",
        "ml_score_psi",
        "ml_segment_decision_rate",
        "ml_feature_missing_ratio",
        "ml_feature_unknown_ratio",
    ):
        assert seen[name] == {"1h", "24h", "7d"}, name
