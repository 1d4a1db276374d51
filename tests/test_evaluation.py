"""otel_ml.evaluation against independent oracles.

Realised metrics are checked against scikit-learn on the *binned* scores (a score replaced by
its bin index: the bins' Mann-Whitney AUC with ties half is then exactly ``roc_auc_score``),
hand-worked examples and hypothesis properties (a segments x bins matrix equals its rows; two
replicas' summed counts equal the union's metrics). CBPE is checked on simulated calibrated
data, where its estimates must agree with the realised values within sampling error.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from otel_ml.evaluation import (
    Confusion,
    bin_calibration,
    calibration_error,
    confusion_at_bin,
    confusion_metrics,
    estimate_performance,
    expected_counts,
    mean_loss,
    realised_metrics,
    reference_band,
    reference_performance,
    roc_auc,
    served_bin,
    threshold_curve,
)


def _binned(seed: int, n: int = 4000, bins: int = 30, shift: float = 1.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, their bin index on quantile edges and labels: positives score higher on average."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    s = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + shift * y - 1)))
    edges = np.quantile(s, np.linspace(0, 1, bins + 1)[1:-1])
    return s, np.searchsorted(edges, s), y


def _counts(b: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    return np.bincount(b[y], minlength=bins).astype(float), np.bincount(b[~y], minlength=bins).astype(float)


class TestAgainstScikitLearn:
    @pytest.mark.parametrize("seed", [0, 1, 2])
    @pytest.mark.parametrize("bins", [2, 10, 30])
    def test_roc_auc_is_sklearns_on_the_bin_index(self, seed: int, bins: int) -> None:
        _, b, y = _binned(seed, bins=bins)
        pos, neg = _counts(b, y, bins)
        assert roc_auc(pos, neg) == pytest.approx(roc_auc_score(y, b), abs=1e-12)

    def test_roc_auc_with_empty_bins_and_heavy_ties(self) -> None:
        rng = np.random.default_rng(7)
        b = rng.choice([0, 3, 4, 9], 500, p=[0.1, 0.6, 0.2, 0.1])  # bins 1, 2, 5..8 empty
        y = rng.random(500) < np.where(b >= 4, 0.6, 0.2)
        pos, neg = _counts(b, y, 10)
        assert roc_auc(pos, neg) == pytest.approx(roc_auc_score(y, b), abs=1e-12)

    @pytest.mark.parametrize("seed", [0, 3])
    def test_precision_recall_f1_at_every_edge(self, seed: int) -> None:
        _, b, y = _binned(seed, bins=10)
        curve = threshold_curve(*_counts(b, y, 10))
        assert curve.precision.shape == (9,)
        for j in range(9):  # score > edges[j] <=> bin index > j
            predicted = b > j
            assert curve.precision[j] == pytest.approx(precision_score(y, predicted))
            assert curve.recall[j] == pytest.approx(recall_score(y, predicted))
            assert curve.f1[j] == pytest.approx(f1_score(y, predicted))

    def test_curve_points_are_sklearns_precision_recall_curve(self) -> None:
        _, b, y = _binned(4, bins=30)
        curve = threshold_curve(*_counts(b, y, 30))
        precision, recall, thresholds = precision_recall_curve(y, b)  # rule: bin >= threshold
        for p, r, t in zip(precision, recall, thresholds):
            if t >= 1:  # bin >= t is score > edges[t - 1]
                assert curve.precision[int(t) - 1] == pytest.approx(p)
                assert curve.recall[int(t) - 1] == pytest.approx(r)

    @pytest.mark.parametrize("seed", [0, 5])
    def test_served_rule_from_its_confusion_counts(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        y = rng.random(1000) < 0.35
        predicted = rng.random(1000) < np.where(y, 0.7, 0.2)
        counts = Confusion(
            tp=np.sum(predicted & y), fp=np.sum(predicted & ~y), fn=np.sum(~predicted & y), tn=np.sum(~predicted & ~y)
        )
        m = confusion_metrics(counts)
        assert m.precision == pytest.approx(precision_score(y, predicted))
        assert m.recall == pytest.approx(recall_score(y, predicted))
        assert m.f1 == pytest.approx(f1_score(y, predicted))
        assert m.accuracy == pytest.approx(accuracy_score(y, predicted))

    def test_brier_and_log_loss_from_their_sums(self) -> None:
        s, b, y = _binned(6, bins=30)
        p = np.clip(s, 1e-15, 1 - 1e-15)  # as the sidecar sums it, and as sklearn clips
        squared = float(np.sum((s - y) ** 2))
        logs = float(-np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))
        pos, neg = _counts(b, y, 30)
        m = realised_metrics(pos, neg, squared_error_sum=squared, log_loss_sum=logs)
        assert m.brier_score == pytest.approx(brier_score_loss(y, s))
        assert m.log_loss == pytest.approx(log_loss(y, s))
        assert mean_loss(squared, y.size) == m.brier_score

    def test_calibration_error_by_bin_means(self) -> None:
        s, b, y = _binned(8, bins=30)
        pos, neg = _counts(b, y, 30)
        sums = np.bincount(b, weights=s, minlength=30)
        expected = sum(np.mean(b == k) * abs(s[b == k].mean() - y[b == k].mean()) for k in np.unique(b))
        assert calibration_error(pos, neg, sums) == pytest.approx(expected)


class TestHandWorked:
    # positives in bins 0 and 2, negatives in bins 0 and 1 (P = N = 2)
    pos = np.array([1.0, 0.0, 1.0])
    neg = np.array([1.0, 1.0, 0.0])

    def test_auc(self) -> None:
        # pairs (p0, n0) tie: 1/2, (p0, n1): 0, (p2, n0): 1, (p2, n1): 1 -> 2.5 / 4
        assert roc_auc(self.pos, self.neg) == 0.625
        assert roc_auc(self.neg, self.pos) == 1 - 0.625

    def test_curve(self) -> None:
        curve = threshold_curve(self.pos, self.neg)
        # edge 0: bins 1, 2 predicted positive: TP 1, FP 1, FN 1; edge 1: bin 2: TP 1, FP 0, FN 1
        np.testing.assert_allclose(curve.precision, [0.5, 1.0])
        np.testing.assert_allclose(curve.recall, [0.5, 0.5])
        np.testing.assert_allclose(curve.f1, [0.5, 2 / 3])
        assert confusion_at_bin(self.pos, self.neg, 2) == Confusion(1.0, 0.0, 1.0, 2.0)

    def test_calibration_error(self) -> None:
        # |0.5 - 1| + |0.4 - 0| + |0.9 - 1| = 1.0 over 4 predictions
        assert calibration_error(self.pos, self.neg, [0.5, 0.4, 0.9]) == pytest.approx(0.25)

    def test_no_sample_is_nan_without_warnings(self) -> None:
        # pytest turns warnings into errors here: a division warning would fail the test
        zeros = np.zeros(3)
        assert np.isnan(roc_auc(zeros, zeros))
        assert np.isnan(roc_auc(self.pos, zeros))  # no negatives
        m = realised_metrics(zeros, zeros, score_sums=zeros, squared_error_sum=0.0, log_loss_sum=0.0)
        assert all(np.isnan(v) for v in (m.calibration_error, m.brier_score, m.log_loss))
        assert np.all(np.isnan(m.curve.precision)) and m.labels == 0.0
        nothing_predicted = confusion_metrics(Confusion(0, 0, 3, 5))
        assert np.isnan(nothing_predicted.precision) and nothing_predicted.recall == 0.0
        assert nothing_predicted.f1 == 0.0 and nothing_predicted.accuracy == 5 / 8
        assert all(np.isnan(v) for v in estimate_performance(zeros, [0.1, 0.5, 0.9], 1))

    def test_band(self) -> None:
        lower, upper = reference_band(0.8, 0.02, 500, 2000)  # 3 * 0.02 * sqrt(1/4) = 0.03
        assert (lower, upper) == (pytest.approx(0.77), pytest.approx(0.83))
        lo, hi = reference_band(0.8, 0.02, 500, np.array([0.0, 500.0]))
        assert np.isnan(lo[0]) and np.isnan(hi[0]) and lo[1] == pytest.approx(0.74)

    def test_bad_input_is_refused(self) -> None:
        with pytest.raises(ValueError, match="counts must be finite"):
            roc_auc([1.0, -1.0], [1.0, 1.0])
        with pytest.raises(ValueError, match="shape"):
            roc_auc([1.0, 1.0], [1.0, 1.0, 1.0])
        with pytest.raises(ValueError, match="one per bin"):
            expected_counts([1.0, 2.0], [0.5])
        with pytest.raises(ValueError, match="not one of the score edges"):
            served_bin([0.2, 0.5], 0.4)
        assert served_bin([0.2, 0.5], 0.5) == 2


counts_matrix = st.integers(1, 6).flatmap(
    lambda rows: st.integers(1, 12).flatmap(
        lambda bins: st.tuples(
            arrays(np.int64, (rows, bins), elements=st.integers(0, 50)),
            arrays(np.int64, (rows, bins), elements=st.integers(0, 50)),
        )
    )
)


class TestProperties:
    @settings(max_examples=60, deadline=None)
    @given(counts_matrix)
    def test_a_segments_by_bins_matrix_equals_its_rows(self, pn: tuple[np.ndarray, np.ndarray]) -> None:
        pos, neg = pn
        sums = (pos + neg) * 0.5
        whole = realised_metrics(pos, neg, score_sums=sums)
        q = np.linspace(0.05, 0.95, pos.shape[1])
        estimated = estimate_performance(pos + neg, q, pos.shape[1] // 2)
        for i in range(pos.shape[0]):
            row = realised_metrics(pos[i], neg[i], score_sums=sums[i])
            np.testing.assert_array_equal(np.asarray(whole.roc_auc)[i], row.roc_auc)
            np.testing.assert_array_equal(np.asarray(whole.calibration_error)[i], row.calibration_error)
            for a, b in zip(whole.curve, row.curve):
                np.testing.assert_array_equal(a[i], b)
            one = estimate_performance(pos[i] + neg[i], q, pos.shape[1] // 2)
            for a, b in zip(estimated, one):
                np.testing.assert_array_equal(np.asarray(a)[i], b)

    @settings(max_examples=60, deadline=None)
    @given(
        st.integers(2, 12).flatmap(
            lambda bins: st.tuples(
                st.just(bins),
                arrays(np.int64, st.integers(1, 80), elements=st.integers(0, bins - 1)),
                arrays(np.int64, st.integers(1, 80), elements=st.integers(0, bins - 1)),
                st.integers(0, 2**32 - 1),
            )
        )
    )
    def test_two_replicas_summed_equal_the_union(self, case: tuple[int, np.ndarray, np.ndarray, int]) -> None:
        bins, b1, b2, seed = case
        rng = np.random.default_rng(seed)
        y1, y2 = rng.random(b1.size) < 0.5, rng.random(b2.size) < 0.5
        (p1, n1), (p2, n2) = _counts(b1, y1, bins), _counts(b2, y2, bins)
        b, y = np.concatenate([b1, b2]), np.concatenate([y1, y2])
        auc = roc_auc(p1 + p2, n1 + n2)
        if y.all() or not y.any():
            assert np.isnan(auc)
        else:
            assert auc == pytest.approx(roc_auc_score(y, b), abs=1e-12)
        union = threshold_curve(*_counts(b, y, bins))
        for a, u in zip(threshold_curve(p1 + p2, n1 + n2), union):
            np.testing.assert_array_equal(a, u)

    @settings(max_examples=60, deadline=None)
    @given(counts_matrix)
    def test_auc_is_a_probability_and_flips_with_the_classes(self, pn: tuple[np.ndarray, np.ndarray]) -> None:
        pos, neg = pn
        auc, flipped = np.asarray(roc_auc(pos, neg)), np.asarray(roc_auc(neg, pos))
        defined = np.isfinite(auc)
        assert np.all((auc[defined] >= 0) & (auc[defined] <= 1))
        np.testing.assert_allclose(auc[defined] + flipped[defined], 1.0, atol=1e-12)
        np.testing.assert_array_equal(defined, (pos.sum(axis=1) > 0) & (neg.sum(axis=1) > 0))


class TestCalibration:
    def test_isotonic_equals_sklearn_weighted_on_the_bin_rates(self) -> None:
        rng = np.random.default_rng(9)
        n = rng.integers(5, 60, 30).astype(float)
        pos = rng.binomial(n.astype(int), np.linspace(0.05, 0.9, 30)).astype(float)  # noisy: violations
        q = bin_calibration(pos, n - pos)
        oracle = IsotonicRegression().fit(np.arange(30), pos / n, sample_weight=n).predict(np.arange(30))
        np.testing.assert_allclose(q, oracle, atol=1e-12)
        assert np.all(np.diff(q) >= 0)

    def test_monotone_rates_are_kept_and_empty_bins_take_their_neighbours(self) -> None:
        pos = np.array([0.0, 1.0, 0.0, 0.0, 6.0, 0.0])
        neg = np.array([0.0, 9.0, 0.0, 0.0, 4.0, 0.0])  # bins 0, 2, 3, 5 empty
        np.testing.assert_allclose(bin_calibration(pos, neg), [0.1, 0.1, 0.35, 0.35, 0.6, 0.6])
        with pytest.raises(ValueError, match="no labelled rows"):
            bin_calibration(np.zeros(3), np.zeros(3))


class TestReferencePerformance:
    def test_value_and_stddev_against_sklearn_on_the_same_chunks(self) -> None:
        s, b, y = _binned(10, n=6000, bins=30)
        predicted = b > 20
        fig = reference_performance(b, y, 30, predicted=predicted, chunk_size=500, seed=3)
        assert fig is not None and fig.chunks == 12 and fig.chunk_size == 500
        assert fig.value["roc_auc"] == pytest.approx(roc_auc_score(y, b))
        assert fig.value["precision"] == pytest.approx(precision_score(y, predicted))
        assert fig.value["accuracy"] == pytest.approx(accuracy_score(y, predicted))
        order = np.random.default_rng(3).permutation(b.size)[:6000].reshape(12, 500)
        aucs = [roc_auc_score(y[i], b[i]) for i in order]
        recalls = [recall_score(y[i], predicted[i]) for i in order]
        assert fig.stddev["roc_auc"] == pytest.approx(np.std(aucs, ddof=1))
        assert fig.stddev["recall"] == pytest.approx(np.std(recalls, ddof=1))

    def test_too_few_rows_give_no_reference(self) -> None:
        _, b, y = _binned(11, n=400, bins=30)
        assert reference_performance(b, y, 30) is None  # a tenth of 400 is under 50 rows a chunk
        assert reference_performance(b, y, 30, chunk_size=50) is None  # 8 chunks
        assert reference_performance(b, y, 30, chunk_size=40) is None  # chunks under 50 rows


def _calibrated(rng: np.random.Generator, n: int, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated scores: y ~ Bernoulli(s), s = sigmoid(2x - 1), x ~ N(0, spread)."""
    s = 1 / (1 + np.exp(-(2.0 * rng.normal(0, spread, n) - 1.0)))
    return s, rng.random(n) < s


