"""``@monitor``: what each input shape counts, what the span carries, what the exposition says.

Expected counts come from pandas (``value_counts``, ``groupby``, ``<=`` comparisons against the
bucket bounds), never from otel-ml's own binning.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import client_le, sample_value
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_ml import Baseline, ModelMonitor, current_request_id, mark_fallback, monitor
from otel_ml import _names as n

MODEL = {"ml_model_name": "fraud", "ml_model_version": "v3"}


@pytest.fixture(autouse=True)
def no_instrumentation_errors(registry: CollectorRegistry) -> Any:
    """Every test here must run without otel-ml failing internally (those are counted, not raised)."""
    yield
    errors = [s for fam in registry.collect() for s in fam.samples if s.name == "ml_instrumentation_errors_total"]
    assert errors == []


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sample's value; a missing series fails instead of reading as zero."""
    return sample_value(registry, name, {**MODEL, **labels})


def features_of(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["score"])


def constant_model(score: float = 0.9) -> Any:
    def predict(features: Any) -> Any:
        if isinstance(features, dict):
            return score
        return np.full(len(features), score)

    return predict


class TestBatch:
    def test_numeric_buckets_match_pandas(
        self, baseline: Baseline, training_frame: pd.DataFrame, registry: CollectorRegistry
    ) -> None:
        frame = features_of(training_frame.head(3000)).copy()
        frame.loc[:9, "balance_z"] = np.nan  # ten missing values
        predict = monitor(baseline=baseline, registry=registry)(constant_model())
        predict(frame)
        for f in baseline.numeric:
            col = frame[f.name]
            for edge, le in zip(f.edges, client_le(f.edges)):  # exponent spellings (1e-05, 1.234567e+06) too
                assert sample(registry, "ml_feature_value_bucket", ml_feature=f.name, le=le) == (col <= edge).sum()
            assert sample(registry, "ml_feature_value_bucket", ml_feature=f.name, le="+Inf") == col.notna().sum()
            total = registry.get_sample_value("ml_feature_value_sum", {**MODEL, "ml_feature": f.name})
            if f.edges[0] < 0:  # OpenMetrics: no _sum/_count when buckets can hold negative values
                assert total is None
            else:
                assert total == pytest.approx(col.sum())
            assert sample(registry, "ml_feature_missing_total", ml_feature=f.name) == col.isna().sum()
        assert sample(registry, "ml_feature_missing_total", ml_feature="balance_z") == 10

    def test_categories_and_unknown_values(
        self, baseline: Baseline, training_frame: pd.DataFrame, registry: CollectorRegistry
    ) -> None:
        frame = features_of(training_frame.head(1000)).copy()
        frame.loc[:99, "country"] = "United States"  # the upstream rename
        frame.loc[100:104, "country"] = None
        predict = monitor(baseline=baseline, registry=registry)(constant_model())
        predict(frame)
        counts = frame["country"].value_counts()
        for country in ("US", "DE", "FR", "BR", "JP"):
            assert (
                sample(registry, "ml_feature_category_total", ml_feature="country", ml_category=country)
                == counts[country]
            )
        assert sample(registry, "ml_feature_category_total", ml_feature="country", ml_category="__unknown__") == 100
        assert sample(registry, "ml_feature_missing_total", ml_feature="country") == 5

    def test_predictions_per_segment_and_decision(
        self, baseline: Baseline, training_frame: pd.DataFrame, registry: CollectorRegistry
    ) -> None:
        frame = training_frame.head(2000)
        predict = monitor(
            baseline=baseline, segments=["country", "device"], decision=lambda s: s > 0.7, registry=registry
        )(lambda f: frame["score"].to_numpy())
        predict(features_of(frame))
        approved = (frame["score"] > 0.7).map({True: "true", False: "false"})
        for key in ("country", "device"):
            table = pd.crosstab(frame[key], approved)
            for segment, row in table.iterrows():
                for decision, count in row.items():
                    assert (
                        sample(
                            registry,
                            "ml_predictions_total",
                            ml_segment_key=key,
                            ml_segment=segment,
                            ml_decision=decision,
                        )
                        == count
                    )
        assert (
            sample(registry, "ml_predictions_total", ml_segment_key="__all__", ml_segment="__all__", ml_decision="true")
            == (frame["score"] > 0.7).sum()
        )
        # the score histogram, bucketed by the baseline's score edges
        assert baseline.score is not None
        first = baseline.score.edges[0]
        assert sample(registry, "ml_prediction_score_bucket", le=repr(first)) == (frame["score"] <= first).sum()
        assert sample(registry, "ml_prediction_score_count") == len(frame)

    def test_every_input_shape_counts_the_same(self, baseline: Baseline, training_frame: pd.DataFrame) -> None:
        frame = features_of(training_frame.head(200))
        numeric_names = [f.name for f in baseline.numeric]
        shapes = {
            "dataframe": frame,
            "records": frame.to_dict("records"),
            "columns": {k: frame[k].to_numpy() for k in frame.columns},
            "array": frame[numeric_names].to_numpy(),
            "rows": None,
        }
        snapshots = {}
        for label, data in shapes.items():
            registry = CollectorRegistry()
            mon = ModelMonitor(
                baseline=baseline, registry=registry, feature_names=numeric_names if label == "array" else None
            )
            predict = mon(constant_model())
            if data is None:
                for row in frame.to_dict("records"):
                    predict(row)
            else:
                predict(data)
            snap = mon.counters.snapshot()
            snapshots[label] = (np.concatenate(snap.numeric_bins), snap.numeric_sums)
        reference = snapshots["dataframe"]
        for label, (bins, sums) in snapshots.items():
            np.testing.assert_array_equal(bins, reference[0], err_msg=label)
            np.testing.assert_allclose(sums, reference[1], err_msg=label)


