"""The sidecar's ``/metrics``: a custom collector over :class:`SidecarState`.

It yields the windowed gauges, the baseline reference gauges, the sidecar's own counters and,
for models whose app pushes OTLP (Prometheus 2.42 has no OTLP receiver), the app's counters
re-exposed under the names the app would have used, so dashboards and rules work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import _names as n
from ._outputs import Gauge
from ._series import HISTOGRAM_FAMILIES
from ._state import SidecarState

__all__ = ["SidecarCollector"]

_APP_TYPES = {i.prometheus: i for i in n.APP_INSTRUMENTS}
_SIDECAR_OWNED = {n.OUTCOMES.prometheus: n.OUTCOMES, n.OUTCOME_SQUARED_ERROR.prometheus: n.OUTCOME_SQUARED_ERROR}


def _family_of(sample_name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        base = sample_name.removesuffix(suffix)
        if base != sample_name and base in HISTOGRAM_FAMILIES:
            return base
    return sample_name.removesuffix("_total")


class SidecarCollector:
    def __init__(self, state: SidecarState) -> None:
        self.state = state

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names depend on the baselines; no registration-time collect

    def collect(self) -> Iterator[Metric]:
        state = self.state
        yield from _gauge_families(state.outputs())
        with state.lock:
            yield from self._own_counters(state)
            yield from self._model_counters(state)

    def _own_counters(self, state: SidecarState) -> Iterator[Metric]:
        for inst, label, counts in (
            (n.SIDECAR_INGEST_ERRORS, n.LABEL_REASON, state.ingest_errors),
            (n.SIDECAR_INGESTED, n.LABEL_SOURCE, state.ingested),
            (n.LABELS_UNMATCHED, n.LABEL_REASON, state.unmatched_labels),
        ):
            family = CounterMetricFamily(inst.prometheus, inst.description, labels=[label])
            for value, count in sorted(counts.items()):
                family.add_metric([value], count)
            yield family
        overflow = CounterMetricFamily(
            n.SIDECAR_OVERFLOW.prometheus,
            n.SIDECAR_OVERFLOW.description,
            labels=[n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION, n.LABEL_ATTRIBUTE],
        )
        for model in state.models.values():
            for attribute, count in sorted(model.overflow().items()):
                overflow.add_metric([model.model, model.version, attribute], count)
        yield overflow
        yield GaugeMetricFamily(
            n.SIDECAR_JOIN_STORE.prometheus, n.SIDECAR_JOIN_STORE.description, value=len(state.join)
        )
        yield GaugeMetricFamily(
            n.SIDECAR_COMPUTE_DURATION.prometheus, n.SIDECAR_COMPUTE_DURATION.description, value=state.compute_seconds
        )

    def _model_counters(self, state: SidecarState) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for (model_name, version), model in state.models.items():
            reexport = (model_name, version) in state.reexport
            totals = model.current_totals()
            base = {n.LABEL_MODEL_NAME: model_name, n.LABEL_MODEL_VERSION: version}
            for i, key in enumerate(model.keys):
                family = _family_of(key.name)
                inst = _SIDECAR_OWNED.get(family) or (_APP_TYPES.get(family) if reexport else None)
                if inst is None:
                    continue
                metric = families.get(family)
                if metric is None:
                    metric = families[family] = Metric(family, inst.description, inst.kind)
                metric.add_sample(key.name, {**base, **dict(key.labels)}, float(totals[i]))
        yield from families.values()


def _gauge_families(gauges: list[Gauge]) -> Iterator[Metric]:
    families: dict[str, Metric] = {}
    for inst, labels, value in gauges:
        metric = families.get(inst.prometheus)
        if metric is None:
            metric = families[inst.prometheus] = Metric(inst.prometheus, inst.description, "gauge")
        metric.add_sample(inst.prometheus, labels, value)
    yield from families.values()
