"""Human-review sampling: deterministic hash selection within strata, and the estimate it allows.

A review stratum is (model, version, segment, review bin); the review bins are the score's bins
plus extra edges around the decision threshold, where errors concentrate. Each stratum gets an
inclusion probability ``pi_h = min(1, k_h / N_h)`` (a daily quota over the expected daily
volume), and a prediction is selected when ``hash64(salt, request_id) < pi_h * 2^64``: the same
answer on every replica and process (the precedent is OTel's TraceIdRatioBased sampler), so the
selection is auditable and ``pi`` travels with the id as its weight ``1 / pi``.

Pure (numpy and stdlib): the app imports it on the request path and the sidecar imports it to
compute ``pi`` and to check the estimate. No scipy here.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

from ._names import STRATUM_NO_SCORE, format_le

__all__ = [
    "DEFAULT_NEAR",
    "NO_SCORE_STRATUM",
    "FULL",
    "hash64",
    "hasher64",
    "inclusion_probabilities",
    "near_threshold",
    "neyman_quotas",
    "review_edges",
    "row_hashes",
    "row_id",
    "salt_id",
    "selected",
    "selected_rows",
    "stratified_error_rate",
    "stratum_index",
    "stratum_indices",
    "stratum_labels",
    "threshold64",
]

K = TypeVar("K", bound=Hashable)
U64 = npt.NDArray[np.uint64]

FULL: Final = 1 << 64
"""``threshold64(1.0)``: one more than the largest hash, so every id is selected."""
DEFAULT_NEAR: Final[tuple[float, ...]] = (0.01, 0.02, 0.05)
"""Distances from a decision threshold that get their own bin edges (``t - d``, ``t + d``)."""
NO_SCORE_STRATUM: Final = STRATUM_NO_SCORE
"""The last stratum: calls without a finite score (never mixed into a score bin)."""

_GAMMA: Final = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment: 2^64 / golden ratio, odd
_MIX1: Final = np.uint64(0xBF58476D1CE4E5B9)
_MIX2: Final = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_blake2b: Final = hashlib.blake2b
_SIGNIFICANT: Final = 12  # digits an edge is rounded to: 0.65 + 0.05 is 0.7, not 0.7000000000000001


def hash64(salt: bytes, request_id: str) -> int:
    """A 64-bit unsigned hash of the id: keyed blake2b, so it is the same on every replica and
    process (no PYTHONHASHSEED) and nobody without the salt can steer an id into the sample.

    Lone surrogates are encoded as they are (``surrogatepass``) instead of raising: any ``str``
    hashes, and a valid string hashes as its UTF-8 bytes. BLAKE2b takes a key of at most 64
    bytes: a longer salt is first hashed to 64 (never cut, so salts differing late still differ)."""
    try:
        data = request_id.encode()
    except UnicodeEncodeError:
        data = request_id.encode("utf-8", "surrogatepass")
    key = salt if len(salt) <= 64 else _long_key(salt)
    return int.from_bytes(_blake2b(data, key=key, digest_size=8).digest(), "little")


@lru_cache(maxsize=64)
def hasher64(salt: bytes) -> Callable[[str], int]:
    """:func:`hash64` with the salt bound, for the request path: the keyed BLAKE2b state is built once
    and copied per id, which skips hashing the key block on every call (0.67 us instead of 0.92 here)."""
    prototype = _blake2b(key=salt if len(salt) <= 64 else _long_key(salt), digest_size=8)
    copy = prototype.copy

    def hash_of(request_id: str) -> int:
        try:
            data = request_id.encode()
        except UnicodeEncodeError:
            data = request_id.encode("utf-8", "surrogatepass")
        state = copy()
        state.update(data)
        return int.from_bytes(state.digest(), "little")

    return hash_of


def _long_key(salt: bytes) -> bytes:
    return hashlib.blake2b(salt, digest_size=64).digest()


def salt_id(salt: bytes) -> str:
    """8 hex digits naming a salt (sha256): items say which salt chose them without revealing it,
    so a salt change mid-window shows up instead of silently mixing two samples."""
    return hashlib.sha256(salt).hexdigest()[:8]


def row_id(request_id: str, i: int) -> str:
    """The review id of row ``i`` of a batch call: what its hash in :func:`row_hashes` stands for."""
    return f"{request_id}#{i}"


def _splitmix64(z: U64) -> U64:
    """splitmix64's finaliser, in place on a uint64 array (arrays wrap silently; numpy scalars
    would warn on overflow, so this never sees one)."""
    z ^= z >> _S30
    z *= _MIX1
    z ^= z >> _S27
    z *= _MIX2
    z ^= z >> _S31
    return z


def row_hashes(salt: bytes, request_id: str, n: int) -> U64:
    """The hashes of a batch call's ``n`` rows (ids ``row_id(request_id, i)``), vectorised:
    splitmix64 of ``hash64(salt, request_id) + (i + 1) * gamma``, one blake2b per call instead of
    one per row. Each row's hash is still a deterministic function of (salt, request id, i)."""
    base = np.array([hash64(salt, request_id)], dtype=np.uint64)
    z = np.arange(1, max(n, 0) + 1, dtype=np.uint64)
    z *= _GAMMA
    z += base
    return _splitmix64(z)


