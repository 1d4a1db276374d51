"""Page rates of the shipped verdicts: clean false-page rates and the decision-rate power curve.

    python bench/page_rates.py [--trials 2000]

A model with 20 segments of 20 to 5,000 predictions per window (yes/no decision at 0.2) and a
baseline of 1M rows; one segment's rate drops by 5-40 % at a size of 200-20,000 predictions
per window. Prints the share of trials where that segment pages (status 2) in the first window
after the drop and within three windows, through the sidecar's ``family_verdicts``. Then the
clean P(any page) of the decision family and of a 9-member drift family (8 features + score).
"""

from __future__ import annotations

import argparse

import numpy as np
from _machine import machine_line

from otel_ml.drift import DecisionSettings, compare, family_alpha
from otel_ml.sidecar._decisions import family_verdicts
from otel_ml.sidecar._outputs import OutputSettings

LAYOUT = np.round(np.geomspace(20, 5000, 20))
BASELINE_ROWS = 1_000_000


def _rows(x: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([n - x, x], axis=-1).reshape(*x.shape[:-1], -1), np.repeat(n, 2, axis=-1)


def caught(size: float, drop: float, rate: float, trials: int, seed: int) -> tuple[float, float]:
    """Share of trials where segment 0 pages in the first window after the drop, and within three."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([[size], LAYOUT[1:]])
    m = np.round(BASELINE_ROWS * sizes / sizes.sum())
    base = rng.binomial(m.astype(np.int64), rate, size=(trials, sizes.size)) / m
    after = np.full(sizes.size, rate)
    after[0] = rate * (1 - drop)
    n = sizes.astype(np.int64)
    hist = [rng.binomial(n, rate, size=(trials, n.size)).astype(float) for _ in range(3)]
    hist += [rng.binomial(n, after, size=(trials, n.size)).astype(float) for _ in range(3)]
    twin = np.repeat(np.arange(0, 2 * n.size, 2), 2)
    rates = np.stack([1 - base, base], axis=-1).reshape(trials, -1)
    m2, hit, first = np.repeat(m, 2), np.zeros(trials, dtype=bool), 0.0
    for k in range(3, 6):
        cur_x, cur_n = _rows(hist[k], np.broadcast_to(sizes, hist[k].shape))
        prev_x, prev_n = _rows(hist[k - 1], np.broadcast_to(sizes, hist[k].shape))
        pool_x, pool_n = _rows(sum(hist[k - 2 : k + 1]), np.broadcast_to(3 * sizes, hist[k].shape))
        sp, _, sb, _ = family_verdicts(
            (cur_x, cur_n, m2),
            (cur_x, cur_n, prev_x / prev_n, prev_n),
            (pool_x, pool_n, m2),
            rates,
            twin,
            DecisionSettings(),
        )
        hit |= (sp[:, 1] == 2) | (sb[:, 1] == 2)
        first = float(hit.mean()) if k == 3 else first
    return first, float(hit.mean())


def clean_drift(n: int, trials: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    shapes = [np.full(10, 0.1), np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01])] * 4
    shapes.append(shapes[1])
    ref = np.array([rng.multinomial(50_000, p) / 50_000 for p in shapes])
    cur = np.stack([rng.multinomial(n, p, size=trials) for p in shapes], axis=1).reshape(-1, 10)
    alpha = family_alpha(OutputSettings().alpha, len(shapes), "holm")
    res = compare(np.tile(ref, (trials, 1)), cur, 50_000, alpha=alpha)
    return float(np.any(res.status.reshape(trials, -1) == 2, axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    args = parser.parse_args()
    print(f"{machine_line()}; trials {args.trials}; defaults {DecisionSettings()}")
    sizes, drops = (200, 1000, 5000, 20_000), (0.05, 0.1, 0.2, 0.3, 0.4)
    print("\nDetection of a relative drop of a 0.2 rate: first window / within three windows")
    print("drop   " + "".join(f"{s:>16,}" for s in sizes))
    for drop in drops:
        cells = [caught(s, drop, 0.2, args.trials, seed=int(s + 100 * drop)) for s in sizes]
        print(f"{drop:>4.0%}   " + "".join(f"{a:>8.1%}/{b:>6.1%}" for a, b in cells))
    print("\nClean P(any drift page), 8 features + score:")
    for n in (50, 200, 1000, 10_000, 100_000):
        print(f"  n = {n:>7,}: {clean_drift(n, args.trials, seed=n):.2%}")


if __name__ == "__main__":
    main()
