"""The demo's page attribution: right alert with the right labels, after the right fault."""

from __future__ import annotations

from typing import Any

from otel_ml.demo._faults import FAULTS
from otel_ml.demo._verdict import PageLedger


def alert(name: str, status: str = "firing", starts: str = "t0", **labels: str) -> dict[str, Any]:
    all_labels = {"alertname": name, "ml_model_name": "risk", "ml_model_version": "v1", **labels}
    return {
        "fingerprint": "|".join(f"{k}={v}" for k, v in sorted(all_labels.items())),
        "startsAt": starts,
        "status": status,
        "labels": all_labels,
        "annotations": {"summary": f"{name} summary"},
    }


DRIFT_RADIUS = alert("MLFeatureDrift", ml_feature="mean_radius")
UNKNOWN_REGION = alert("MLUnknownCategorySurge", ml_feature="region")
EU = alert("MLSegmentDecisionRateChange", ml_segment_key="region", ml_segment="EU", ml_decision="true")


def test_each_fault_passes_on_its_page_and_earlier_pages_are_carried_over() -> None:
    ledger = PageLedger(FAULTS)
    ledger.inject(1, 40.0)
    ledger.update([DRIFT_RADIUS], 65.0)
    ledger.inject(2, 80.0)
    ledger.update([DRIFT_RADIUS, UNKNOWN_REGION], 101.0)  # Alertmanager re-sends firing alerts
    ledger.inject(3, 120.0)
    assert not ledger.paged(3)
    ledger.update([EU], 150.0)
    assert ledger.paged(3) and ledger.paged(1)
    assert len(ledger.deliveries) == 3
    drift, unknown, eu = ledger.deliveries.values()
    assert ledger.explain(drift, phase=1) == "expected (fault 1)"
    assert ledger.explain(drift, phase=2) == "carried over from fault 1"
    assert ledger.explain(unknown) == "carried over from fault 2"
    assert ledger.explain(eu) == "expected (fault 3)"
    verdicts = ledger.verdicts()
    assert [v.passed for v in verdicts] == [True, True, True]
    assert verdicts[0].lines == ('MLFeatureDrift{ml_feature="mean_radius"} paged 25s after the fault',)
    assert ledger.surprises() == []


def test_wrong_labels_or_clean_traffic_pages_are_surprises_and_fail_the_fault() -> None:
    ledger = PageLedger(FAULTS)
    ledger.update([alert("MLFeatureDrift", ml_feature="mean_texture")], 10.0)  # clean phase
    ledger.inject(1, 40.0)
    ledger.update([alert("MLFeatureDrift", starts="t1", ml_feature="worst_area")], 60.0)  # not fault 1's feature
    ledger.update([alert("MLScoreDistributionShift")], 62.0)  # a side effect of fault 1: explained
    clean, wrong, score = ledger.deliveries.values()
    assert ledger.explain(clean) == "UNEXPECTED: during clean traffic"
    assert ledger.explain(wrong) == "UNEXPECTED"
    assert ledger.explain(score) == "side effect of fault 1"
    assert ledger.surprises() == [clean, wrong]
    first = ledger.verdicts()[0]
    assert not first.passed and first.lines == ('MLFeatureDrift{ml_feature="mean_radius"} never paged',)
    assert ledger.verdicts()[1].lines == ("not injected (demo stopped early)",)


def test_a_page_already_firing_before_its_fault_does_not_count_for_it() -> None:
    ledger = PageLedger(FAULTS)
    ledger.inject(1, 40.0)
    ledger.update([DRIFT_RADIUS, alert("MLSegmentDecisionRateChange", ml_segment_key="region", ml_segment="EU")], 70)
    ledger.inject(2, 80.0)
    ledger.inject(3, 120.0)
    eu = list(ledger.deliveries.values())[1]
    assert ledger.explain(eu, phase=1) == "side effect of fault 1"
    apac = alert("MLSegmentDecisionRateChange", ml_segment_key="region", ml_segment="APAC")
    ledger.update([apac], 125.0)  # fault 1's effect (scores rose everywhere), arriving during fault 3
    assert ledger.explain(list(ledger.deliveries.values())[2]) == "side effect of fault 1, still active"
    third = ledger.verdicts()[2]
    assert not third.passed
    assert "already firing since phase 1" in third.lines[0]


def test_status_follows_the_latest_notification_and_a_refire_is_a_new_page() -> None:
    ledger = PageLedger(FAULTS)
    ledger.inject(1, 40.0)
    ledger.update([DRIFT_RADIUS], 60.0)
    ledger.update([alert("MLFeatureDrift", status="resolved", ml_feature="mean_radius")], 90.0)
    assert [d.status for d in ledger.deliveries.values()] == ["resolved"]
    ledger.update([alert("MLFeatureDrift", starts="t2", ml_feature="mean_radius")], 95.0)
    assert [d.status for d in ledger.deliveries.values()] == ["resolved", "firing"]
