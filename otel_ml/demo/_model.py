"""The demo's model: a real scikit-learn classifier on a dataset that ships with scikit-learn.

The Wisconsin breast cancer data (569 rows, in the scikit-learn wheel, no download) stands in
for any tabular risk model: a logistic regression flags cases for review when the risk score
is above 0.5. Two categorical columns, ``region`` and ``channel``, are added with a fixed seed
so the demo can show segments and the "US" -> "United States" encoding failure; the model
one-hot encodes them, so an unseen value really makes it run blind on that input.
A second version (``v2``, more strongly regularised, trained on another split) is scored as a
shadow on the same requests, so the demo and the end-to-end test show the version comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..baseline import Baseline, fit_baseline

__all__ = ["DemoModel", "train_demo_model", "NUMERIC", "CATEGORICAL", "SEGMENT", "THRESHOLD"]

NUMERIC = {
    "mean radius": "mean_radius",
    "mean texture": "mean_texture",
    "mean smoothness": "mean_smoothness",
    "mean concave points": "mean_concave_points",
    "worst area": "worst_area",
    "worst concavity": "worst_concavity",
}
CATEGORICAL = ("region", "channel")
SEGMENT = "region"
REGIONS = ("US", "EU", "APAC", "LATAM")
CHANNELS = ("web", "mobile", "branch")
THRESHOLD = 0.5
MODEL_NAME, MODEL_VERSION = "risk", "v1"
CANDIDATE_VERSION = "v2"


@dataclass
class DemoModel:
    """The fitted pipeline, the data traffic is drawn from, its labels and the fitted baseline."""

    pipeline: Any
    frame: Any  # pandas DataFrame of features (numeric + categorical)
    labels: Any  # numpy array: 1 = malignant ("positive": should be flagged)
    baseline: Baseline
    candidate: Any = None  # the v2 pipeline the demo scores in shadow
    candidate_baseline: Baseline | None = None

    def score(self, features: Any) -> Any:
        """P(positive) for a DataFrame of rows."""
        return self.pipeline.predict_proba(features)[:, 1]

    def score_candidate(self, features: Any) -> Any:
        """The candidate version's P(positive) for a DataFrame of rows."""
        return self.candidate.predict_proba(features)[:, 1]


def _frame(seed: int) -> tuple[Any, Any]:
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame[list(NUMERIC)].rename(columns=NUMERIC)
    rng = np.random.default_rng(seed)
    frame["region"] = rng.choice(REGIONS, size=len(frame), p=[0.4, 0.3, 0.2, 0.1])
    frame["channel"] = rng.choice(CHANNELS, size=len(frame), p=[0.5, 0.35, 0.15])
    labels = (data.target.to_numpy() == 0).astype(int)  # target 0 is malignant
    return pd.DataFrame(frame), labels


def train_demo_model(seed: int = 7) -> DemoModel:
    """Train on 70 % of the rows, then fit the baseline on all of them with the model's scores
    (the population the demo's traffic is drawn from, so a clean phase shows no drift)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, labels = _frame(seed)

    def train(split_seed: int, c: float) -> Any:
        part, _, y_part, _ = train_test_split(frame, labels, test_size=0.3, random_state=split_seed, stratify=labels)
        encode = ColumnTransformer(
            [
                ("numeric", StandardScaler(), list(NUMERIC.values())),
                ("categorical", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL)),
            ]
        )
        return Pipeline([("encode", encode), ("classify", LogisticRegression(C=c, max_iter=1000))]).fit(part, y_part)

    def profile(version: str, scores: Any, score_edges: Any = None) -> Baseline:
        return fit_baseline(
            frame,
            model=MODEL_NAME,
            version=version,
            scores=scores,
            labels=labels,  # the reference calibration and performance: CBPE and the realised-drop alert
            segments=[SEGMENT],
            decision=THRESHOLD,
            bins=8,
            score_bins=8,
            score_edges=score_edges,  # v2 on v1's edges: the versions' score buckets line up
        )

    pipeline, candidate = train(seed, 1.0), train(seed + 1, 0.3)
    baseline = profile(MODEL_VERSION, pipeline.predict_proba(frame)[:, 1])
    assert baseline.score is not None
    candidate_baseline = profile(CANDIDATE_VERSION, candidate.predict_proba(frame)[:, 1], baseline.score.edges)
    return DemoModel(pipeline, frame, labels, baseline, candidate, candidate_baseline)
