"""Where a label finds its prediction: the on-disk join store, a signed token, or the event itself.

:class:`LabelJoin` translates between the sidecar's :class:`Prediction` and the store's packed
rows (a request-id hash, an interned id for model/version/decision/segments, a time, a score),
verifies tokens, and turns every logged label back into a :class:`JoinedLabel`. The store logs
each label with its resolution before the HTTP answer goes out; the same translation replays
that log after a restart, so counters rebuilt from the log equal the ones counted live.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import _names as n
from .. import _token
from .._durations import parse_duration
from ..baseline import Baseline
from ._join_store import DimsOverflow, InlinePrediction, LoggedLabel, Match, SqliteJoinStore, request_id_hashes
from ._join_store import LabelEvent as StoreLabel
from ._label_input import LabelEvent
from ._outcomes import JoinedLabel
from ._series import Prediction

__all__ = ["LabelJoin", "JoinResult", "COHORT_AGES"]

COHORT_AGES = {age: int(parse_duration(age)) for age in n.COHORT_AGES}  # ml_cohort_age -> seconds


@dataclass
class JoinResult:
    """What a batch of labels did: the joined ones, unmatched per reason, received per source."""

    joined: list[JoinedLabel] = field(default_factory=list)
    pairs: list[tuple[JoinedLabel, JoinedLabel]] = field(default_factory=list)  # (primary, shadow) of one label
    unmatched: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    last_seq: int = 0

    def miss(self, reason: str) -> None:
        self.unmatched[reason] = self.unmatched.get(reason, 0) + 1


def _dims_key(p: Prediction) -> tuple[str, ...]:
    """model, version, decision, the segment pairs flat, and for a shadow's prediction the primary
    version last (an even length says it is there, so keys interned before shadows still decode)."""
    flat = [p.model, p.version, p.decision or ""]
    for key, value in p.segments:
        flat += (key, value)
    if p.shadow_of is not None:
        flat.append(p.shadow_of)
    return tuple(flat)


def _decoded(key: tuple[str, ...]) -> tuple[str, str, str | None, tuple[tuple[str, str], ...], str | None]:
    """(model, version, decision, segments, shadow_of) of a key :func:`_dims_key` made."""
    shadow_of = key[-1] if len(key) % 2 == 0 else None
    pairs = key[3:-1] if shadow_of is not None else key[3:]
    return key[0], key[1], key[2] or None, tuple(zip(pairs[::2], pairs[1::2])), shadow_of


class LabelJoin:
    """The join store seen as predictions and labels, plus the token keys and vocabularies."""

    def __init__(
        self,
        store: SqliteJoinStore,
        baselines: Sequence[Baseline],
        token_keys: Sequence[bytes] = (),
    ) -> None:
        self.store = store
        self.token_keys = tuple(token_keys)
        self.token_vocabularies: Mapping[bytes, _token.TokenVocabulary] = _token.vocabularies_of(baselines)

    # -- predictions ---------------------------------------------------------------------------
    def add(self, predictions: Sequence[Prediction], now: float) -> tuple[int, int]:
        """Store predictions to wait for their labels; returns (stored, dropped for the dims budget)."""
        interned: dict[tuple[str, ...], int] = {}
        kept: list[Prediction] = []
        dims: list[int] = []
        for p in predictions:
            key = _dims_key(p)
            d = interned.get(key)
            if d is None:
                try:
                    d = interned[key] = self.store.intern(key)
                except DimsOverflow:
                    continue
            kept.append(p)
            dims.append(d)
        if not kept:
            return 0, len(predictions)
        times = np.fromiter((p.time or now for p in kept), np.float64, len(kept))
        scores = np.fromiter((math.nan if p.score is None else p.score for p in kept), np.float64, len(kept))
        result = self.store.add(request_id_hashes([p.request_id for p in kept]), dims, times, scores, now=now)
        return result.stored, len(predictions) - len(kept)

    # -- labels -----------------------------------------------------------------------------------
    def label(self, events: Sequence[LabelEvent], now: float) -> JoinResult:
        """Resolve, log durably, and return the joined labels (the store commits before this returns)."""
        result = JoinResult()
        logged: list[StoreLabel] = []
        for event in events:
            inline, rid_hash, request_id = event.inline, None, event.request_id
            rejected: str | None = None
            if event.token is not None:
                request_id = None  # a token is deduplicated by its own (signed) hash, never a posted id
                if not self.token_keys:  # a token this sidecar has no key to verify: never trusted
                    rejected = "no_token_key"
                else:
                    try:
                        token = _token.decode_token(event.token, self.token_keys, self.token_vocabularies)
                    except _token.TokenError as exc:
                        rejected = exc.reason
                    else:
                        inline = Prediction(
                            "",
                            token.model,
                            token.version,
                            token.score,
                            token.decision,
                            token.segments,
                            token.prediction_time,
                        )
                        rid_hash = token.rid_hash
            stored = None
            if inline is not None and rejected is None:
                try:
                    dims = self.store.intern(_dims_key(inline))
                except DimsOverflow:
                    rejected = "dims_budget"
                else:
                    stored = InlinePrediction(dims, inline.time or None, inline.score)
            if rejected is not None:  # logged too: a replay after kill -9 counts it like the live run
                logged.append(StoreLabel(None, event.outcome, event.label_time, event.source, None, None, rejected))
                continue
            logged.append(StoreLabel(request_id, event.outcome, event.label_time, event.source, stored, rid_hash))
        for entry in self.store.label(logged, now=now):
            self._resolved(entry, result)
        return result

    def replay(self, after_seq: int) -> JoinResult:
        """The labels logged after ``after_seq``, resolved as they were when they arrived."""
        result = JoinResult(last_seq=after_seq)
        for entry in self.store.log_after(after_seq):
            self._resolved(entry, result)
        return result

    def _resolved(self, entry: LoggedLabel, result: JoinResult) -> None:
        result.last_seq = max(result.last_seq, entry.seq)
        result.received[entry.source] = result.received.get(entry.source, 0) + 1
        if entry.status != "joined":
            result.miss(entry.status)
            return
        joined = [JoinedLabel(self.prediction_of(match), entry.outcome, entry.label_time) for match in entry.matches]
        result.joined += joined
        if len(joined) > 1:
            result.pairs += shadow_pairs(joined)

    def prediction_of(self, match: Match) -> Prediction:
        model, version, decision, segments, shadow_of = _decoded(self.store.dims_key(match.dims))
        score = None if match.score is None or match.score != match.score else float(match.score)
        return Prediction("", model, version, score, decision, segments, float(match.time), shadow_of)

    def combinations(self) -> dict[tuple[str, str], set[tuple[str | None, tuple[tuple[str, str], ...]]]]:
        """The (decision, segments) combinations the store has interned, per model version: what a
        restarted sidecar counts against each model's combination budget."""
        out: dict[tuple[str, str], set[tuple[str | None, tuple[tuple[str, str], ...]]]] = {}
        for d in range(self.store.dims_count):
            model, version, decision, segments, _ = _decoded(self.store.dims_key(d))
            out.setdefault((model, version), set()).add((decision, segments))
        return out

    # -- cohorts ----------------------------------------------------------------------------------
    def coverage(self, now: float) -> dict[tuple[str, str, str, str], tuple[int, int]]:
        """(predicted, labelled) per (model, version, cohort age, decision), ``__all__`` decisions too."""
        out: dict[tuple[str, str, str, str], list[int]] = {}
        by_seconds = {seconds: name for name, seconds in COHORT_AGES.items()}
        for (age, dims), (predicted, labelled) in self.store.coverage(now, tuple(COHORT_AGES.values())).items():
            model, version, decision, _, _ = _decoded(self.store.dims_key(dims))
            for shown in ("__all__", decision or "none"):
                cell = out.setdefault((model, version, by_seconds[age], shown), [0, 0])
                cell[0] += predicted
                cell[1] += labelled
        return {k: (v[0], v[1]) for k, v in out.items()}


def shadow_pairs(joined: Sequence[JoinedLabel]) -> list[tuple[JoinedLabel, JoinedLabel]]:
    """(primary, shadow) among the predictions one label joined: a shadow's row names the version
    it shadowed, and that version's own (not shadow) row of the same model is its primary."""
    primaries = {(j.prediction.model, j.prediction.version): j for j in joined if j.prediction.shadow_of is None}
    out = []
    for j in joined:
        p = j.prediction
        primary = None if p.shadow_of is None else primaries.get((p.model, p.shadow_of))
        if primary is not None:
            out.append((primary, j))
    return out


def joined_by_model(joined: Iterable[JoinedLabel]) -> dict[tuple[str, str], list[JoinedLabel]]:
    out: dict[tuple[str, str], list[JoinedLabel]] = {}
    for item in joined:
        out.setdefault((item.prediction.model, item.prediction.version), []).append(item)
    return out
