"""``otel_ml.skew.replay`` against independent computations: injected pipeline bugs are found on
exactly the rows and features they hit, decision flips equal an offline numpy recomputation, float
noise is no skew, bin changes match ``np.searchsorted`` on the baseline's edges; failure modes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import _skew_fixture as fx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_ml import _names as n
from otel_ml import fit_baseline
from otel_ml._capture_format import CaptureFormatError
from otel_ml._frame import canonical_label
from otel_ml.skew import DuplicateKeyError, SkewInputError, SkewReport, VersionSkew, replay
from otel_ml.skew._compare import column, compare_feature

N = 2000  # a multiple of 100: the unit bug hits exactly 3 %


@pytest.fixture(scope="module")
def raws() -> list[dict[str, Any]]:
    return fx.raw_rows(N)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory, raws: list[dict[str, Any]]) -> Path:
    d = tmp_path_factory.mktemp("capture")
    fx.write_capture(d, fx.served_rows(raws), per_file=700)
    return d


def _only(report: SkewReport) -> VersionSkew:
    (v,) = report.versions
    return v


def _nonmatching_ids(v: VersionSkew) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for w in v.worst:
        for name, _result, _s, _t in w.features:
            out.setdefault(name, set()).add(w.request_id)
    return out


def _offline(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """Served and buggy-replayed scores computed directly with numpy, without the replay code."""
    amount = np.array([r["amount_eur"] for r in raws])
    age = np.array([r["age"] for r in raws], dtype=float)
    country = np.array([r["country"] for r in raws])
    cents = np.array([r["customer_id"] % 100 < 3 for r in raws])
    served = fx.scores_of(amount, np.log1p(amount), age, country)
    bug_amount = np.where(cents, amount * 100.0, amount)
    bug_country = np.where(country == "NL", "BE", country)
    replayed = fx.scores_of(bug_amount, np.log1p(bug_amount), age, bug_country)
    return {"served": served, "replayed": replayed, "cents": cents, "nl": country == "NL", "country": country}


def test_injected_bugs_are_reported_on_exactly_their_rows_and_features(capture: Path, raws: list[Any]) -> None:
    v = _only(replay(capture, fx.build_features_buggy, fx.predict, skip_features=["request_hour"], worst=N))
    off = _offline(raws)
    ids = np.array([f"r{r['customer_id']}" for r in raws])
    assert off["cents"].sum() == 0.03 * N
    cents, nl = set(ids[off["cents"]]), set(ids[off["nl"]])
    assert v.feature("amount_eur").counts[n.SKEW_MISMATCH] == len(cents)
    assert v.feature("log_amount").counts[n.SKEW_MISMATCH] == len(cents)
    assert v.feature("country").counts[n.SKEW_MISMATCH] == len(nl)
    assert v.feature("age").counts[n.SKEW_MATCH] == N
    for f in v.features:
        assert f.compared == N
        assert f.counts[n.SKEW_MISMATCH] + f.counts[n.SKEW_MATCH] == N  # nothing missing, no baseline
    found = _nonmatching_ids(v)
    assert found == {"amount_eur": cents, "log_amount": cents, "country": nl}
    assert v.rows_with_mismatch == len(cents | nl)
    assert v.skipped_features == ("request_hour",)
    assert [f.name for f in v.features] == ["amount_eur", "log_amount", "age", "country"]  # header order


def test_decision_flips_equal_an_offline_recomputation(capture: Path, raws: list[Any]) -> None:
    v = _only(replay(capture, fx.build_features_buggy, fx.predict, skip_features=["request_hour"]))
    off = _offline(raws)
    served, replayed = off["served"] > fx.THRESHOLD, off["replayed"] > fx.THRESHOLD
    flipped = served != replayed
    south = np.isin(off["country"], ["ES", "IT"])
    assert flipped.sum() > 20  # the bugs matter
    assert v.flips_total == flipped.sum() and v.rows == N
    by = {(f.key, f.segment): f for f in v.flips}
    assert by[(n.ALL, n.ALL)].flips == {
        k: int(c)
        for k, c in {
            "true_to_false": (served & ~replayed).sum(),
            "false_to_true": (~served & replayed).sum(),
        }.items()
        if c
    }
    for segment, mask in (("south", south), ("north", ~south)):
        assert by[("region", segment)].rows == mask.sum()
        assert by[("region", segment)].total == (flipped & mask).sum()
        assert by[("region", segment)].flips.get("true_to_false", 0) == (served & ~replayed & mask).sum()
    delta = off["replayed"] - off["served"]
    d = v.score_difference
    assert d.count == N and d.max_abs == pytest.approx(np.abs(delta).max(), abs=1e-12)
    assert d.p99_abs == pytest.approx(np.quantile(np.abs(delta), 0.99), abs=1e-12)
    for bound, cumulative in zip(n.SHADOW_DIFFERENCE_BUCKETS, d.bucket_counts):
        assert cumulative == np.count_nonzero(delta <= bound), bound
    top = np.argsort(-np.abs(delta), kind="stable")[:10]
    assert {w.request_id for w in v.worst} == {f"r{raws[i]['customer_id']}" for i in top}


def test_predict_proba_scores_are_column_one(capture: Path) -> None:
    a = _only(replay(capture, fx.build_features_buggy, fx.predict, skip_features=["request_hour"]))
    b = _only(replay(capture, fx.build_features_buggy, fx.predict_proba, skip_features=["request_hour"]))
    assert a.flips_total == b.flips_total and a.score_difference == b.score_difference


def test_float_noise_is_no_skew_at_default_tolerances(capture: Path) -> None:
    v = _only(replay(capture, fx.build_features_noisy, fx.predict, skip_features=["request_hour"]))
    assert all(f.counts[n.SKEW_MATCH] == N for f in v.features)
    assert v.rows_with_mismatch == 0
    exact = _only(
        replay(capture, fx.build_features_noisy, fx.predict, rtol=0.0, atol=0.0, skip_features=["request_hour"])
    )
    assert exact.feature("log_amount").counts[n.SKEW_MISMATCH] == N  # the check can fail
    assert exact.feature("country").counts[n.SKEW_MATCH] == N


def test_a_baseline_turns_differences_across_bins_into_bin_change(capture: Path, raws: list[Any]) -> None:
    training = [fx.build_features(r) for r in fx.raw_rows(5000, seed=1)]
    frame = {k: [row[k] for row in training] for k in ("amount_eur", "log_amount", "age", "country")}
    baseline = fit_baseline(frame, model="fraud", version="v3", categorical=["country"])
    v = _only(replay(capture, fx.build_features_buggy, fx.predict, baseline=baseline, skip_features=["request_hour"]))
    off = _offline(raws)
    amount = np.array([r["amount_eur"] for r in raws])[off["cents"]]
    for name, served, trained in (
        ("amount_eur", amount, amount * 100.0),
        ("log_amount", np.log1p(amount), np.log1p(amount * 100.0)),
    ):
        edges = baseline.feature(name).edges_array()  # type: ignore[union-attr]
        crossed = np.searchsorted(edges, served, side="left") != np.searchsorted(edges, trained, side="left")
        assert 0 < crossed.sum() <= crossed.size
        assert v.feature(name).counts[n.SKEW_BIN_CHANGE] == crossed.sum()
        assert v.feature(name).counts[n.SKEW_MISMATCH] == (~crossed).sum()
    country = baseline.feature("country")
    assert "NL" in country.vocabulary and "BE" not in country.vocabulary  # type: ignore[union-attr]
    assert v.feature("country").counts[n.SKEW_BIN_CHANGE] == off["nl"].sum()  # NL -> __other__


def test_a_category_within_one_bucket_is_a_mismatch_not_a_bin_change(tmp_path: Path) -> None:
    raws = fx.raw_rows(300)
    fx.write_capture(tmp_path, fx.served_rows(raws))
    frame = {"country": ["DE"] * 50 + ["FR"] * 50 + [f"rare{i}" for i in range(3)]}
    baseline = fit_baseline(frame, model="fraud", version="v3", categorical=["country"], top_k=2)

    def pipe(raw: dict[str, Any]) -> dict[str, Any]:  # ES -> IT: both outside the vocabulary
        out = fx.build_features(raw)
        out["country"] = {"ES": "IT", "DE": "FR"}.get(out["country"], out["country"])
        return out

    v = _only(replay(tmp_path, pipe, fx.predict, baseline=baseline))
    countries = np.array([r["country"] for r in raws])
    assert v.feature("country").counts[n.SKEW_MISMATCH] == (countries == "ES").sum()
    assert v.feature("country").counts[n.SKEW_BIN_CHANGE] == (countries == "DE").sum()


# -- failure modes ----------------------------------------------------------------------------------
def test_a_pipeline_that_raises_on_some_rows_is_counted_and_the_rest_compared(capture: Path, raws: list[Any]) -> None:
    v = _only(replay(capture, fx.build_features_fragile, fx.predict))
    bad = {f"r{r['customer_id']}" for r in raws if r["customer_id"] % 50 == 7}
    assert v.errors == {"pipeline": len(bad), "model": 0, "record": 0}
    assert {rid for stage, rid, _ in v.error_examples if stage == "pipeline"} <= bad
    assert all("KeyError" in why for _, _, why in v.error_examples)
    assert v.rows_read == N and v.rows_compared == v.rows == N - len(bad)
    assert v.rows_with_mismatch == 0 and v.flips_total == 0


def test_a_model_that_raises_on_one_row_of_a_chunk_costs_that_row_only(capture: Path, raws: list[Any]) -> None:
    v = _only(replay(capture, fx.build_features, fx.predict_fragile, chunk_rows=256))
    bad = {f"r{r['customer_id']}" for r in raws if r["age"] == 77}
    assert 0 < len(bad) < 100
    assert v.errors["model"] == len(bad) and v.rows == N - len(bad) and v.rows_compared == N
    assert {rid for stage, rid, _ in v.error_examples if stage == "model"} <= bad
    assert v.score_difference.count == N - len(bad) and v.score_difference.max_abs == 0.0
    assert v.flips[0].rows == N - len(bad) and v.flips_total == 0


def test_duplicate_ids_fail_loudly_naming_them_unless_allowed(tmp_path: Path, raws: list[Any]) -> None:
    rows = fx.served_rows(raws[:100])
    fx.write_capture(tmp_path, rows, seq=1)
    again = [dict(r, features={**r["features"], "age": -1}) for r in rows[10:17]]  # differ: must not be used
    fx.write_capture(tmp_path, again, seq=2)
    with pytest.raises(DuplicateKeyError) as err:
        replay(tmp_path, fx.build_features, fx.predict)
    assert "7 rows" in str(err.value)
    for rid in ("r10", "r11", "r12", "r13", "r14"):
        assert f"'{rid}'" in str(err.value)
    assert "'r15'" not in str(err.value)  # the first five are named
    report = replay(tmp_path, fx.build_features, fx.predict, allow_duplicates=True)
    assert report.duplicates == 7 and report.duplicate_ids == ("r10", "r11", "r12", "r13", "r14")
    v = _only(report)
    assert v.rows == 100 and v.feature("age").counts[n.SKEW_MATCH] == 100  # the first occurrence kept


def test_a_key_inside_the_raw_request(tmp_path: Path, raws: list[Any]) -> None:
    rows = fx.served_rows(raws[:50]) + fx.served_rows(raws[:5], prefix="other-")
    fx.write_capture(tmp_path, rows)
    assert _only(replay(tmp_path, fx.build_features, fx.predict)).rows == 55  # request ids differ
    with pytest.raises(DuplicateKeyError, match="'0', '1', '2', '3', '4'"):
        replay(tmp_path, fx.build_features, fx.predict, key="customer_id")


def test_a_corrupt_line_is_counted_and_the_replay_goes_on(tmp_path: Path, raws: list[Any]) -> None:
    (path,) = fx.write_capture(tmp_path, fx.served_rows(raws[:100]), extra_lines=[b'{"request_id": \n', b"[1, 2]\n"])
    report = replay(tmp_path, fx.build_features, fx.predict)
    v = _only(report)
    assert v.errors["record"] == 2 and v.rows == 100
    assert [(f, line) for f, line, _ in report.unreadable] == [(path.name, 102), (path.name, 103)]


def test_a_file_with_a_bad_header_is_named(tmp_path: Path, raws: list[Any]) -> None:
    fx.write_capture(tmp_path, fx.served_rows(raws[:10]), seq=1)
    (bad,) = fx.write_capture(tmp_path, fx.served_rows(raws[10:20]), seq=2)
    bad.write_bytes(b'{"not": "a header"}\n' + bad.read_bytes().split(b"\n", 1)[1])
    with pytest.raises(CaptureFormatError, match=bad.name):
        replay(tmp_path, fx.build_features, fx.predict)


def test_an_empty_or_missing_capture_directory_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(SkewInputError, match="no finished capture files"):
        replay(tmp_path, fx.build_features, fx.predict)
    with pytest.raises(FileNotFoundError):
        replay(tmp_path / "nope", fx.build_features, fx.predict)


def test_missing_on_either_side(tmp_path: Path, raws: list[Any]) -> None:
    rows = fx.served_rows(raws[:400])
    for i, r in enumerate(rows):
        if i % 10 == 0:
            r["features"]["age"] = None  # serving lost the value
        if i % 25 == 0:
            del r["features"]["country"]  # absent is missing too
        if i % 40 == 0:
            r["features"]["log_amount"] = math.nan

    def pipe(raw: dict[str, Any]) -> dict[str, Any]:
        out = fx.build_features(raw)
        if raw["customer_id"] % 8 == 0:
            del out["age"]  # the training pipeline has none
        if raw["customer_id"] % 40 == 0:
            out["log_amount"] = None  # both missing: a match
        return out

    fx.write_capture(tmp_path, rows)
    v = _only(replay(tmp_path, pipe, fx.predict))
    i = np.arange(400)
    serving_missing, training_missing = i % 10 == 0, i % 8 == 0
    age = v.feature("age").counts
    assert age[n.SKEW_MISSING_SERVING] == (serving_missing & ~training_missing).sum()
    assert age[n.SKEW_MISSING_TRAINING] == (~serving_missing & training_missing).sum()
    assert age[n.SKEW_MATCH] == 400 - age[n.SKEW_MISSING_SERVING] - age[n.SKEW_MISSING_TRAINING]
    assert v.feature("country").counts[n.SKEW_MISSING_SERVING] == (i % 25 == 0).sum()
    assert v.feature("log_amount").counts[n.SKEW_MATCH] == 400


def test_no_decision_rule_means_no_flips_and_says_so(tmp_path: Path, raws: list[Any]) -> None:
    fx.write_capture(tmp_path, fx.served_rows(raws[:50]), threshold=None)
    report = replay(tmp_path, fx.build_features_buggy, fx.predict)
    v = _only(report)
    assert v.decision_rule is None and v.flips_total is None and v.flip_ratio is None
    assert any("flips not computed" in note for note in report.notes)
    ruled = _only(replay(tmp_path, fx.build_features_buggy, fx.predict, threshold=0.5))
    assert ruled.flips_total is not None
    by_fn = _only(replay(tmp_path, fx.build_features_buggy, fx.predict, decision=lambda s: s > 0.5))
    assert by_fn.flips_total == ruled.flips_total


def test_model_and_version_filter_and_one_report_per_version(tmp_path: Path, raws: list[Any]) -> None:
    fx.write_capture(tmp_path, fx.served_rows(raws[:30], prefix="a"), version="v3", seq=1)
    fx.write_capture(tmp_path, fx.served_rows(raws[:20], prefix="b"), version="v4", seq=2)
    both = replay(tmp_path, fx.build_features, fx.predict)
    assert [(v.version, v.rows) for v in both.versions] == [("v3", 30), ("v4", 20)]
    only = replay(tmp_path, fx.build_features, fx.predict, version="v4")
    assert [(v.version, v.rows) for v in only.versions] == [("v4", 20)]
    with pytest.raises(SkewInputError, match="no rows for v5"):
        replay(tmp_path, fx.build_features, fx.predict, version="v5")


# -- the vectorized comparison against a per-value reference --------------------------------------
_VALUES = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.sampled_from(["a", "b", "01234", "1234", "1", "1.0", "true", "TRUE", "NL", ""]),
)


def _reference(a: Any, b: Any, rtol: float, atol: float) -> str:
    """The contract's rule for one pair, written value by value."""

    def missing(v: Any) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if missing(a) or missing(b):
        return (
            n.SKEW_MATCH
            if missing(a) and missing(b)
            else (n.SKEW_MISSING_SERVING if missing(a) else n.SKEW_MISSING_TRAINING)
        )
    if number(a) and number(b):
        if math.isinf(a) or math.isinf(b):  # numpy.isclose: an infinity is close to itself only
            return n.SKEW_MATCH if a == b else n.SKEW_MISMATCH
        return n.SKEW_MATCH if abs(a - b) <= atol + rtol * abs(b) else n.SKEW_MISMATCH
    return n.SKEW_MATCH if canonical_label(a) == canonical_label(b) else n.SKEW_MISMATCH


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_VALUES, _VALUES), min_size=1, max_size=40),
    st.sampled_from([(1e-6, 1e-9), (0.0, 0.0), (0.1, 0.5)]),
)
def test_compare_feature_equals_the_per_value_rule(
    pairs: list[tuple[Any, Any]], tolerances: tuple[float, float]
) -> None:
    rtol, atol = tolerances
    served, trained = [a for a, _ in pairs], [b for _, b in pairs]
    codes = compare_feature(column(served), column(trained), rtol=rtol, atol=atol)
    assert [n.SKEW_RESULTS[c] for c in codes] == [_reference(a, b, rtol, atol) for a, b in pairs]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60), st.floats(-1e-3, 1e-3))
