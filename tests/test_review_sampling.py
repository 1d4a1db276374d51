"""Human-review sampling: exact hash selection, strata, inclusion probabilities and the
stratified estimate (issue 16, "Review sampling": the statistical acceptance tests).

Every expectation comes from an independent computation: exact rational arithmetic for the
thresholds, ``bisect``/``np.searchsorted`` for the strata, a pure-Python splitmix64 for the row
hashes, scipy.stats for the binomial and chi-square checks, and hand-worked numbers.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import math
import multiprocessing
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from otel_ml._binning import DEFAULT_SCORE_EDGES
from otel_ml._review_sampling import (
    FULL,
    NO_SCORE_STRATUM,
    hash64,
    inclusion_probabilities,
    near_threshold,
    neyman_quotas,
    review_edges,
    row_hashes,
    row_id,
    salt_id,
    selected,
    selected_rows,
    stratified_error_rate,
    stratum_index,
    stratum_indices,
    stratum_labels,
    threshold64,
)

SALT = b"otel-ml review salt, issue 16"
MASK = (1 << 64) - 1
EDGES = review_edges(DEFAULT_SCORE_EDGES, (0.5,))


# --- hashing -------------------------------------------------------------------------------


def test_hash64_is_keyed_blake2b_little_endian_and_a_long_salt_is_hashed_to_its_key() -> None:
    digest = hashlib.blake2b(b"req-1", key=SALT, digest_size=8).digest()
    assert hash64(SALT, "req-1") == int.from_bytes(digest, "little")
    long_salt = bytes(range(100))  # over BLAKE2b's 64-byte key: its own 64-byte BLAKE2b digest is the key
    key = hashlib.blake2b(long_salt, digest_size=64).digest()
    assert hash64(long_salt, "req-1") == int.from_bytes(
        hashlib.blake2b(b"req-1", key=key, digest_size=8).digest(), "little"
    )
    assert hash64(long_salt, "req-1") != hash64(long_salt[:64], "req-1")  # never cut: a late difference counts
    assert hash64(SALT, "req-1") != hash64(SALT + b"x", "req-1")
    assert 0 <= hash64(SALT, "\ud800 lone surrogate") < FULL  # any str hashes, none raises


def _splitmix64_reference(base: int, n: int) -> list[int]:
    """splitmix64 in Python integers (Steele, Lea, Flood 2014), written from the paper's constants."""
    out = []
    for i in range(1, n + 1):
        z = (base + i * 0x9E3779B97F4A7C15) & MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out.append(z ^ (z >> 31))
    return out


def test_row_hashes_are_splitmix64_of_the_request_hash() -> None:
    got = row_hashes(SALT, "batch-7", 1000)
    assert got.dtype == np.uint64
    assert [int(x) for x in got] == _splitmix64_reference(hash64(SALT, "batch-7"), 1000)
    assert row_hashes(SALT, "batch-7", 0).size == 0
    assert row_id("batch-7", 3) == "batch-7#3"


def test_salt_id_is_eight_hex_digits_of_sha256() -> None:
    assert salt_id(SALT) == hashlib.sha256(SALT).hexdigest()[:8]
    assert len(salt_id(b"")) == 8 and int(salt_id(b""), 16) >= 0


def _chi2_pvalue(hashes: npt.NDArray[np.uint64], shift: int) -> float:
    buckets = ((hashes >> np.uint64(shift)) & np.uint64(255)).astype(np.intp)
    return float(stats.chisquare(np.bincount(buckets, minlength=256)).pvalue)


def test_hashes_of_sequential_request_ids_are_uniform() -> None:
    """Chi-square over 256 buckets of the top byte (what ``h < pi * 2^64`` looks at) and of the
    low byte, for 100,000 sequential ids and for the rows of one batch; a fixed id set."""
    ids = [f"req-{i}" for i in range(100_000)]
    single = np.array([hash64(SALT, i) for i in ids], dtype=np.uint64)
    rows = row_hashes(SALT, "req-0", 100_000)
    for hashes in (single, rows):
        assert _chi2_pvalue(hashes, 56) > 0.001
        assert _chi2_pvalue(hashes, 0) > 0.001
    # the check can fail: ids counted into the high bits without mixing land in 2 of the 256 buckets
    unmixed = np.arange(100_000, dtype=np.uint64) << np.uint64(40)
    assert _chi2_pvalue(unmixed, 56) < 0.001


