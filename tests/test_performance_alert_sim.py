"""False-alarm rate and power of the two performance alerts the mixin ships, by simulation.

The model is calibrated: ``x ~ N(0, spread)``, ``score = sigmoid(2x - 1)``, ``y ~ Bernoulli(score)``;
its baseline is fitted the ordinary way (20,000 labelled reference rows, 30 score bins, served
rule ``score > 0.5``) for three reference seeds, i.e. three "models". Windows are drawn from the
population: score-bin counts ~ Multinomial(n, pi_b) and positives per bin ~ Binomial(n_b, r_b),
with pi_b and r_b integrated on a fine grid; that is exactly the law of n iid rows' bin counts,
so 20,000 windows cost one vectorised call. The alerts:

(a) estimated (CBPE) performance below its reference band: ``estimated < ref - 3 stddev sqrt(chunk / n)``;
(b) realised performance drop: ``realised < ref - 3 stddev sqrt(chunk / n_labels)``, gated on
    ``n_labels >= 200``.

Degradations: a covariate shift (``spread`` shrinks until the CBPE AUC at the population falls by
0.05; P(y | score) unchanged, so the realised AUC falls too) and, for (b), concept drift (a
fraction of labels replaced by coin flips until the realised population AUC falls by 0.05; CBPE
is blind to it by design). The figures are printed in the assertion messages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.optimize import brentq

from otel_ml import fit_baseline
from otel_ml.evaluation import confusion_at_bin, confusion_metrics, estimate_performance, reference_band, roc_auc

WINDOWS = 20_000
REFERENCE_ROWS = 20_000
MIN_LABELS = 200
THRESHOLD = 0.5
SEEDS = (0, 1, 2)

pytestmark = pytest.mark.slow  # ~12 s: 20,000 windows per case keep the 0.1 % rates readable


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-z)))


def _population(edges: np.ndarray, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Bin probabilities pi_b and positive rates r_b of the model at ``spread``, on a fine grid."""
    x = np.linspace(-9 * spread, 9 * spread, 400_001)
    density = np.exp(-0.5 * (x / spread) ** 2)
    density /= density.sum()
    s = _sigmoid(2 * x - 1)
    b = np.searchsorted(edges, s)
    pi = np.bincount(b, weights=density, minlength=edges.size + 1)
    rate = np.bincount(b, weights=density * s, minlength=edges.size + 1) / np.maximum(pi, 1e-300)
    return pi, np.clip(rate, 0.0, 1.0)