def test_numeric_columns_take_the_numpy_path_with_isclose_semantics(values: list[float], eps: float) -> None:
    moved = [v * (1 + eps) for v in values]
    a, b = column(values), column(moved)
    assert a.objects is None and b.objects is None  # plain floats: no per-value classification
    codes = compare_feature(a, b, rtol=1e-6, atol=1e-9)
    expected = np.isclose(np.array(values), np.array(moved), rtol=1e-6, atol=1e-9)
    assert ((codes == 0) == expected).all()


def test_a_zip_code_that_lost_its_leading_zero_is_a_mismatch() -> None:
    codes = compare_feature(column(["01234", "5678"]), column([1234, "5678"]), rtol=1e-6, atol=1e-9)
    assert [n.SKEW_RESULTS[c] for c in codes] == [n.SKEW_MISMATCH, n.SKEW_MATCH]
    booleans = compare_feature(column([True, 1.0, 0.5]), column([1, 1, 0.5]), rtol=1e-6, atol=1e-9)
    assert [n.SKEW_RESULTS[c] for c in booleans] == [n.SKEW_MISMATCH, n.SKEW_MATCH, n.SKEW_MATCH]


def test_segment_values_beyond_the_budget_fold_into_other(tmp_path: Path) -> None:
    rows = fx.served_rows(fx.raw_rows(200))
    for i, r in enumerate(rows):
        r["segments"] = {"region": f"shop-{i % 80}"}
    fx.write_capture(tmp_path, rows)
    v = _only(replay(tmp_path, fx.build_features, fx.predict))
    regions = [f for f in v.flips if f.key == "region"]
    assert len(regions) == 51 and regions[-1].segment == n.OTHER
    assert sum(f.rows for f in regions) == 200
    assert regions[-1].rows == sum(1 for i in range(200) if i % 80 >= 50)