class TestCbpe:
    def test_raw_bin_rates_reproduce_the_realised_metrics_exactly(self) -> None:
        _, b, y = _binned(12, bins=30)
        pos, neg = _counts(b, y, 30)
        est = estimate_performance(pos + neg, pos / np.maximum(pos + neg, 1), 21)
        served = confusion_metrics(confusion_at_bin(pos, neg, 21))
        assert est.roc_auc == pytest.approx(roc_auc(pos, neg), abs=1e-12)
        assert (est.precision, est.recall, est.f1, est.accuracy) == pytest.approx(tuple(served))

    @pytest.mark.parametrize("spread", [1.0, 0.6])  # 0.6: covariate shift, P(y | score) unchanged
    def test_estimates_agree_with_realised_within_sampling_error(self, spread: float) -> None:
        rng = np.random.default_rng(13)
        ref_s, ref_y = _calibrated(rng, 50_000)
        edges = np.quantile(ref_s, np.linspace(0, 1, 31)[1:-1])
        threshold = float(edges[19])
        edges_b = np.searchsorted(edges, ref_s)
        q = bin_calibration(*_counts(edges_b, ref_y, 30))
        windows, n = 200, 3000
        s, y = _calibrated(rng, windows * n, spread)
        b = np.searchsorted(edges, s).reshape(windows, n)
        y = y.reshape(windows, n)
        cell = np.arange(windows)[:, None] * 30 + b
        pos = np.bincount(cell[y], minlength=windows * 30).reshape(windows, 30)
        neg = np.bincount(cell[~y], minlength=windows * 30).reshape(windows, 30)
        est = estimate_performance(pos + neg, q, served_bin(edges, threshold))
        real_auc = roc_auc(pos, neg)
        real = confusion_metrics(confusion_at_bin(pos, neg, served_bin(edges, threshold)))
        for name, e, r in [
            ("roc_auc", est.roc_auc, real_auc),
            ("precision", est.precision, real.precision),
            ("recall", est.recall, real.recall),
        ]:
            gap = np.asarray(e) - np.asarray(r)
            spread_real = float(np.std(r))
            # unbiased: the mean gap is within 4 standard errors; each window's gap is sampling noise
            assert abs(gap.mean()) < 4 * gap.std() / np.sqrt(windows) + 2e-3, (name, gap.mean(), gap.std())
            assert np.all(np.abs(gap) < 5 * spread_real), (name, np.abs(gap).max(), spread_real)
            assert gap.std() <= 1.2 * spread_real, (name, gap.std(), spread_real)