class TestSingleRow:
    def test_row_counts(self, baseline: Baseline, registry: CollectorRegistry) -> None:
        predict = monitor(baseline=baseline, segments=["country"], decision=0.7, registry=registry)(
            constant_model(0.95)
        )
        row = {"amount": 12.5, "balance_z": -3.0, "n_items": None, "country": "Atlantis", "device": "ios"}
        assert predict(row) == 0.95
        edges = baseline.feature("balance_z").edges  # type: ignore[union-attr]
        assert (
            sample(registry, "ml_feature_value_bucket", ml_feature="balance_z", le=repr(edges[0])) == 1
        )  # -3 <= first
        assert sample(registry, "ml_feature_value_bucket", ml_feature="balance_z", le="+Inf") == 1
        assert sample(registry, "ml_feature_missing_total", ml_feature="n_items") == 1
        assert sample(registry, "ml_feature_category_total", ml_feature="country", ml_category="__unknown__") == 1
        assert (
            sample(
                registry, "ml_predictions_total", ml_segment_key="country", ml_segment="Atlantis", ml_decision="true"
            )
            == 1
        )
        assert sample(registry, "ml_prediction_duration_seconds_count") == 1

    def test_row_with_garbage_values(self, baseline: Baseline, registry: CollectorRegistry) -> None:
        predict = monitor(baseline=baseline, registry=registry)(constant_model())
        predict({"amount": "not a number", "balance_z": float("inf"), "country": 42})
        assert sample(registry, "ml_feature_missing_total", ml_feature="amount") == 1
        assert sample(registry, "ml_feature_missing_total", ml_feature="balance_z") == 1
        assert sample(registry, "ml_feature_missing_total", ml_feature="n_items") == 1  # absent key
        assert sample(registry, "ml_feature_category_total", ml_feature="country", ml_category="__unknown__") == 1