def test_a_pipeline_with_as_of_gets_each_rows_capture_time(tmp_path: Path) -> None:
    """Time travel: a feature looked up "now" differs from the one served; as of the row's time it does not."""
    raws = fx.raw_rows(50, seed=11)
    rows = fx.served_rows(raws)
    fx.write_capture(tmp_path, rows)
    seen: dict[str, float] = {}

    def as_of_pipeline(raw: Any, as_of: float | None = None) -> dict[str, Any]:
        assert as_of is not None
        seen[f"r{raw['customer_id']}"] = as_of
        return fx.build_features(raw)

    report = replay(tmp_path, as_of_pipeline, fx.predict)
    assert seen == {row["request_id"]: row["time"] for row in rows}
    assert report.versions[0].rows == 50


def test_a_capture_written_by_monitor_replays_to_exactly_the_injected_bugs(tmp_path: Path, raws: list[Any]) -> None:
    """The whole path: @monitor(capture=...) serves through the training pipeline and writes the spool;
    the replay through the copy with bugs finds exactly those rows and the offline flips."""
    from prometheus_client import CollectorRegistry

    from otel_ml import Capture, ModelMonitor, raw_request

    mon = ModelMonitor(
        "fraud",
        "v3",
        segments=["region"],
        decision=fx.THRESHOLD,
        request_id=lambda row: f"r{row['customer_id']}",
        feature_names=list(fx.FEATURES),
        capture=Capture(tmp_path, rate=1.0, file_bytes=64 * 1024, tags={"pipeline": "features-1.4"}),
        registry=CollectorRegistry(),
    )

    @mon
    def serve(features: dict[str, Any]) -> float:
        return float(fx.predict({k: [v] for k, v in features.items()})[0])

    for raw in raws:
        with raw_request(raw):
            serve({**fx.build_features(raw), "customer_id": raw["customer_id"], "region": fx.region(raw)})
    mon.close()
    v = _only(replay(tmp_path, fx.build_features_buggy, fx.predict, skip_features=["request_hour"], worst=N))
    off = _offline(raws)
    ids = np.array([f"r{r['customer_id']}" for r in raws])
    cents, nl = set(ids[off["cents"]]), set(ids[off["nl"]])
    assert _nonmatching_ids(v) == {"amount_eur": cents, "log_amount": cents, "country": nl}
    assert v.feature("age").counts[n.SKEW_MATCH] == N
    flipped = (off["served"] > fx.THRESHOLD) != (off["replayed"] > fx.THRESHOLD)
    assert v.rows == N and v.flips_total == flipped.sum() > 20
    assert v.tags == {"pipeline": "features-1.4"}
