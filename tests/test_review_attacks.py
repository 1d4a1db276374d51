"""Adversarial review of the evaluation loop: each test names the defect it demonstrates."""

from __future__ import annotations

import time
from pathlib import Path

from otel_ml import Baseline
from otel_ml import _token as tk
from otel_ml.sidecar._label_input import LabelEvent, parse_label_events
from otel_ml.sidecar._persist import load_state, save_state
from otel_ml.sidecar._series import Prediction
from otel_ml.sidecar._state import SidecarState, StateSettings

KEY = bytes(range(32))


def _state(baseline: Baseline, store: Path, **kw: object) -> SidecarState:
    return SidecarState([baseline], StateSettings(join_store=store, token_keys=(KEY,), **kw))  # type: ignore[arg-type]


def _token(baseline: Baseline, rid: str, minute: int | None = None) -> str:
    vocab = tk.TokenVocabulary.of(baseline)
    minute = int(time.time() // 60) if minute is None else minute
    return tk.encode_token(
        vocab, KEY, minute=minute, score=0.8, decision="true", segments={"country": "US"}, request_id=rid
    )


def _outcomes(state: SidecarState) -> float:
    return sum(v for inst, labels, v in _collect(state) if inst == "ml_outcomes_total")


def _collect(state: SidecarState) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client import CollectorRegistry

    from otel_ml.sidecar._collector import SidecarCollector

    registry = CollectorRegistry()
    registry.register(SidecarCollector(state))
    return [(s.name, s.labels, s.value) for fam in registry.collect() for s in fam.samples]


def test_a_token_is_counted_once_whatever_request_id_rides_along(baseline: Baseline, tmp_path: Path) -> None:
    """Token replay: the dedupe key must be the token's own request-id hash, not a request_id the
    poster adds beside it (else one genuine token counts as many labels as ids the poster invents)."""
    state = _state(baseline, tmp_path / "j.sqlite")
    token = _token(baseline, "req-1")
    body = (
        b"["
        + b",".join(f'{{"token": "{token}", "request_id": "forged-{i}", "label": true}}'.encode() for i in range(5))
        + b"]"
    )
    joined, unmatched = state.apply_labels(parse_label_events(body))
    assert (joined, unmatched) == (1, 4)
    assert state.unmatched_labels == {"duplicate": 4}


def test_rejected_token_labels_survive_a_kill_9(baseline: Baseline, tmp_path: Path) -> None:
    """A forged or malformed token is acknowledged (2xx) and counted live as unmatched; after a
    crash before the next snapshot the replay must count it again, like every other label."""
    store = tmp_path / "j.sqlite"
    live = _state(baseline, store)
    live.apply_labels([LabelEvent("true", token="AAAA" * 12), LabelEvent("true", request_id="nobody")])
    before = (dict(live.unmatched_labels), dict(live.labels_received))
    # kill -9: no snapshot, the store file is simply reopened
    restarted = _state(baseline, store)
    restarted.replay_labels()
    assert (restarted.unmatched_labels, restarted.labels_received) == before


def test_a_new_join_store_under_an_old_snapshot_loses_no_acknowledged_label(baseline: Baseline, tmp_path: Path) -> None:
    """The snapshot's label_seq belongs to the store it was saved with. If the store file is
    replaced (moved aside as corrupt, deleted, path changed), the new store numbers its log from 1
    again; labels it acknowledged after the next snapshot must still be replayed after kill -9."""
    state_file, store = tmp_path / "state.npz", tmp_path / "j.sqlite"
    first = _state(baseline, store)
    first.apply_labels([LabelEvent("true", request_id=f"x-{i}") for i in range(50)])
    save_state(first, state_file, first.clock())
    first.joins.store.close()
    store.unlink()  # the operator moves the store away
    second = _state(baseline, store)
    load_state(second, state_file)
    second.replay_labels()
    second.add_predictions([Prediction("r-1", "fraud", "v3", 0.9, "true", (("country", "US"),), time.time())])
    save_state(second, state_file, second.clock())
    assert second.apply_labels([LabelEvent("true", request_id="r-1")]) == (1, 0)
    want = _outcomes(second)
    # kill -9 now: restart from the snapshot and the store's log
    third = _state(baseline, store)
    load_state(third, state_file)
    third.replay_labels()
    assert want > 0
    assert _outcomes(third) == want


def test_a_replacement_store_with_a_longer_log_is_counted_whole(baseline: Baseline, tmp_path: Path) -> None:
    """The snapshot names the store whose log it covered (``store_id``), so a store file put in
    place from elsewhere (a backup, another sidecar's) is counted whole even when its log is longer
    than the snapshot's ``label_seq``: comparing sequence numbers alone would skip its first labels."""
    state_file, store, other = tmp_path / "state.npz", tmp_path / "j.sqlite", tmp_path / "other.sqlite"
    first = _state(baseline, store)
    first.apply_labels([LabelEvent("true", request_id=f"x-{i}") for i in range(50)])
    save_state(first, state_file, first.clock())
    first.joins.store.close()
    elsewhere = _state(baseline, other)
    elsewhere.apply_labels([LabelEvent("true", request_id=f"y-{i}") for i in range(80)])
    elsewhere.joins.store.close()
    store.unlink()
    other.rename(store)
    restarted = _state(baseline, store)
    load_state(restarted, state_file)
    assert restarted.replay_labels() == 80
    assert restarted.unmatched_labels == {"unknown_request_id": 50 + 80}


def test_a_null_segment_column_is_a_4xx_not_a_500(baseline: Baseline, tmp_path: Path) -> None:
    import requests

    from otel_ml.sidecar import Sidecar, SidecarConfig

    config = SidecarConfig(baselines=(baseline.save(tmp_path / "b.json"),), listen=("127.0.0.1", 0))
    side = Sidecar(config).start()
    try:
        body = {"model": "fraud", "version": "v3", "request_ids": ["a", "b"], "segments": {"country": None}}
        response = requests.post(side.url + "/v1/predictions", json=body, timeout=10)
        assert response.status_code < 500, response.text
    finally:
        side.stop()


def test_label_sources_stay_within_the_budget_across_restarts(baseline: Baseline, tmp_path: Path) -> None:
    """``source`` is free text from the poster: bounded by the label budget. The budget must hold
    for the exported series, not per process lifetime (a restart must not admit a fresh budget)."""
    from otel_ml.sidecar._series import LimitSettings

    state_file, store = tmp_path / "state.npz", tmp_path / "j.sqlite"
    limits = LimitSettings(label_budget=5)
    seen: set[str] = set()
    for run in range(3):
        state = _state(baseline, store, limits=limits)
        load_state(state, state_file)
        state.replay_labels()
        state.apply_labels([LabelEvent("true", request_id="x", source=f"s{run}-{i}") for i in range(20)])
        save_state(state, state_file, state.clock())
        seen = {labels["ml_source"] for name, labels, _ in _collect(state) if name == "ml_labels_received_total"}
        state.joins.store.close()
    assert len(seen) <= 5 + 1, sorted(seen)  # the budget, plus __other__


def test_rules_equal_gauges_when_some_labelled_predictions_have_no_score(tmp_path: Path) -> None:
    """A prediction without a score (a span without ml.score, a token with NaN, an inline label
    without one) still counts in ml_outcomes_total; the accuracy rule must divide by the same
    count the sidecar does, or it differs from the gauge (and can exceed 1)."""
    from dataclasses import replace as dc_replace

    import test_evaluation_loop as tel

    baseline = tel.fit_loans(tel._data(20_000, seed=1))
    window = tel._data(2_000, seed=6)
    state = tel._state(baseline)
    predictions = tel._predictions(window, "r", tel.T0 + 10)
    predictions = [dc_replace(p, score=None) if i % 3 == 0 else p for i, p in enumerate(predictions)]
    state.add_predictions(predictions, now=tel.T0 + 10)
    state.apply_labels(tel._labels(window, "r", tel.T0 + 600), now=tel.T0 + 600)
    found = tel.gauges(state, tel.T0 + 700)
    accuracy = {k: v for k, v in found.items() if k[0] == "ml_online_accuracy"}
    assert accuracy
    tel._rules_agree({"sc1": tel.exposition(state)}, accuracy, tmp_path, minimum=1)


def test_rules_equal_gauges_for_a_segment_with_one_outcome_only(tmp_path: Path) -> None:
    """A segment whose labels are all negative (or all positive): every gauge the sidecar shows
    for it, the shipped rule shows with the same value (calibration error included)."""
    import test_evaluation_loop as tel

    baseline = tel.fit_loans(tel._data(20_000, seed=1))
    window = tel._data(2_000, seed=7)
    state = tel._state(baseline)
    state.add_predictions(tel._predictions(window, "r", tel.T0 + 10), now=tel.T0 + 10)
    events = tel._labels(window, "r", tel.T0 + 600)
    region = window["region"].to_numpy()
    events = [  # apac: only negatives; us: only positives
        LabelEvent(
            {"apac": "false", "us": "true"}.get(region[i], e.outcome), request_id=e.request_id, label_time=e.label_time
        )
        for i, e in enumerate(events)
    ]
    state.apply_labels(events, now=tel.T0 + 600)
    found = tel.gauges(state, tel.T0 + 700)
    picked = {
        k: v
        for k, v in found.items()
        if dict(k[1]).get("ml_segment") in ("apac", "us")
        and k[0].startswith("ml_online_")
        and k[0] != "ml_online_label_count"
    }
    assert any(k[0] == "ml_online_calibration_error" for k in picked)
    tel._rules_agree({"sc1": tel.exposition(state)}, picked, tmp_path, minimum=1)


def test_one_predictions_body_cannot_intern_unbounded_dims(baseline: Baseline, tmp_path: Path) -> None:
    """The store interns one dims id per distinct (model, version, decision, every segment pair)
    combination and never frees one. Each key and value is budgeted, but their combinations are
    not: 16 invented segment keys of 2 values each give 2**16 combinations from one request."""
    import json as _json

    from otel_ml.sidecar._label_input import parse_predictions

    state = _state(baseline, tmp_path / "j.sqlite")
    n = 1 << 16
    body = {
        "model": "fraud",
        "version": "v3",
        "request_ids": [f"r{i}" for i in range(n)],
        "segments": {f"k{b}": [str((i >> b) & 1) for i in range(n)] for b in range(16)},
    }
    state.add_predictions(parse_predictions(_json.dumps(body).encode(), 100_000))
    assert state.joins.store.dims_count < 10_000, state.joins.store.dims_count


def test_a_flood_of_junk_labels_does_not_evict_waiting_predictions(baseline: Baseline, tmp_path: Path) -> None:
    """The byte cap covers the whole file, label log included, and only a snapshot forgets the
    log. Labels for unknown request ids posted between two snapshots grow the file; the next
    predictions then find it above the cap and the sample shift rises for good (k never falls),
    evicting half of the real waiting predictions per step."""
    from otel_ml.sidecar._series import LimitSettings

    state = _state(baseline, tmp_path / "j.sqlite", limits=LimitSettings(join_max_bytes=2 << 20))
    now = time.time()
    state.add_predictions(
        [Prediction(f"real-{i}", "fraud", "v3", 0.5, "false", (), now) for i in range(2_000)], now=now
    )
    for chunk in range(20):
        state.apply_labels([LabelEvent("true", request_id=f"junk-{chunk}-{i}") for i in range(5_000)], now=now)
    state.add_predictions([Prediction("one-more", "fraud", "v3", 0.5, "false", (), now)], now=now)
    assert state.joins.store.sample_shift == 0
    assert state.joins.store.evicted["cap"] == 0


def test_a_token_label_counts_toward_its_cohorts_coverage(baseline: Baseline, tmp_path: Path) -> None:
    """A token label that reaches the sidecar holding its prediction joins the stored row (marks it
    labelled), so coverage counts it. (A token that reaches another pod's sidecar is counted there
    inline and cannot mark a row it does not hold: the README says so.)"""
    day = 86400.0
    t0 = (time.time() // day - 3) * day + 3600.0  # a whole UTC day that ended more than 1 day ago
    state = _state(baseline, tmp_path / "j.sqlite")
    state.add_predictions(
        [Prediction(f"r{i}", "fraud", "v3", 0.8, "true", (("country", "US"),), t0) for i in range(10)], now=t0
    )
    tokens = [_token(baseline, f"r{i}", minute=int(t0 // 60)) for i in range(10)]
    assert state.apply_labels([LabelEvent("true", token=t) for t in tokens], now=t0 + 60) == (10, 0)
    coverage = {k: v for k, v in state.joins.coverage(t0 + 2 * day).items() if k[2] == "1d" and k[3] == "__all__"}
    assert coverage == {("fraud", "v3", "1d", "__all__"): (10, 10)}


def test_export_predictions_with_a_missing_segment_value_is_accepted(baseline: Baseline, tmp_path: Path) -> None:
    """A batch job's segment column with a missing value (None or NaN, as pandas gives) is encoded
    by export_predictions as JSON null; the sidecar must take it (as the app counts it: missing),
    not refuse the whole chunk with a 400."""
    import otel_ml
    from otel_ml.sidecar import Sidecar, SidecarConfig

    config = SidecarConfig(baselines=(baseline.save(tmp_path / "b.json"),), listen=("127.0.0.1", 0))
    side = Sidecar(config).start()
    try:
        sent = otel_ml.export_predictions(
            side.url,
            model="fraud",
            version="v3",
            request_ids=["a", "b", "c"],
            scores=[0.1, 0.5, 0.9],
            segments={"country": ["US", None, float("nan")]},
        )
        assert sent == 3
    finally:
        side.stop()


def test_the_combination_budget_survives_a_restart(baseline: Baseline, tmp_path: Path) -> None:
    """A restarted sidecar counts the combinations its store already interned: no fresh budget."""
    from otel_ml.sidecar._series import LimitSettings

    limits = LimitSettings(max_segment_combinations=3)
    now = time.time()

    def offer(state: SidecarState, first: int) -> None:
        rows = [
            Prediction(f"r{first + i}", "fraud", "v3", 0.5, "false", (("country", f"c{first + i}"),), now)
            for i in range(3)
        ]
        state.add_predictions(rows, now=now)

    state = _state(baseline, tmp_path / "j.sqlite", limits=limits)
    offer(state, 0)
    assert state.joins.store.dims_count == 3
    state.joins.store.close()
    restarted = _state(baseline, tmp_path / "j.sqlite", limits=limits)
    offer(restarted, 3)  # three new countries: over the budget, stored without segments
    model = restarted.models[("fraud", "v3")]
    assert restarted.joins.store.dims_count == 4  # the three old ones and "no segments"
    assert model.overflow()["ml.segment.combinations"] == 3