class TestSpans:
    def test_span_attributes(self, baseline: Baseline, registry: CollectorRegistry, spans: Any) -> None:
        provider, exporter = spans
        seen: list[str | None] = []

        @monitor(baseline=baseline, segments=["country"], decision=0.7, tracer_provider=provider, registry=registry)
        def predict(features: dict[str, Any]) -> float:
            seen.append(current_request_id())
            return 0.8

        predict({"amount": 3.0, "balance_z": 0.1, "n_items": 1, "country": "DE", "device": "web"})
        (span,) = exporter.get_finished_spans()
        assert span.name == "ml.predict"
        attrs = dict(span.attributes)
        assert attrs[n.ATTR_MODEL_NAME] == "fraud" and attrs[n.ATTR_MODEL_VERSION] == "v3"
        assert attrs[n.ATTR_SCORE] == 0.8 and attrs[n.ATTR_PREDICTION_DECISION] == "true"
        assert attrs["ml.segment.country"] == "DE" and attrs[n.ATTR_BATCH_SIZE] == 1
        assert attrs[n.ATTR_REQUEST_ID] == seen[0] is not None
        assert not any(k.startswith("ml.feature.") for k in attrs)  # no raw values without opt-in

    def test_record_features_opt_in(self, baseline: Baseline, registry: CollectorRegistry, spans: Any) -> None:
        provider, exporter = spans
        predict = monitor(baseline=baseline, record_features=True, tracer_provider=provider, registry=registry)(
            constant_model()
        )
        predict({"amount": 3.0, "country": "DE"})
        attrs = dict(exporter.get_finished_spans()[0].attributes)
        assert attrs["ml.feature.amount"] == 3.0 and attrs["ml.feature.country"] == "DE"

    def test_recorded_features_with_a_lone_surrogate_still_encode(
        self, baseline: Baseline, registry: CollectorRegistry, spans: Any
    ) -> None:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        provider, exporter = spans
        predict = monitor(baseline=baseline, record_features=True, tracer_provider=provider, registry=registry)(
            constant_model()
        )
        predict({"amount": 3.0, "country": "D\udce9", "bad\ud800key": "x"})
        finished = exporter.get_finished_spans()
        attrs = dict(finished[0].attributes)
        assert attrs["ml.feature.country"] == "D\ufffd" and attrs["ml.feature.bad\ufffdkey"] == "x"
        assert len(encode_spans(finished).SerializeToString()) > 0  # protobuf refuses lone surrogates

    def test_request_id_from_the_input(self, baseline: Baseline, registry: CollectorRegistry, spans: Any) -> None:
        provider, exporter = spans
        predict = monitor(
            baseline=baseline, request_id=lambda f: f["txn"], tracer_provider=provider, registry=registry
        )(constant_model())
        predict({"txn": "abc-1", "amount": 1.0})
        assert exporter.get_finished_spans()[0].attributes[n.ATTR_REQUEST_ID] == "abc-1"

    def test_batch_span(
        self, baseline: Baseline, training_frame: pd.DataFrame, registry: CollectorRegistry, spans: Any
    ) -> None:
        provider, exporter = spans
        predict = monitor(baseline=baseline, tracer_provider=provider, registry=registry)(constant_model(0.25))
        predict(features_of(training_frame.head(64)))
        attrs = dict(exporter.get_finished_spans()[0].attributes)
        assert attrs[n.ATTR_BATCH_SIZE] == 64 and attrs[n.ATTR_SCORE_MEAN] == 0.25
        assert n.ATTR_SCORE not in attrs

    def test_nested_spans_are_children(self, baseline: Baseline, registry: CollectorRegistry, spans: Any) -> None:
        provider, exporter = spans
        tracer = provider.get_tracer("test")

        @monitor(baseline=baseline, tracer_provider=provider, registry=registry)
        def predict(features: dict[str, Any]) -> float:
            with tracer.start_as_current_span("feature-store"):
                return 0.1

        predict({"amount": 1.0})
        inner, outer = exporter.get_finished_spans()
        assert inner.parent is not None and inner.parent.span_id == outer.context.span_id