def threshold64(pi: float) -> int:
    """``floor(pi * 2^64)``: an id is selected when its hash is below it. ``pi >= 1`` is
    :data:`FULL` (all), ``pi <= 0`` and NaN are 0 (none). Exact: scaling by 2^64 is exact in binary."""
    if not pi > 0.0:  # also NaN
        return 0
    if pi >= 1.0:
        return FULL
    return int(math.ldexp(pi, 64))


def selected(h: int, pi: float) -> bool:
    """Whether the id with hash ``h`` is in the sample of inclusion probability ``pi``."""
    return h < threshold64(pi)


def selected_rows(hashes: npt.NDArray[np.uint64], pi: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """:func:`selected` per row of a batch, ``pi`` one value or one per row (rows of a batch fall
    in different strata). Exact like :func:`threshold64`: ``pi * 2^64`` is exact in float64 and
    every float64 below 2^64 converts to uint64 exactly."""
    p = np.broadcast_to(np.asarray(pi, dtype=np.float64), hashes.shape)
    partial = (p > 0.0) & (p < 1.0)
    limits = np.ldexp(np.where(partial, p, 0.0), 64).astype(np.uint64)
    out: npt.NDArray[np.bool_] = (hashes < limits) | (p >= 1.0)
    return out


def _tidy(x: float) -> float:
    """``x`` rounded to 12 significant digits, so edges computed as ``t +- d`` meet the bin edges."""
    return float(f"{x:.{_SIGNIFICANT}g}")


def review_edges(
    score_edges: Iterable[float], thresholds: Iterable[float], near: Iterable[float] = DEFAULT_NEAR
) -> tuple[float, ...]:
    """The review bins' edges: the score's bin edges plus ``t - d``, ``t``, ``t + d`` for every
    decision threshold ``t`` and distance ``d``, so borderline predictions get strata of their own.

    Non-finite values are dropped; the extra edges are clipped to the span of the score edges and
    thresholds (a threshold at 0.99 adds no 1.04); edges are rounded to 12 significant digits,
    deduplicated and sorted."""
    base = [float(e) for e in score_edges]
    ts = [float(t) for t in thresholds]
    finite = [x for x in (*base, *ts) if math.isfinite(x)]
    if not finite:
        return ()
    lo, hi = min(finite), max(finite)
    extra = [t + s * float(d) for t in ts for d in near for s in (-1.0, 1.0)]
    clipped = [x for x in extra if math.isfinite(x) and lo <= x <= hi]
    return tuple(sorted({_tidy(x) for x in (*finite, *clipped)}))


@lru_cache(maxsize=256)
def stratum_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    """One ``ml_stratum`` value per bin, as right-closed intervals spelled like ``le``:
    ``(-Inf,0.1]``, ``(0.1,0.2]`` ... ``(0.9,+Inf)``, then ``none`` for calls without a score."""
    bounds = ("-Inf", *(format_le(e) for e in edges), "+Inf")
    labels = [f"({lo},{hi}]" for lo, hi in zip(bounds[:-1], bounds[1:])]
    labels[-1] = f"({bounds[-2]},+Inf)"
    return (*labels, NO_SCORE_STRATUM)


def stratum_index(edges: Sequence[float], score: object) -> int:
    """The bin of one score (``bisect_left``: right-closed, a score equal to an edge belongs to
    the bin it closes); ``len(edges) + 1``, the ``none`` stratum, for None, NaN or a non-number.
    Cheap enough for every single-row call (one bisect over a few dozen edges)."""
    try:
        value = float(score)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return len(edges) + 1
    if value != value:
        return len(edges) + 1
    return bisect.bisect_left(edges, value)


def stratum_indices(edges: npt.ArrayLike, scores: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """:func:`stratum_index` for a batch: ``searchsorted(side="left")``, NaN to the ``none`` stratum."""
    e = np.asarray(edges, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    out = np.searchsorted(e, s, side="left")
    out[np.isnan(s)] = e.size + 1
    return out


def near_threshold(
    edges: Sequence[float], thresholds: Iterable[float], near: Iterable[float] = DEFAULT_NEAR
) -> tuple[bool, ...]:
    """Which strata (one per label of :func:`stratum_labels`) touch a threshold and so get the
    larger daily quota: bin ``(lo, hi]`` is near ``t`` when it overlaps ``(t - w, t + w)``,
    ``w = max(near)``; with no distances, the two bins either side of ``t``. ``none`` never is."""
    width = max((float(d) for d in near), default=0.0)
    bounds = (-math.inf, *(float(e) for e in edges), math.inf)
    bands = [(_tidy(t - width), _tidy(t + width), float(t)) for t in thresholds if math.isfinite(float(t))]
    flags = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if width > 0:
            flags.append(any(lo < b_hi and hi > b_lo for b_lo, b_hi, _ in bands))
        else:
            flags.append(any(lo <= t <= hi for _, _, t in bands))
    return (*flags, False)


def _floor_scale(volumes: Sequence[float], quotas: Sequence[float], floor: float) -> float:
    """The factor ``c`` with ``sum_h min(N_h, c * k_h) = floor`` (water-filling over the strata
    of one segment: a stratum saturates at pi = 1 when ``c >= N_h / k_h``)."""
    order = sorted((n / k, n, k) for n, k in zip(volumes, quotas) if k > 0 and n > 0)
    saturated = 0.0  # reviews from strata already at pi = 1
    rest = sum(k for _, _, k in order)  # quota of strata not yet saturated
    for c_sat, n, k in order:
        if saturated + c_sat * rest >= floor:
            break
        saturated += n
        rest -= k
    return (floor - saturated) / rest if rest > 0 else math.inf


def _quota(
    key: K, quotas: Mapping[K, float] | None, near: Collection[K], quota: float, threshold_quota: float
) -> float:
    if quotas is not None and key in quotas:
        return quotas[key]
    return threshold_quota if key in near else quota


def neyman_quotas(
    volume: Mapping[K, float],
    reviewed: Mapping[K, float],
    errors: Mapping[K, float],
    budget: float,
    *,
    minimum: float = 2.0,
) -> dict[K, float]:
    """Daily quotas that spend ``budget`` reviews where they cut the estimate's variance most:
    Neyman allocation, ``k_h`` proportional to ``N_h sqrt(p_h (1 - p_h))``, each ``k_h`` between
    ``minimum`` (every stratum stays in view) and ``N_h``; the minimums win over a smaller budget.

    ``p_h = (e_h + 1/2) / (r_h + 1)`` from the previous window's reviews (``reviewed``,
    ``errors``; the Jeffreys prior's posterior mean): with 20 reviews and no error a stratum has
    not shown a zero error rate, and one without reviews gets 1/2, the most uncertain.

    Fixed quotas put reviews near the threshold whatever the errors do; where most errors sit
    in the big outer bins (a confident, calibrated model) they can be worse than simple random
    sampling, and this is the remedy."""
    keys = list(volume)
    ns = [max(float(volume[k]), 0.0) for k in keys]
    rates = [(max(float(errors.get(k, 0.0)), 0.0) + 0.5) / (max(float(reviewed.get(k, 0.0)), 0.0) + 1.0) for k in keys]
    weights = [n * math.sqrt(min(p, 1.0) * (1.0 - min(p, 1.0))) for n, p in zip(ns, rates)]
    floors = [min(n, minimum) for n in ns]

    def spent(c: float) -> float:
        return sum(min(n, max(m, c * w)) for n, m, w in zip(ns, floors, weights))

    lo, hi = 0.0, max((n / w for n, w in zip(ns, weights) if w > 0), default=0.0)  # at hi all are at N_h
    if budget <= spent(lo) or budget >= spent(hi):
        c = lo if budget <= spent(lo) else hi
    else:
        for _ in range(200):  # bisection: spent() is continuous and non-decreasing in c
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if spent(mid) < budget else (lo, mid)
        c = hi
    return {k: min(n, max(m, c * w)) for k, n, m, w in zip(keys, ns, floors, weights)}


def inclusion_probabilities(
    volume: Mapping[K, float],
    *,
    quota: float = 20.0,
    threshold_quota: float = 50.0,
    near: Collection[K] = (),
    segment_floor: float = 10.0,
    segment_of: Mapping[K, Hashable] | None = None,
    quotas: Mapping[K, float] | None = None,
) -> dict[K, float]:
    """``pi_h = min(1, k_h / N_h)`` per stratum: ``N_h`` its expected daily volume, ``k_h`` the
    daily quota (``threshold_quota`` for the strata in ``near``, where errors concentrate; a
    stratum in ``quotas``, e.g. from :func:`neyman_quotas`, takes its own).

    A segment (strata grouped by ``segment_of[key]``; without it all strata are one segment)
    whose expected reviews ``sum_h N_h pi_h`` fall below ``segment_floor`` has its quotas scaled
    up until they reach it (or every stratum is at pi = 1): rare segments still get reviewed.
    A stratum without volume gets pi = 1: it has nothing to flood with (what to use before any
    volume is known is the caller's choice of default)."""
    groups: dict[Hashable, list[K]] = {}
    for key in volume:
        groups.setdefault(None if segment_of is None else segment_of[key], []).append(key)
    out: dict[K, float] = {}
    for keys in groups.values():
        ns = [max(float(volume[k]), 0.0) for k in keys]
        ks = [max(float(_quota(k, quotas, near, quota, threshold_quota)), 0.0) for k in keys]
        expected = sum(min(n, k) for n, k in zip(ns, ks))
        scale = _floor_scale(ns, ks, segment_floor) if expected < segment_floor else 1.0
        for key, n, k in zip(keys, ns, ks):
            out[key] = 1.0 if n <= 0 else (min(1.0, scale * k / n) if k > 0 else 0.0)
    return out


def stratified_error_rate(
    population: npt.ArrayLike, reviewed: npt.ArrayLike, errors: npt.ArrayLike
) -> tuple[float, float]:
    """The stratified (post-stratified) error rate and its standard error, the numpy reference of
    the ``ml:review_error_rate`` recording rules: per stratum ``N_h`` predictions, ``r_h`` reviewed,
    ``e_h`` of them errors,

        p   = sum_h N_h e_h / r_h / sum_h N_h
        Var = sum_h (N_h / N)^2 p_h (1 - p_h) / r_h,   p_h = e_h / r_h

    Strata with ``r_h = 0`` are left out of both sums (and of ``N``): nothing is known about them,
    so the estimate covers the reviewed strata only. ``(nan, nan)`` when nothing is reviewed.
    A stratum whose reviews are all correct (or all errors) adds no variance: with few reviews
    the standard error is then too small, as with any plug-in estimate."""
    n = np.asarray(population, dtype=np.float64)
    r = np.asarray(reviewed, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    if not n.shape == r.shape == e.shape:
        raise ValueError(f"population, reviewed and errors differ in shape: {n.shape}, {r.shape}, {e.shape}")
    keep = r > 0
    total = float(n[keep].sum())
    if not keep.any() or total <= 0:
        return math.nan, math.nan
    w = n[keep] / total
    p_h = e[keep] / r[keep]
    p = float(np.sum(w * p_h))
    var = float(np.sum(w**2 * p_h * (1.0 - p_h) / r[keep]))
    return p, math.sqrt(var)