def test_two_salts_select_nearly_independent_sets() -> None:
    """With pi = 0.1 under two salts, the overlap of the samples is Binomial(N, pi_a * pi_b) if
    the selections are independent; 99.9 % interval. The same salt selects the same set."""
    ids = [f"req-{i}" for i in range(60_000)]
    a = np.array([selected(hash64(b"salt-a", i), 0.1) for i in ids])
    b = np.array([selected(hash64(b"salt-b", i), 0.1) for i in ids])
    again = np.array([selected(hash64(b"salt-a", i), 0.1) for i in ids])
    assert (a == again).all()
    lo, hi = stats.binom.interval(0.999, a.size, a.mean() * b.mean())
    assert lo <= np.count_nonzero(a & b) <= hi
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / math.sqrt(a.size)


# --- thresholds and selection --------------------------------------------------------------


@given(pi=st.floats(allow_nan=False, allow_infinity=True), h=st.integers(0, MASK))
def test_selected_keeps_exactly_the_hashes_below_pi_times_2_64(pi: float, h: int) -> None:
    """``floor(pi * 2^64)`` hashes are selected: ``h`` is in when ``h + 1 <= pi * 2^64`` (exact rationals)."""
    scaled = Fraction(min(max(pi, 0.0), 1.0)) * (1 << 64)
    assert threshold64(pi) == math.floor(scaled)
    assert selected(h, pi) == (h + 1 <= scaled)
    assert selected_rows(np.array([h], dtype=np.uint64), pi).tolist() == [selected(h, pi)]


@given(
    hashes=st.lists(st.integers(0, MASK), min_size=1, max_size=30),
    pis=st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0, 0.5, 1e-20]), min_size=30),
)
def test_selected_rows_is_selected_per_row(hashes: list[int], pis: list[float]) -> None:
    p = np.array(pis[: len(hashes)])
    got = selected_rows(np.array(hashes, dtype=np.uint64), p)
    assert got.tolist() == [selected(h, float(x)) for h, x in zip(hashes, p)]


def test_threshold_boundaries() -> None:
    assert threshold64(1.0) == threshold64(2.0) == FULL and selected(MASK, 1.0)
    assert threshold64(0.0) == threshold64(-1.0) == threshold64(math.nan) == 0 and not selected(0, 0.0)
    t = threshold64(0.25)
    assert t == 1 << 62 and selected(t - 1, 0.25) and not selected(t, 0.25)


# --- strata ----------------------------------------------------------------------------------


def test_review_edges_add_tidy_edges_around_the_threshold() -> None:
    assert EDGES == (0.1, 0.2, 0.3, 0.4, 0.45, 0.48, 0.49, 0.5, 0.51, 0.52, 0.55, 0.6, 0.7, 0.8, 0.9)
    # 0.65 + 0.05 is 0.7000000000000001 in floats: rounded, it meets the score edge 0.7
    assert review_edges((0.5, 0.7), (0.65,), near=(0.05,)) == (0.5, 0.6, 0.65, 0.7)
    # clipped to the span of the score edges and thresholds; non-finite values dropped
    assert review_edges((0.1, 0.9), (0.9, math.nan), near=(0.05,)) == (0.1, 0.85, 0.9)
    assert review_edges((), ()) == ()


def test_stratum_labels_are_right_closed_intervals_spelled_like_le() -> None:
    assert stratum_labels((0.1, 0.65, 1e6)) == ("(-Inf,0.1]", "(0.1,0.65]", "(0.65,1e+06]", "(1e+06,+Inf)", "none")
    assert stratum_labels(()) == ("(-Inf,+Inf)", NO_SCORE_STRATUM)
    labels = stratum_labels(EDGES)
    assert labels[stratum_index(EDGES, 0.5)] == "(0.49,0.5]"  # a score on an edge: the bin it closes
    assert labels[stratum_index(EDGES, 0.5000001)] == "(0.5,0.51]"
    assert labels[stratum_index(EDGES, 0.95)] == "(0.9,+Inf)"
    for missing in (None, math.nan, "not a number", object()):
        assert labels[stratum_index(EDGES, missing)] == "none"


sorted_edges = st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=20, unique=True).map(lambda e: sorted(e))


