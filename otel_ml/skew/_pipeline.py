"""Running the user's code: the training pipeline per row, the model per chunk, errors isolated.

The pipeline is user code called once per captured row, so a raise is that row's failure, counted
at stage ``pipeline``. The model is called on chunks (a pandas DataFrame of the replayed features);
a raising chunk is retried row by row so one bad row costs one row, not 1,024 (stage ``model``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..instrument._counting import _score_array

__all__ = ["DEFAULT_CHUNK_ROWS", "RowErrors", "decide", "rescore", "run_pipeline", "takes_as_of"]

DEFAULT_CHUNK_ROWS: Final = 1024
EXAMPLES_KEPT: Final = 10  # first failing rows reported per stage


@dataclass
class RowErrors:
    """Rows that failed, per stage, with the first few request ids and exceptions."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # stage, request id, exception

    def add(self, stage: str, request_id: str, exc: BaseException | str, count: int = 1) -> None:
        self.counts[stage] = self.counts.get(stage, 0) + count
        if sum(1 for e in self.examples if e[0] == stage) < EXAMPLES_KEPT:
            why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
            self.examples.append((stage, request_id, why[:500]))


def takes_as_of(pipeline: Callable[..., Any]) -> bool:
    """Whether the pipeline takes ``as_of=``: it then gets each row's capture time, so lookups in a
    feature store or aggregates over history are made as of when the row was served, not as of now
    (the replay's time-travel trap)."""
    try:
        params = inspect.signature(pipeline).parameters
    except (TypeError, ValueError):
        return False
    return "as_of" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def run_pipeline(
    pipeline: Callable[..., Any], raw: Any, request_id: str, errors: RowErrors, as_of: float | None = None
) -> Mapping[str, Any] | None:
    """The training features of one raw request (``as_of``: its capture time, for a pipeline that
    takes it), or ``None`` (counted) when the pipeline raised or returned something that is not a
    mapping of feature -> value."""
    try:
        out = pipeline(raw) if as_of is None else pipeline(raw, as_of=as_of)
    except Exception as exc:  # user code: any failure is that row's
        errors.add("pipeline", request_id, exc)
        return None
    if not isinstance(out, Mapping):
        errors.add("pipeline", request_id, f"returned a {type(out).__name__}, not a mapping of feature -> value")
        return None
    return out


def _frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Any:
    import pandas as pd

    return pd.DataFrame.from_records(list(rows), columns=list(columns))


def _scores(model: Callable[[Any], Any], rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Any:
    return _score_array(model(_frame(rows, columns)), len(rows))


def rescore(
    model: Callable[[Any], Any],
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    request_ids: Sequence[str],
    errors: RowErrors,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Replayed scores of ``rows`` (NaN where the model failed) and which rows it failed on."""
    scores = np.full(len(rows), np.nan)
    failed = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), chunk_rows):
        chunk = rows[start : start + chunk_rows]
        try:
            scores[start : start + len(chunk)] = _scores(model, chunk, columns)
            continue
        except Exception:  # some row of the chunk: find it
            pass
        for i in range(start, start + len(chunk)):
            try:
                scores[i] = _scores(model, rows[i : i + 1], columns)[0]
            except Exception as exc:
                failed[i] = True
                errors.add("model", request_ids[i], exc)
    return scores, failed


def decide(scores: npt.NDArray[np.float64], rule: Callable[[Any], Any] | float | None) -> npt.NDArray[Any] | None:
    """Decision labels of replayed scores, exactly as the decorator labels them: a threshold gives
    ``"true"`` when ``score > t``; a callable is applied to the array (or per score, when it was
    written for one score); ``None`` without a rule. A score that is not finite has no decision."""
    from ..instrument._counting import scalar_label

    if rule is None:
        return None
    if isinstance(rule, (int, float)):
        labels = np.where(scores > rule, "true", "false").astype(object)
    else:
        out = np.asarray(rule(scores))
        if out.shape != scores.shape:
            out = np.asarray([rule(s) for s in scores.tolist()], dtype=object)
        labels = np.asarray([scalar_label(v) for v in out.tolist()], dtype=object)
    labels[~np.isfinite(scores)] = None  # the decorator decides finite scores only: no decision, no flip
    return labels