class TestErrorsAndFallbacks:
    def test_model_exception_passes_through_unchanged(
        self, baseline: Baseline, registry: CollectorRegistry, spans: Any
    ) -> None:
        provider, exporter = spans
        boom = KeyError("feature store down")

        @monitor(baseline=baseline, tracer_provider=provider, registry=registry)
        def predict(features: Any) -> float:
            raise boom

        with pytest.raises(KeyError) as info:
            predict({"amount": 1.0})
        assert info.value is boom
        assert info.traceback[-1].name == "predict"  # the traceback still ends in the model code
        assert sample(registry, "ml_prediction_errors_total", error_type="KeyError") == 1
        assert sample(registry, "ml_prediction_duration_seconds_count") == 1
        assert sample(registry, "ml_feature_value_count", ml_feature="amount") == 1  # features were seen
        assert _samples(registry, "ml_predictions_total") == []  # no prediction was made
        span = exporter.get_finished_spans()[0]
        assert span.attributes[n.ATTR_ERROR_TYPE] == "KeyError"
        assert span.status.status_code.name == "ERROR"

    def test_fallback_is_counted(self, baseline: Baseline, registry: CollectorRegistry) -> None:
        @monitor(baseline=baseline, registry=registry)
        def predict(features: Any) -> float:
            mark_fallback("rules")
            return 0.0

        predict({"amount": 1.0})
        assert sample(registry, "ml_prediction_fallbacks_total", ml_fallback_reason="rules") == 1
        mark_fallback("outside a call does nothing")

    def test_async_function(self, baseline: Baseline, registry: CollectorRegistry) -> None:
        @monitor(baseline=baseline, decision=0.5, registry=registry)
        async def predict(features: Any) -> float:
            await asyncio.sleep(0)
            return 0.75

        assert asyncio.run(predict({"amount": 2.0})) == 0.75
        assert (
            sample(registry, "ml_predictions_total", ml_segment_key="__all__", ml_segment="__all__", ml_decision="true")
            == 1
        )

    def test_method_and_keyword_features(self, baseline: Baseline, registry: CollectorRegistry) -> None:
        class Model:
            @monitor(baseline=baseline, registry=registry)
            def predict(self, features: Any, threshold: float = 0.5) -> float:
                return 0.3

        Model().predict(features={"amount": 1.0})
        assert sample(registry, "ml_feature_value_count", ml_feature="amount") == 1

    def test_observe_and_record_without_decorator(
        self, baseline: Baseline, training_frame: pd.DataFrame, registry: CollectorRegistry
    ) -> None:
        mon = ModelMonitor(baseline=baseline, decision=0.7, registry=registry)
        with mon.observe({"amount": 1.0}) as obs:
            obs.result = 0.9
        mon.record(features_of(training_frame.head(10)), np.zeros(10))
        assert (
            sample(registry, "ml_predictions_total", ml_segment_key="__all__", ml_segment="__all__", ml_decision="true")
            == 1
        )
        assert (
            sample(
                registry, "ml_predictions_total", ml_segment_key="__all__", ml_segment="__all__", ml_decision="false"
            )
            == 10
        )
        assert sample(registry, "ml_prediction_duration_seconds_count") == 1  # record() without duration


class TestCardinality:
    def test_segment_values_beyond_the_budget_fold_into_other(self, registry: CollectorRegistry) -> None:
        mon = ModelMonitor("m", "1", segments=["user"], segment_budget=3, registry=registry)
        predict = mon(lambda f: np.zeros(len(f["user"])))
        users = [f"user-{i}" for i in range(10)] * 2
        predict({"user": users})
        seen = {
            s.labels["ml_segment"]
            for s in _samples(registry, "ml_predictions_total")
            if s.labels["ml_segment_key"] == "user"
        }
        assert seen == {"user-0", "user-1", "user-2", "__other__"}
        assert (
            registry.get_sample_value(
                "ml_cardinality_overflow_total",
                {"ml_model_name": "m", "ml_model_version": "1", "ml_attribute": "ml.segment.user"},
            )
            == 14
        )

    def test_rare_training_categories_count_as_overflow(
        self, training_frame: pd.DataFrame, registry: CollectorRegistry
    ) -> None:
        from otel_ml import fit_baseline

        b = fit_baseline(training_frame[["country"]], model="m", version="1", top_k=2)
        predict = monitor(baseline=b, registry=registry)(lambda f: None)
        predict({"country": ["FR", "FR", "US", "Mars"]})
        labels = {"ml_model_name": "m", "ml_model_version": "1"}
        assert (
            registry.get_sample_value(
                "ml_feature_category_total", {**labels, "ml_feature": "country", "ml_category": "__other__"}
            )
            == 2
        )
        assert (
            registry.get_sample_value("ml_cardinality_overflow_total", {**labels, "ml_attribute": "ml.feature.country"})
            == 2
        )

    def test_two_monitors_for_one_model_version_clash(self, baseline: Baseline, registry: CollectorRegistry) -> None:
        ModelMonitor(baseline=baseline, registry=registry)
        with pytest.raises(ValueError, match="already monitored"):
            ModelMonitor(baseline=baseline, registry=registry)


