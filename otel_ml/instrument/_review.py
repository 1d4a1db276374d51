"""Human-review sampling on the request path: which predictions a reviewer should look at.

Each prediction falls in a stratum (the review segment's value, the review bin of its score) and
is selected when ``hash64(salt, request_id) < pi * 2^64``, like OpenTelemetry's
TraceIdRatioBased sampler: the choice depends on the id alone, so every replica and process
makes the same one and an auditor can recompute it. ``pi`` per stratum comes from the sidecar,
which knows every replica's volume (``GET /v1/review/rates``), or from :class:`Review`'s
``rate`` until it has answered. Every prediction is counted in its stratum
(``ml_review_population_total``), the selected ones too (``ml_review_sampled_total``), and a
selected one goes to the sidecar's review queue with its ``pi``, so its weight ``1 / pi`` travels
with its id. Feature values go along only when ``features=True``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .._frame import Columns
from .._label_hygiene import MAX_REQUEST_ID_BYTES, label_value, storable_request_id
from .._names import ALL, REVIEW_DROP_REJECTED
from .._review_sampling import (
    hasher64,
    review_edges,
    row_hashes,
    row_id,
    salt_id,
    selected_rows,
    stratum_index,
    stratum_indices,
    stratum_labels,
    threshold64,
)
from ._counting import scalar_label

if TYPE_CHECKING:
    from ._context import CallState
    from ._counters import ModelCounters
    from ._review_client import Rates, ReviewClient

__all__ = ["Review", "ReviewSampler"]

_log = logging.getLogger("otel_ml")


@dataclass(frozen=True)
class Review:
    """Human-review sampling for one monitor (``@monitor(review=Review(...))``).

    ``sidecar`` is the sidecar's base URL (``http://127.0.0.1:9464``): selected predictions go to
    its review queue and the inclusion probabilities come from it (its ``GET /v1/review/rates``,
    refreshed every 5 minutes). ``rate`` is the probability used for every stratum until the
    sidecar has rates from the model's volume (0: none until then), or always without a sidecar.
    ``segment`` is the segment key (one of the monitor's ``segments``) whose values are strata;
    the score is cut into ``bins`` bins (at the baseline's score edges, evenly spaced among
    them), split further ``near`` a threshold decision, where the errors are: with the defaults,
    12 score strata and ``none`` per segment value.
    ``salt`` (default: derived from the model name and version) must be the same on every
    replica; change it and a new set of ids is drawn. ``features=True`` sends the row's feature
    values with the item (they may hold personal data: off by default). ``token`` is the
    sidecar's bearer token.
    """

    sidecar: str | None = None
    rate: float = 0.0
    segment: str | None = None
    bins: int = 5
    near: tuple[float, ...] = (0.01, 0.02, 0.05)
    salt: str | None = None
    features: bool = False
    token: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.rate, (int, float)) and 0.0 <= self.rate <= 1.0):
            raise ValueError(f"Review(rate={self.rate!r}): an inclusion probability between 0 and 1")
        if not (isinstance(self.bins, int) and 1 <= self.bins <= 100):
            raise ValueError(f"Review(bins={self.bins!r}): between 1 and 100 score bins")
        if self.sidecar is None and self.rate == 0.0:
            raise ValueError("Review needs sidecar= (its rates) or rate= (a fixed inclusion probability)")


class ReviewSampler:
    """One monitor's review sampling: strata, selection, counts and hand-off to the sidecar."""

    def __init__(
        self,
        config: Review,
        counters: ModelCounters,
        edges: Sequence[float],
        *,
        client: ReviewClient | None,
        feature_names: Sequence[str],
    ) -> None:
        self.config = config
        self.counters = counters
        self.edges = tuple(edges)
        self.labels = stratum_labels(self.edges)  # the last: calls without a finite score
        salt = config.salt if config.salt is not None else f"otel-ml/{counters.model_name}/{counters.model_version}"
        self.salt = salt.encode()
        self.salt_id = salt_id(self.salt)
        self._hash = hasher64(self.salt)
        self.client = client
        self._segment_labels = counters.segment_labels[counters.review_key] if counters.review_key else None
        self._feature_names = tuple(feature_names)
        self._rates: Rates | None = None  # the client's rates the cache below was built from
        self._pi: dict[tuple[int, int], float] = {}
        self._table: tuple[Rates | None, npt.NDArray[np.float64]] | None = None
        self._warned_id = False

    @staticmethod
    def edges_for(
        score_edges: Sequence[float], threshold: float | None, near: Sequence[float], bins: int
    ) -> tuple[float, ...]:
        """The review bins: ``bins`` of the score's (every k-th of its edges, so each holds about
        the same share of the reference scores) plus edges around the decision threshold."""
        edges = tuple(score_edges)
        picked = tuple(edges[round(i * (len(edges) + 1) / bins) - 1] for i in range(1, bins)) if edges else ()
        return review_edges(picked, () if threshold is None else (threshold,), tuple(near))

    # -- inclusion probabilities ---------------------------------------------------------------
    def _current_rates(self) -> Rates | None:
        rates = None if self.client is None else self.client.rates()
        if rates is not None and not rates.table:  # the sidecar has seen no volume yet: keep ``rate``
            rates = None
        if rates is not self._rates:
            self._rates = rates
            self._pi = {}
            if rates is not None:
                values = list(rates.table.values())
                _log.info(
                    "otel-ml: %s %s review rates from the sidecar in use: %d strata, pi %s",
                    self.counters.model_name,
                    self.counters.model_version,
                    len(values),
                    f"{min(values):.3g}..{max(values):.3g}" if values else f"default {rates.default:.3g}",
                )
        return rates

    def _segment_of(self, slot: int) -> str:
        labels = self._segment_labels
        if labels is None:
            return ALL
        names = labels.labels
        return names[slot] if slot < len(names) else "__other__"

    def probability(self, slot: int, stratum: int) -> float:
        """pi of one stratum: the sidecar's rate, else the configured one."""
        rates = self._current_rates()
        key = (slot, stratum)
        pi = self._pi.get(key)
        if pi is None:
            pi = self.config.rate
            if rates is not None:
                pi = rates.pi(self.labels[stratum], self._segment_of(slot), self.config.segment or ALL)
            pi = self._pi[key] = min(1.0, max(0.0, float(pi)))
        return pi

    # -- one row ---------------------------------------------------------------------------------
    def row(self, call: CallState, row: Mapping[str, Any], score: float | None, decision: str | None) -> None:
        """Count one prediction in its stratum and, if selected, queue it for review."""
        stratum = stratum_index(self.edges, score)
        slot = 0
        if self._segment_labels is not None:
            slot = self._segment_labels.index(scalar_label(row.get(self.config.segment or "")))
        pi = self.probability(slot, stratum)
        request_id = call.request_id
        sampled = pi > 0.0 and self._hash(request_id) < threshold64(pi)
        self.counters.add_review(slot, stratum, sampled)
        call.review_pi = pi if sampled else 0.0
        if sampled:
            features = self._features(row) if self.config.features else None
            self._send(request_id, slot, stratum, pi, score, decision, features)

    def _features(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self._feature_names or tuple(map(str, row)):
            value = row.get(name)
            if isinstance(value, (bool, int, str)) or value is None:
                out[name] = label_value(value) if isinstance(value, str) else value
            elif isinstance(value, float):
                out[name] = value if math.isfinite(value) else None
        return out

    def _send(
        self,
        request_id: str,
        slot: int,
        stratum: int,
        pi: float,
        score: float | None,
        decision: str | None,
        features: dict[str, Any] | None,
    ) -> None:
        if self.client is None:
            return
        if not storable_request_id(request_id):  # the sidecar refuses the whole body for one such id
            self.counters.add_review_dropped(REVIEW_DROP_REJECTED, 1)
            if not self._warned_id:
                self._warned_id = True
                _log.warning(
                    "otel-ml: %s %s: a request id selected for review is not storable (over %d bytes of "
                    "UTF-8, or a lone surrogate); not sent, counted in ml_review_dropped_total{reason=%r}",
                    self.counters.model_name,
                    self.counters.model_version,
                    MAX_REQUEST_ID_BYTES,
                    REVIEW_DROP_REJECTED,
                )
            return
        item: dict[str, Any] = {
            "request_id": request_id,
            "model": self.counters.model_name,
            "version": self.counters.model_version,
            "segment_key": self.config.segment or ALL,
            "segment": self._segment_of(slot),
            "stratum": self.labels[stratum],
            "pi": pi,
            "score": score if score is not None and math.isfinite(score) else None,
            "decision": decision,
            "time": time.time(),
            "salt_id": self.salt_id,
        }
        if features is not None:
            item["features"] = features
        if not self.client.submit(item):
            self.counters.add_review_dropped("buffer_full", 1)

    # -- a batch ---------------------------------------------------------------------------------
    def batch(
        self,
        call: CallState,
        scores: npt.NDArray[np.float64] | None,
        decisions: Any,
        segment: Any,
        n: int,
        columns: Columns | None = None,
    ) -> None:
        """Count a batch's predictions per stratum and queue the selected rows (ids ``<id>#<row>``,
        their hashes :func:`~otel_ml._review_sampling.row_hashes`), with their features when asked."""
        if scores is None:
            strata = np.full(n, len(self.edges) + 1, dtype=np.intp)
        else:
            strata = stratum_indices(self.edges, scores)
        if self._segment_labels is not None:
            slots = self._segment_labels.encode(segment if segment is not None else np.full(n, None, dtype=object))
        else:
            slots = np.zeros(n, dtype=np.intp)
        pis = self._probabilities(slots, strata)
        sampled = selected_rows(row_hashes(self.salt, call.request_id, n), pis)
        self.counters.add_review_batch(slots, strata, sampled)
        labels = None if decisions is None else np.asarray(decisions)
        for i in np.flatnonzero(sampled).tolist():  # the selected rows only: a few per batch
            score = None if scores is None else float(scores[i])
            decision = None if labels is None else scalar_label(labels[i])
            features = self._row_of(columns, i) if self.config.features and columns is not None else None
            self._send(
                row_id(call.request_id, i), int(slots[i]), int(strata[i]), float(pis[i]), score, decision, features
            )

    def _row_of(self, columns: Columns, i: int) -> dict[str, Any]:
        """Row ``i`` of a batch as the item's features (the monitor's feature names)."""
        row: dict[str, Any] = {}
        for name in self._feature_names:
            column = columns.raw(name)
            if column is not None:  # positional: a pandas Series by iloc, anything else by index
                value = column.iloc[i] if hasattr(column, "iloc") else column[i]
                row[name] = value.item() if isinstance(value, np.generic) else value
        return self._features(row)

    def _probabilities(self, slots: npt.NDArray[np.intp], strata: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """pi of each row from a (slot x stratum) table, rebuilt when the rates or slots change."""
        rows = int(slots.max(initial=0)) + 1
        rates = self._current_rates()
        table = self._table
        if table is None or table[0] is not rates or table[1].shape[0] < rows:
            width = len(self.labels)
            grid = np.array([[self.probability(s, b) for b in range(width)] for s in range(rows)], dtype=np.float64)
            table = self._table = (rates, grid)
        return table[1][slots, strata]