@given(edges=sorted_edges, data=st.data())
def test_stratum_index_is_bisect_left_and_stratum_indices_is_searchsorted(
    edges: list[float], data: st.DataObject
) -> None:
    extra = st.sampled_from(edges) if edges else st.just(0.0)
    scores = data.draw(st.lists(st.floats(allow_nan=True, allow_infinity=True) | extra, max_size=40))
    s = np.array(scores, dtype=np.float64)
    expected = [len(edges) + 1 if math.isnan(x) else bisect.bisect_left(edges, x) for x in scores]
    assert [stratum_index(edges, x) for x in scores] == expected
    assert stratum_indices(edges, s).tolist() == expected
    plain = np.searchsorted(np.array(edges, dtype=np.float64), s[~np.isnan(s)], side="left")
    assert stratum_indices(edges, s)[~np.isnan(s)].tolist() == plain.tolist()
    assert max(expected, default=0) < len(stratum_labels(tuple(edges)))


def test_near_threshold_marks_the_bins_inside_the_widest_band() -> None:
    labels = stratum_labels(EDGES)
    near = near_threshold(EDGES, (0.5,))
    assert [lab for lab, n in zip(labels, near) if n] == [
        "(0.45,0.48]",
        "(0.48,0.49]",
        "(0.49,0.5]",
        "(0.5,0.51]",
        "(0.51,0.52]",
        "(0.52,0.55]",
    ]
    assert len(near) == len(labels) and near[-1] is False
    # no distances: the two bins either side of the threshold
    assert near_threshold((0.4, 0.5, 0.6), (0.5,), near=()) == (False, True, True, False, False)


# --- inclusion probabilities -----------------------------------------------------------------


def test_inclusion_probabilities_quota_over_volume_capped_at_one() -> None:
    pi = inclusion_probabilities({"a": 1000, "b": 10, "c": 100, "d": 0}, near={"c"}, segment_floor=0)
    assert pi == {"a": 20 / 1000, "b": 1.0, "c": 50 / 100, "d": 1.0}


def test_segment_floor_scales_a_rare_segment_up_by_water_filling() -> None:
    """Segment x: N = {a: 100, b: 3}, quota 2, floor 10. At pi = k/N it expects 2 + 2 = 4 reviews.
    Scaling every quota by c, b saturates at c = 3/2 (6 reviews); then 3 + 2c = 10 gives c = 3.5:
    pi_a = 7/100, pi_b = 1 (10 reviews). Segment y, six strata of 5000, expects 6 * 2 = 12: left alone."""
    volume = {("x", "a"): 100, ("x", "b"): 3, **{("y", str(i)): 5000 for i in range(6)}}
    pi = inclusion_probabilities(volume, quota=2, segment_floor=10, segment_of={k: k[0] for k in volume})
    assert pi[("x", "a")] == pytest.approx(0.07) and pi[("x", "b")] == 1.0
    assert all(pi[("y", str(i))] == 2 / 5000 for i in range(6))
    tiny = inclusion_probabilities({"a": 4, "b": 3}, quota=1, segment_floor=10)  # fewer than the floor at all
    assert tiny == {"a": 1.0, "b": 1.0}


@given(
    volume=st.dictionaries(st.integers(0, 20), st.integers(0, 10**6), min_size=1, max_size=15),
    quota=st.floats(0.5, 100),
    floor=st.floats(0, 500),
)
def test_the_floor_is_met_exactly_unless_the_segment_is_smaller(
    volume: dict[int, int], quota: float, floor: float
) -> None:
    pi = inclusion_probabilities(volume, quota=quota, threshold_quota=2 * quota, near={0, 1}, segment_floor=floor)
    assert all(0.0 < p <= 1.0 for p in pi.values())
    expected = sum(volume[k] * pi[k] for k in volume)
    plain = sum(min(n, 2 * quota if k in (0, 1) else quota) for k, n in volume.items())
    assert expected == pytest.approx(max(plain, min(floor, sum(volume.values()))), rel=1e-9, abs=1e-9)


# --- the sample sizes ------------------------------------------------------------------------

STRATA_VOLUME = {"huge": 80_000, "large": 12_000, "near": 1_500, "small": 300, "tiny": 45, "rare": 12}