def _samples(registry: CollectorRegistry, name: str) -> list[Any]:
    return [s for fam in registry.collect() for s in fam.samples if s.name == name]


class TestExposition:
    @pytest.fixture
    def exposition(self, baseline: Baseline, training_frame: pd.DataFrame, registry: CollectorRegistry) -> str:
        predict = monitor(baseline=baseline, segments=["country"], decision=0.7, registry=registry)(
            lambda f: np.linspace(0, 1, len(f)) if not isinstance(f, dict) else 0.5
        )
        predict(features_of(training_frame.head(500)))
        predict({"amount": 1.0})

        @monitor(model="other", version="1", registry=registry)
        def broken(features: Any) -> float:
            raise RuntimeError

        with pytest.raises(RuntimeError):
            broken({"x": 1})
        return generate_latest(registry).decode()

    def test_promtool_check_metrics_is_clean(self, exposition: str) -> None:
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool not installed (apt-get install prometheus)")
        result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "" and result.stderr.strip() == ""

    def test_family_names_and_types(self, exposition: str) -> None:
        families = {f.name: f.type for f in text_string_to_metric_families(exposition)}
        expected = {i.prometheus.removesuffix("_total"): i.kind for i in n.APP_INSTRUMENTS}
        for name, kind in expected.items():
            assert families.get(name) == kind, name


class TestOtelNameTranslation:
    """The OTel instrument names and units translate to exactly the Prometheus names we expose."""

    def test_with_the_opentelemetry_prometheus_exporter(self) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider

        registry = CollectorRegistry()
        provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
        meter = provider.get_meter("translation-test")
        attrs = {n.ATTR_MODEL_NAME: "m", n.ATTR_MODEL_VERSION: "1"}
        for inst in n.APP_INSTRUMENTS:
            if inst.kind == "counter":
                meter.create_counter(inst.otel_name, unit=inst.unit).add(1, attrs)
            else:
                meter.create_histogram(inst.otel_name, unit=inst.unit).record(1.0, attrs)
        names = {s.name for fam in registry.collect() for s in fam.samples}
        for inst in n.APP_INSTRUMENTS:
            expected = inst.series if inst.kind == "counter" else inst.prometheus + "_bucket"
            assert expected in names, (inst.otel_name, sorted(names))
        labels = next(s.labels for fam in registry.collect() for s in fam.samples if s.name == "ml_predictions_total")
        assert labels["ml_model_name"] == "m" and labels["ml_model_version"] == "1"
        provider.shutdown()