class Model:
    """One fitted reference, its population laws with and without the degradations."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        s = _sigmoid(2 * rng.normal(0, 1, REFERENCE_ROWS) - 1)
        y = rng.random(REFERENCE_ROWS) < s
        score = fit_baseline({"x": s}, model="m", version="1", scores=s, labels=y, decision=THRESHOLD).score
        assert score is not None and score.performance is not None and score.calibration is not None
        assert score.first_positive_bin is not None
        self.seed = seed
        self.perf = score.performance
        self.labelled = score.labelled_count
        self.q = np.asarray(score.calibration)
        self.k = score.first_positive_bin
        edges = score.edges_array()
        self.reference = _population(edges, 1.0)
        target = self.perf.value["roc_auc"] - 0.05
        spread = brentq(lambda v: self._cbpe_auc(_population(edges, v)[0]) - target, 0.2, 1.0)
        self.shifted = _population(edges, spread)
        pi, r = self.reference

        def realised_auc(f: float) -> float:
            r2 = (1 - f) * r + 0.5 * f
            return float(roc_auc(pi * r2, pi * (1 - r2)))

        self.flip = brentq(lambda f: realised_auc(f) - target, 0.0, 1.0)
        self.concept = (pi, (1 - self.flip) * r + 0.5 * self.flip)

    def _cbpe_auc(self, pi: np.ndarray) -> float:
        return float(estimate_performance(pi, self.q).roc_auc)

    def lower(self, metric: str, n: int) -> float:
        lower, _ = reference_band(
            self.perf.value[metric], self.perf.stddev[metric], self.perf.chunk_size, n, self.labelled
        )
        return float(lower)

    def windows(self, law: tuple[np.ndarray, np.ndarray], n: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, n, salt])
        counts = rng.multinomial(n, law[0], size=WINDOWS)
        return counts, rng.binomial(counts, law[1])

    def estimated_fires(self, law: tuple[np.ndarray, np.ndarray], n: int, salt: int) -> dict[str, float]:
        counts, _ = self.windows(law, n, salt)
        est = estimate_performance(counts, self.q, self.k)
        return {m: float(np.mean(np.asarray(getattr(est, m)) < self.lower(m, n))) for m in ("roc_auc", "precision")}

    def realised_fires(self, law: tuple[np.ndarray, np.ndarray], n: int, salt: int) -> dict[str, float]:
        assert n >= MIN_LABELS  # the alert's gate
        counts, pos = self.windows(law, n, salt)
        neg = counts - pos
        served = confusion_metrics(confusion_at_bin(pos, neg, self.k))
        values = {"roc_auc": roc_auc(pos, neg), "precision": served.precision, "recall": served.recall}
        return {m: float(np.mean(np.asarray(v) < self.lower(m, n))) for m, v in values.items()}


@pytest.fixture(scope="module")
def models() -> list[Model]:
    return [Model(seed) for seed in SEEDS]


def _table(rates: dict[Any, dict[str, float]]) -> str:
    return "; ".join(f"{key}: " + ", ".join(f"{m} {v:.2%}" for m, v in r.items()) for key, r in rates.items())


def test_estimated_below_band_false_alarms(models: list[Model]) -> None:
    """(a) without drift. The band is the *realised* metric's spread, and the CBPE estimate varies
    far less than the realised metric (it has no label noise), so the 3-sigma band almost never fires."""
    rates = {(m.seed, n): m.estimated_fires(m.reference, n, 1) for m in models for n in (500, 2000, 5000)}
    worst = max(v for r in rates.values() for v in r.values())
    assert worst <= 0.005, f"false-alarm rate per model and window too high: {_table(rates)}"
    print(f"(a) false alarms (model seed, window n): {_table(rates)}")


def test_estimated_below_band_power(models: list[Model]) -> None:
    """(a) under a covariate shift that lowers the CBPE AUC by 0.05 (P(y | score) unchanged)."""
    rates = {(m.seed, n): m.estimated_fires(m.shifted, n, 2) for m in models for n in (500, 2000)}
    power_2000 = min(r["roc_auc"] for (_, n), r in rates.items() if n == 2000)
    assert power_2000 >= 0.8, f"power at n=2000 {power_2000:.2%}: {_table(rates)}"
    print(f"(a) power, AUC -0.05 by covariate shift: {_table(rates)}")


def test_realised_drop_false_alarms(models: list[Model]) -> None:
    """(b) without drift, at the minimum label count and above. AUC and precision stay near the
    one-sided 3-sigma rate (0.13 %), spread by each reference's own noise (its value and stddev
    are estimates from 20k rows / 40 chunks); recall is worse at large n because the band ignores
    the reference value's own sampling error, which stops shrinking while the window's does."""
    rates = {(m.seed, n): m.realised_fires(m.reference, n, 3) for m in models for n in (MIN_LABELS, 500, 2000, 5000)}
    worst = {metric: max(r[metric] for r in rates.values()) for metric in ("roc_auc", "precision", "recall")}
    assert worst["roc_auc"] <= 0.006 and worst["precision"] <= 0.006, f"{worst}: {_table(rates)}"
    assert worst["recall"] <= 0.03, f"{worst}: {_table(rates)}"
    print(f"(b) false alarms (model seed, labels): {_table(rates)}")


def test_realised_drop_power(models: list[Model]) -> None:
    """(b) at 2,000 labels: the covariate shift above, and concept drift that CBPE cannot see."""
    shift = {m.seed: m.realised_fires(m.shifted, 2000, 4) for m in models}
    concept = {m.seed: m.realised_fires(m.concept, 2000, 5) for m in models}
    blind = {m.seed: m.estimated_fires(m.concept, 2000, 6) for m in models}
    flips = ", ".join(f"{m.flip:.1%}" for m in models)
    message = (
        f"shift: {_table(shift)} | concept drift ({flips} labels flipped): {_table(concept)} | CBPE: {_table(blind)}"
    )
    assert min(r["roc_auc"] for r in shift.values()) >= 0.8, message
    assert min(r["roc_auc"] for r in concept.values()) >= 0.8, message
    assert max(r["roc_auc"] for r in blind.values()) <= 0.005, message  # CBPE is blind to concept drift
    print(f"(b) power at 2,000 labels: {message}")