def _strata_pi() -> dict[str, float]:
    return inclusion_probabilities(STRATA_VOLUME, quota=20, threshold_quota=50, near={"near"}, segment_floor=0)


def test_per_stratum_sample_sizes_are_inside_the_binomial_99_interval() -> None:
    """One salt, six strata with pi from 2.5e-4 to 1: each r_h is Binomial(N_h, pi_h) if hash
    selection is a fair coin per id, so it falls in scipy's 99 % interval around N_h pi_h (the quota)."""
    pi = _strata_pi()
    assert len(set(pi.values())) == 6 and pi["rare"] == 1.0
    for name, n in STRATA_VOLUME.items():
        r = sum(selected(hash64(SALT, f"{name}-{i}"), pi[name]) for i in range(n))
        lo, hi = stats.binom.interval(0.99, n, pi[name])
        assert lo <= r <= hi, (name, r, lo, hi, n * pi[name])


def test_sample_sizes_over_many_salts_are_binomial() -> None:
    """Over 300 salts the six strata fall outside their 99 % interval at most as often as a
    Binomial(1800, 0.01) allows (99.9 % quantile); their mean is N_h pi_h within 4 standard errors."""
    pi = _strata_pi()
    names = list(STRATA_VOLUME)
    outside, counts = 0, np.zeros((300, len(names)))
    for s in range(300):
        for j, name in enumerate(names):
            counts[s, j] = np.count_nonzero(
                selected_rows(row_hashes(SALT + bytes([s % 256, s // 256]), name, STRATA_VOLUME[name]), pi[name])
            )
    for j, name in enumerate(names):
        n, p = STRATA_VOLUME[name], pi[name]
        lo, hi = stats.binom.interval(0.99, n, p)
        outside += int(np.count_nonzero((counts[:, j] < lo) | (counts[:, j] > hi)))
        se = math.sqrt(n * p * (1 - p) / 300)
        assert abs(counts[:, j].mean() - n * p) <= 4 * se + 1e-12, name
    assert outside <= stats.binom.ppf(0.999, counts.size, 0.01)


# --- 1 replica and 4 replicas ----------------------------------------------------------------


def _traffic(n: int) -> tuple[list[str], list[float | None]]:
    rng = np.random.default_rng(4)
    scores: list[float | None] = [None if rng.random() < 0.02 else float(x) for x in rng.beta(0.8, 0.8, n)]
    return [f"req-{i}" for i in range(n)], scores


def _replica(ids: list[str], scores: list[float | None], pis: list[float]) -> list[str]:
    """What one replica selects: hash64 per single-row call, row_hashes per batch call of 8 rows
    (the requests whose number ends in 7 are also batch calls)."""
    out = [i for i, s in zip(ids, scores) if selected(hash64(SALT, i), pis[stratum_index(EDGES, s)])]
    for i, s in zip(ids, scores):
        if not i.endswith("7"):
            continue
        rows = np.full(8, np.nan if s is None else s)
        chosen = selected_rows(row_hashes(SALT, "batch-" + i, 8), np.array(pis)[stratum_indices(EDGES, rows)])
        out += [row_id("batch-" + i, int(k)) for k in np.flatnonzero(chosen)]
    return out


def test_one_and_four_replicas_select_the_same_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four spawned processes (each with its own PYTHONHASHSEED) take every fourth request; the
    union of what they select is exactly what one process selects from all the traffic."""
    ids, scores = _traffic(20_000)
    labels = stratum_labels(EDGES)
    volume = dict(zip(labels, np.bincount([stratum_index(EDGES, s) for s in scores], minlength=len(labels)).tolist()))
    pi_table = inclusion_probabilities(volume, quota=200, threshold_quota=500, near=set())
    pis = [pi_table[lab] for lab in labels]
    single = _replica(ids, scores, pis)
    ctx = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as stack:
        pending = []
        for k in range(4):  # all four run at once, like replicas
            monkeypatch.setenv("PYTHONHASHSEED", str(101 + k))
            pool = stack.enter_context(ctx.Pool(1))
            pending.append(pool.apply_async(_replica, (ids[k::4], scores[k::4], pis)))
        shares = [p.get(timeout=120) for p in pending]
    union = [i for share in shares for i in share]
    assert 300 < len(single) < 19_000  # a real sample, neither empty nor everything
    assert len(union) == len(set(union)) and set(union) == set(single)


# --- the estimator ---------------------------------------------------------------------------


def test_stratified_error_rate_on_a_hand_worked_example() -> None:
    """N = (1000, 200, 50, 10), r = (20, 50, 10, 0), e = (1, 10, 5, 0). The last stratum has no
    reviews: it leaves both sums, so N = 1250 and p_h = (0.05, 0.2, 0.5).
    p   = (1000 * 0.05 + 200 * 0.2 + 50 * 0.5) / 1250 = 115 / 1250 = 0.092
    Var = 0.8^2 * 0.05 * 0.95 / 20 + 0.16^2 * 0.2 * 0.8 / 50 + 0.04^2 * 0.5 * 0.5 / 10
        = 0.64 * 0.002375 + 0.0256 * 0.0032 + 0.0016 * 0.025 = 0.00152 + 0.00008192 + 0.00004 = 0.00164192"""
    p, se = stratified_error_rate([1000, 200, 50, 10], [20, 50, 10, 0], [1, 10, 5, 0])
    assert p == pytest.approx(0.092, rel=1e-12)
    assert se == pytest.approx(math.sqrt(0.00164192), rel=1e-12)
    assert all(math.isnan(x) for x in stratified_error_rate([10, 20], [0, 0], [0, 0]))
    with pytest.raises(ValueError):
        stratified_error_rate([1, 2], [1], [0])


def _population(seed: int = 16, n: int = 100_000) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """A day of predictions whose errors concentrate near the threshold 0.5: scores Beta(0.8, 0.8)
    (a mildly two-humped classifier), P(error) = 0.003 far from it rising to 0.403 at it (a
    Gaussian bump of width 0.04); 1 % of calls have no score (P(error) = 0.05). Drawn once: the
    population is fixed and its error rate is the known truth."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(0.8, 0.8, n)
    p_error = 0.003 + 0.4 * np.exp(-(((scores - 0.5) / 0.04) ** 2))
    scores[rng.random(n) < 0.01] = np.nan
    p_error[np.isnan(scores)] = 0.05
    return stratum_indices(EDGES, scores), rng.random(n) < p_error


def _simulate(
    strata: npt.NDArray[np.intp], errors: npt.NDArray[np.bool_], salts: int
) -> dict[str, npt.NDArray[np.float64]]:
    """Stratified estimates with the design's quotas (20 a stratum, 50 near the threshold) and
    plain proportions under simple random sampling at the same expected budget, one per salt.
    Selection is recomputed here from exact integer thresholds, not through selected_rows."""
    labels = stratum_labels(EDGES)
    volume = np.bincount(strata, minlength=len(labels))
    near = {lab for lab, n in zip(labels, near_threshold(EDGES, (0.5,))) if n}
    pi = inclusion_probabilities(dict(zip(labels, volume.tolist())), quota=20, threshold_quota=50, near=near)
    pi_h = np.array([pi[lab] for lab in labels])
    limit = np.array([min(threshold64(p), (1 << 64) - 1) for p in pi_h], dtype=np.uint64)[strata]
    always = (pi_h >= 1.0)[strata]
    budget = float(volume @ pi_h)
    srs_limit = np.uint64(threshold64(budget / strata.size))
    est, srs = np.empty(salts), np.empty(salts)
    for s in range(salts):
        chosen = (row_hashes(b"salt-%d" % s, "day", strata.size) < limit) | always
        reviewed = np.bincount(strata[chosen], minlength=len(labels))
        wrong = np.bincount(strata[chosen], weights=errors[chosen], minlength=len(labels))
        est[s] = stratified_error_rate(volume, reviewed, wrong)[0]
        plain = row_hashes(b"srs-%d" % s, "day", strata.size) < srs_limit
        srs[s] = errors[plain].mean()
    return {"stratified": est, "srs": srs, "budget": np.array([budget])}


@pytest.fixture(scope="module")
def simulation() -> tuple[float, dict[str, npt.NDArray[np.float64]]]:
    strata, errors = _population()
    return float(errors.mean()), _simulate(strata, errors, 1000)


def test_the_stratified_estimate_is_unbiased_over_1000_salts(
    simulation: tuple[float, dict[str, npt.NDArray[np.float64]]],
) -> None:
    """|mean of 1,000 estimates - true error rate| < 2.58 Monte-Carlo standard errors
    (sd / sqrt(1000)): a two-sided 99 % test of "no bias". The issue's "within one MC standard
    error" would be a 68 % test: an unbiased estimator would fail it about one run in three, so
    a pass would say little and a failure nothing; 2.58 keeps the false alarm at 1 % while a
    bias of 3 SE (here about 0.0004 on a rate of about 0.027) still fails it half the time."""
    truth, runs = simulation
    est = runs["stratified"]
    mc_se = est.std(ddof=1) / math.sqrt(est.size)
    bias = est.mean() - truth
    print(f"truth {truth:.5f} mean {est.mean():.5f} bias {bias:+.2e} MC SE {mc_se:.2e} ({bias / mc_se:+.2f} SE)")
    assert not np.isnan(est).any()
    assert abs(bias) < 2.58 * mc_se
    assert abs(bias) < 1e-3  # EVALUATION.md's measured bias bound, for scale


def test_rmse_at_equal_budget_is_at_most_0_9_of_simple_random_sampling(
    simulation: tuple[float, dict[str, npt.NDArray[np.float64]]],
) -> None:
    """Same expected number of reviews; errors concentrate near the threshold, where the
    quotas put more reviews. (On scores shaped like a confident, calibrated classifier's, where
    the big outer bins hold most errors, equal quotas are worse than simple random: see the
    report of issue 16; the quota design buys coverage of borderline cases, not efficiency.)"""
    truth, runs = simulation
    rmse = {k: math.sqrt(float(np.mean((runs[k] - truth) ** 2))) for k in ("stratified", "srs")}
    ratio = rmse["stratified"] / rmse["srs"]
    budget = runs["budget"][0]
    print(f"budget {budget:.0f} RMSE stratified {rmse['stratified']:.5f} srs {rmse['srs']:.5f} ratio {ratio:.3f}")
    assert ratio <= 0.9


# --- Neyman quotas: when the errors are not where the fixed quotas look ----------------------


def test_neyman_quotas_on_a_hand_worked_example() -> None:
    """Budget 100. p_h = (e_h + 1/2) / (r_h + 1): a (r 9, e 4) 0.45, b (r 19, e 0) 0.025, c (never
    reviewed) 0.5. Weights N_h sqrt(p_h (1 - p_h)): a 1000 * sqrt(0.2475) = 497.49, b 1000 *
    sqrt(0.024375) = 156.13, c 10 * 0.5 = 5. c's share 100 * 5 / 658.62 = 0.76 is below the
    minimum 2, so c = 2 and a, b split the other 98 as 497.49 : 156.13: a = 74.59, b = 23.41."""
    q = neyman_quotas({"a": 1000, "b": 1000, "c": 10}, {"a": 9, "b": 19}, {"a": 4, "b": 0}, 100)
    wa, wb = 1000 * math.sqrt(0.45 * 0.55), 1000 * math.sqrt(0.025 * 0.975)
    assert q["c"] == 2.0
    assert q["a"] == pytest.approx(98 * wa / (wa + wb), rel=1e-9) and q["a"] == pytest.approx(74.59, abs=0.01)
    assert q["a"] + q["b"] + q["c"] == pytest.approx(100, rel=1e-9)
    assert neyman_quotas({"a": 30, "b": 40}, {}, {}, 1000) == {"a": 30.0, "b": 40.0}  # all of it
    assert neyman_quotas({"a": 30, "b": 40}, {}, {}, 1) == {"a": 2.0, "b": 2.0}  # the minimums win


@given(
    volume=st.dictionaries(st.integers(0, 30), st.integers(0, 10**5), min_size=1, max_size=20),
    reviews=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), min_size=30, max_size=30),
    share=st.floats(0, 1),
)
def test_neyman_quotas_spend_the_budget_within_their_bounds(
    volume: dict[int, int], reviews: list[tuple[int, int]], share: float
) -> None:
    reviewed = {k: max(reviews[k]) for k in volume if k % 3}  # some strata never reviewed
    errors = {k: min(reviews[k]) for k in reviewed}
    low, high = sum(min(n, 2.0) for n in volume.values()), float(sum(volume.values()))
    budget = low + share * (high - low)
    q = neyman_quotas(volume, reviewed, errors, budget)
    assert all(min(n, 2.0) - 1e-9 <= q[k] <= n + 1e-9 for k, n in volume.items())
    assert sum(q.values()) == pytest.approx(budget, rel=1e-6, abs=1e-6)


def _calibrated(seed: int, n: int = 100_000) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """A confident, calibrated classifier: scores Beta(0.4, 0.4), P(error) = min(s, 1 - s). Its
    errors thin out away from 0.5 but most of them sit in the two big outer bins."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(0.4, 0.4, n)
    return stratum_indices(EDGES, scores), rng.random(n) < np.minimum(scores, 1 - scores)


def _rmse_ratio(
    strata: npt.NDArray[np.intp], errors: npt.NDArray[np.bool_], pi_h: npt.NDArray[np.float64], salts: int
) -> float:
    labels = stratum_labels(EDGES)
    volume = np.bincount(strata, minlength=len(labels))
    budget = float(volume @ pi_h)
    truth = float(errors.mean())
    est, srs = np.empty(salts), np.empty(salts)
    for s in range(salts):
        chosen = selected_rows(row_hashes(b"n-%d" % s, "day", strata.size), pi_h[strata])
        reviewed = np.bincount(strata[chosen], minlength=len(labels))
        est[s] = stratified_error_rate(
            volume, reviewed, np.bincount(strata[chosen], weights=errors[chosen], minlength=len(labels))
        )[0]
        srs[s] = errors[selected_rows(row_hashes(b"r-%d" % s, "day", strata.size), budget / strata.size)].mean()
    return math.sqrt(float(np.mean((est - truth) ** 2)) / float(np.mean((srs - truth) ** 2)))


def test_neyman_quotas_from_yesterdays_reviews_beat_simple_random_where_fixed_quotas_do_not() -> None:
    """Day 1 is reviewed with the fixed quotas (one salt); its per-stratum reviews r_h and errors
    e_h set day 2's Neyman quotas at the same budget. On day 2 (a new population), over 1,000 salts:
    fixed quotas lose to simple random sampling (measured RMSE ratio 1.4: the outer bins are
    under-reviewed), Neyman quotas win, modestly (measured 0.96; 0.90 with day 1's true rates:
    on this population even a perfect allocation gains little over simple random)."""
    labels = stratum_labels(EDGES)
    near = {lab for lab, n in zip(labels, near_threshold(EDGES, (0.5,))) if n}
    day1, errors1 = _calibrated(1)
    volume1 = dict(zip(labels, np.bincount(day1, minlength=len(labels)).tolist()))
    fixed = inclusion_probabilities(volume1, near=near)
    chosen = selected_rows(row_hashes(b"day-1", "day", day1.size), np.array([fixed[lab] for lab in labels])[day1])
    r = np.bincount(day1[chosen], minlength=len(labels))
    e = np.bincount(day1[chosen], weights=errors1[chosen], minlength=len(labels))
    budget = sum(volume1[lab] * fixed[lab] for lab in labels)
    quotas = neyman_quotas(volume1, dict(zip(labels, r.tolist())), dict(zip(labels, e.tolist())), budget)
    pi_ney = inclusion_probabilities(volume1, quotas=quotas)
    day2, errors2 = _calibrated(2)
    fixed_ratio = _rmse_ratio(day2, errors2, np.array([fixed[lab] for lab in labels]), 1000)
    neyman_ratio = _rmse_ratio(day2, errors2, np.array([pi_ney[lab] for lab in labels]), 1000)
    print(
        f"budget {budget:.0f}: RMSE / simple random, fixed quotas {fixed_ratio:.3f}, Neyman quotas {neyman_ratio:.3f}"
    )
    assert fixed_ratio > 1.0  # the limitation the Neyman quotas are for (if this changes, so does the advice)
    assert neyman_ratio < 1.0 and neyman_ratio < fixed_ratio - 0.3


@given(salt=st.binary(max_size=200), request_id=st.text(max_size=300))
def test_the_bound_hasher_is_hash64(salt: bytes, request_id: str) -> None:
    """The request path's copy-per-id hasher gives hash64's value for every salt and id (long salts and
    lone surrogates included)."""
    from otel_ml._review_sampling import hasher64

    assert hasher64(salt)(request_id) == hash64(salt, request_id)