class TestDecisionContract:
    """What ``decision=`` means for one row and for a batch, as the ModelMonitor docstring says."""

    ROW_SCORES = [0.7, 0.2, float("nan"), None]
    BATCH = np.array([0.2, np.nan, 0.9])

    @staticmethod
    def decisions(decision: Any, features: Any, result: Any) -> dict[str, float]:
        registry = CollectorRegistry()
        ModelMonitor("m", "1", decision=decision, registry=registry)(lambda x: result)(features)
        return {
            s.labels["ml_decision"]: s.value
            for s in _samples(registry, "ml_predictions_total")
            if s.labels["ml_segment_key"] == "__all__"
        }

    @pytest.mark.parametrize(
        ("decision", "expected"),
        [
            (None, ["none", "none", "none", "none"]),
            (0.5, ["true", "false", "none", "none"]),  # a missing or non-finite score has no decision
            (lambda s: "high" if s > 0.5 else "low", ["high", "low", "none", "none"]),
        ],
    )
    def test_one_row(self, decision: Any, expected: list[str]) -> None:
        got = [self.decisions(decision, {"x": 1.0}, score) for score in self.ROW_SCORES]
        assert got == [{label: 1.0} for label in expected]

    def test_a_row_rule_gets_a_float(self) -> None:
        seen: list[Any] = []
        self.decisions(lambda s: seen.append(s) or "x", {"x": 1.0}, np.float32(0.25))
        assert seen == [0.25] and type(seen[0]) is float

    def test_batch_threshold_compares_the_array(self) -> None:
        assert self.decisions(0.5, {"x": [1.0, 2.0, 3.0]}, self.BATCH) == {"false": 2.0, "true": 1.0}  # NaN: false

    def test_batch_none_and_no_score(self) -> None:
        assert self.decisions(None, {"x": [1.0, 2.0, 3.0]}, self.BATCH) == {"none": 3.0}
        assert self.decisions(0.5, {"x": [1.0, 2.0, 3.0]}, None) == {"none": 3.0}

    def test_batch_rule_gets_the_array_or_each_score(self) -> None:
        vectorised = self.decisions(lambda s: np.where(s > 0.5, "high", "low"), {"x": [1.0, 2.0, 3.0]}, self.BATCH)
        assert vectorised == {"low": 2.0, "high": 1.0}
        reduced = self.decisions(lambda s: "high" if np.all(s > 0.1) else "low", {"x": [1.0, 2.0, 3.0]}, self.BATCH)
        assert reduced == {"high": 2.0, "low": 1.0}  # one value for the array: applied again per score

    def test_batch_rule_that_raises_on_an_array_counts_no_predictions(self) -> None:
        registry = CollectorRegistry()
        rule = ModelMonitor("m", "1", decision=lambda s: "high" if s > 0.5 else "low", registry=registry)
        rule(lambda x: self.BATCH)({"x": [1.0, 2.0, 3.0]})
        assert _samples(registry, "ml_predictions_total") == []
        errors = {s.labels["error_type"]: s.value for s in _samples(registry, "ml_instrumentation_errors_total")}
        assert errors == {"ValueError": 1.0}


def test_monitor_takes_exactly_the_parameters_of_model_monitor() -> None:
    import inspect

    init = list(inspect.signature(ModelMonitor.__init__).parameters.values())[1:]  # less self
    assert list(inspect.signature(monitor).parameters.values()) == init
    assert inspect.signature(monitor).return_annotation in (ModelMonitor, "ModelMonitor")


@pytest.mark.parametrize("fails", [False, True])
def test_sync_async_and_observe_count_a_call_alike(baseline: Baseline, fails: bool) -> None:
    """The three ways into a monitored call share one begin and finish: the same series result."""

    def model(features: Any) -> float:
        if fails:
            raise KeyError("amount")
        return 0.8

    async def async_model(features: Any) -> float:
        return model(features)

    row = {"amount": 12.0, "country": "US", "device": "ios", "n_items": 2, "balance_z": 0.1}

    def observed(mon: ModelMonitor) -> None:
        with mon.observe(row) as obs:
            obs.result = model(row)

    ways = {
        "sync": lambda mon: mon(model)(row),
        "async": lambda mon: asyncio.run(mon(async_model)(row)),
        "observe": observed,
    }
    seen = {}
    for way, call in ways.items():
        registry = CollectorRegistry()
        mon = ModelMonitor(baseline=baseline, segments=["country"], decision=0.5, registry=registry)
        with pytest.raises(KeyError) if fails else contextlib.nullcontext():
            call(mon)
        seen[way] = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in registry.collect()
            for s in fam.samples
            if s.name not in ("ml_prediction_duration_seconds_sum", "ml_prediction_duration_seconds_bucket")
            and "cpu_seconds" not in s.name
        }
        cpu = {s.name: s.value for fam in registry.collect() for s in fam.samples if "cpu_seconds" in s.name}
        # an async call's thread runs other tasks between its awaits: its CPU is not measured
        assert (cpu["ml_prediction_cpu_seconds_total"] > 0) is (way != "async"), (way, cpu)
        assert cpu["ml_process_cpu_seconds_total"] > 0
    assert seen["sync"] == seen["async"] == seen["observe"]  # timings aside (the _count is compared)
    assert any(name == "ml_prediction_errors_total" for name, _ in seen["sync"]) is fails
