"""A small fraud model for the skew tests: a training pipeline, a copy with known bugs, a model, and
capture files written with ``otel_ml._capture_format`` exactly as the app's spool writes them.

Importable as ``_skew_fixture:build_features`` from this directory (the CLI tests run there).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from otel_ml import _capture_format as cf

COUNTRIES = ("DE", "FR", "ES", "IT", "NL")
THRESHOLD = 0.5
FEATURES = ("amount_eur", "log_amount", "age", "country", "request_hour")
_COUNTRY_WEIGHT = {"DE": -0.4, "FR": 0.1, "ES": 0.3, "IT": 0.2, "NL": 0.6, "BE": -0.8}


def raw_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Raw requests; ``customer_id`` runs 0..count-1, so ``customer_id % 100 < 3`` is exactly 3 %
    of the rows when ``count`` is a multiple of 100."""
    rng = np.random.default_rng(seed)
    amounts = np.round(rng.lognormal(3.5, 1.0, count), 2)
    ages = rng.integers(18, 90, count)
    countries = rng.choice(COUNTRIES, count)
    return [
        {
            "customer_id": i,
            "amount_eur": float(amounts[i]),
            "age": int(ages[i]),
            "country": str(countries[i]),
            "hour": float(rng.uniform(0, 24)),
        }
        for i in range(count)
    ]


def build_features(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The training pipeline: a derived numeric (log amount), a categorical, a nondeterministic hour."""
    amount = float(raw["amount_eur"])
    return {
        "amount_eur": amount,
        "log_amount": math.log1p(amount),
        "age": raw["age"],
        "country": raw["country"],
        "request_hour": raw["hour"],
    }


def in_cents(raw: Mapping[str, Any]) -> bool:
    """The rows the unit bug hits: exactly 3 % of customer ids."""
    return int(raw["customer_id"]) % 100 < 3


def build_features_buggy(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the pipeline with two bugs: amounts in cents on 3 % of rows, NL encoded as BE."""
    out = build_features(raw)
    if in_cents(raw):
        out["amount_eur"] = out["amount_eur"] * 100.0
        out["log_amount"] = math.log1p(out["amount_eur"])
    if out["country"] == "NL":
        out["country"] = "BE"
    return out


def build_features_noisy(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline with every numeric feature moved by 1e-9 relative: float noise, not skew."""
    out = build_features(raw)
    for k in ("amount_eur", "log_amount", "age"):
        out[k] = out[k] * (1 + 1e-9)
    return out


def build_features_fragile(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline raising on every 50th customer."""
    if int(raw["customer_id"]) % 50 == 7:
        raise KeyError("amount_eur")
    return build_features(raw)


def scores_of(amount: Any, log_amount: Any, age: Any, country: Any) -> np.ndarray:
    """The model as a function of feature columns (numpy): a logistic score."""
    weights = np.asarray([_COUNTRY_WEIGHT.get(str(c), 0.0) for c in country])
    z = 0.9 * (np.asarray(log_amount, dtype=float) - 3.5) - 0.03 * (np.asarray(age, dtype=float) - 50.0) + weights
    z = z + 1e-4 * np.asarray(amount, dtype=float) / 100.0
    return 1.0 / (1.0 + np.exp(-z))


def predict(frame: Any) -> np.ndarray:
    """The model: a DataFrame of features -> scores."""
    return scores_of(frame["amount_eur"], frame["log_amount"], frame["age"], frame["country"])


def predict_proba(frame: Any) -> np.ndarray:
    """The same model as a binary classifier's predict_proba (column 1 is the score)."""
    p = predict(frame)
    return np.column_stack([1.0 - p, p])


def predict_fragile(frame: Any) -> np.ndarray:
    """Raises on any chunk holding an age of 77 (one bad row poisons its chunk)."""
    if (np.asarray(frame["age"]) == 77).any():
        raise ValueError("age 77 is not supported")
    return predict(frame)


def decide(scores: Any) -> Any:
    """A decision callable: the served rule, written as a function."""
    return np.asarray(scores) > THRESHOLD


def region(raw: Mapping[str, Any]) -> str:
    return "south" if raw["country"] in ("ES", "IT") else "north"


def served_rows(raws: Sequence[Mapping[str, Any]], prefix: str = "r") -> list[dict[str, Any]]:
    """Capture rows as the app writes them, served through the correct pipeline."""
    feats = [build_features(r) for r in raws]
    scores = scores_of(*([f[k] for f in feats] for k in ("amount_eur", "log_amount", "age", "country")))
    return [
        {
            "request_id": f"{prefix}{raw['customer_id']}",
            "time": 1764650000.0 + i,
            "raw": dict(raw),
            "features": f,
            "score": float(s),
            "decision": "true" if s > THRESHOLD else "false",
            "segments": {"region": region(raw)},
        }
        for i, (raw, f, s) in enumerate(zip(raws, feats, scores))
    ]


def write_capture(
    directory: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    model: str = "fraud",
    version: str = "v3",
    threshold: float | None = THRESHOLD,
    seq: int = 1,
    per_file: int = 0,
    feature_names: Sequence[str] = FEATURES,
    extra_lines: Sequence[bytes] = (),
) -> list[Path]:
    """Finished capture files holding ``rows`` (``per_file`` rows each, 0: one file)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    head = cf.header(
        model=model,
        version=version,
        threshold=threshold,
        segments=("region",),
        feature_names=tuple(feature_names),
        tags={"pipeline": "features-1.4"},
        pid=4242,
        host="test",
        started=1764650000.0,
        library="0.0.0",
    )
    size = per_file or max(len(rows), 1)
    paths = []
    for k, start in enumerate(range(0, max(len(rows), 1), size)):
        chunk = rows[start : start + size]
        lines = [cf.encode_line(head), *(cf.encode_line(r) for r in chunk), *(extra_lines if k == 0 else ())]
        name = cf.finished_name("20261202T000000000Z", 4242, f"{seq:08x}", seq * 1000 + k, len(chunk))
        path = root / name
        path.write_bytes(b"".join(lines))
        paths.append(path)
    return paths
