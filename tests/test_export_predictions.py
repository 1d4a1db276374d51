"""The batch path client: what ``export_predictions`` sends, decoded here with gzip and json.

No fake sidecar: the bodies are read from ``encode_prediction_chunks`` (the function that
``export_predictions`` posts, chunk by chunk); the lead's integration test posts them to a real
sidecar. Only an unreachable endpoint is tried over the network here (nothing listens there).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import free_port

from otel_ml import PredictionExportError, export_predictions
from otel_ml.instrument._export import _url, encode_prediction_chunks


def bodies(**kwargs: Any) -> list[tuple[int, dict[str, Any]]]:
    kwargs.setdefault("model", "loans")
    kwargs.setdefault("version", "v7")
    return [(rows, json.loads(gzip.decompress(body))) for rows, body in encode_prediction_chunks(**kwargs)]


def test_one_chunk_holds_every_column() -> None:
    ((rows, body),) = bodies(
        request_ids=["a", "b", "c"],
        scores=[0.1, None, 0.9],
        decisions=[False, None, True],
        segments={"region": ["eu", "us", None], "tier": [1, 2.0, "3"]},
        times=[1_700_000_000, 1_700_000_060.5, 1_700_000_120],
    )
    assert rows == 3
    assert body == {
        "model": "loans",
        "version": "v7",
        "request_ids": ["a", "b", "c"],
        "scores": [0.1, None, 0.9],
        "decisions": ["false", None, "true"],  # the app's spelling of a threshold rule
        "segments": {"region": ["eu", "us", None], "tier": ["1", "2", "3"]},  # as labels are spelled
        "times": [1_700_000_000.0, 1_700_000_060.5, 1_700_000_120.0],
    }


def test_optional_columns_are_left_out() -> None:
    ((_, body),) = bodies(request_ids=["a"], scores=[0.5])
    assert set(body) == {"model", "version", "request_ids", "scores"}


def test_a_candidate_scored_on_the_primarys_requests_names_it_in_every_chunk() -> None:
    chunks = bodies(version="v8", shadow_of="v7", request_ids=["a", "b", "c"], scores=[0.1, 0.2, 0.3], chunk_rows=2)
    assert [(b["version"], b["shadow_of"]) for _, b in chunks] == [("v8", "v7"), ("v8", "v7")]


def test_chunks_split_every_column_in_order() -> None:
    n = 10
    ids = [f"r{i}" for i in range(n)]
    scores = np.linspace(0, 1, n)
    chunks = bodies(request_ids=ids, scores=scores, segments={"region": ["eu"] * n}, chunk_rows=4)
    assert [rows for rows, _ in chunks] == [4, 4, 2]
    assert sum((b["request_ids"] for _, b in chunks), []) == ids
    assert sum((b["scores"] for _, b in chunks), []) == scores.tolist()  # exact: JSON keeps float64 digits
    assert all(len(b["segments"]["region"]) == rows for rows, b in chunks)
    assert all((b["model"], b["version"]) == ("loans", "v7") for _, b in chunks)


def test_numpy_and_pandas_columns() -> None:
    frame = pd.DataFrame(
        {
            "id": ["x", "y", "z"],
            "score": np.array([0.25, np.nan, 1.0], dtype=np.float32),
            "approved": [True, False, True],
            "when": pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]),
        }
    )
    ((_, body),) = bodies(
        request_ids=frame["id"],
        scores=frame["score"],
        decisions=frame["approved"].to_numpy(),
        times=frame["when"],
    )
    assert body["scores"] == [0.25, None, 1.0]  # NaN: no score
    assert body["decisions"] == ["true", "false", "true"]
    t0 = pd.Timestamp("2026-01-01T00:00:00Z").timestamp()
    assert body["times"] == [t0, t0 + 60, t0 + 120]


def test_nullable_pandas_scores() -> None:
    ((_, body),) = bodies(request_ids=["a", "b"], scores=pd.array([0.5, None], dtype="Float64"))
    assert body["scores"] == [0.5, None]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"request_ids": ["a", "b"], "scores": [0.1]}, "scores has 1 values for 2 request ids"),
        ({"request_ids": ["a"], "scores": [0.1], "decisions": ["x", "y"]}, "decisions has 2 values"),
        ({"request_ids": ["a"], "scores": [0.1], "segments": {"r": []}}, r"segments\['r'\] has 0 values"),
        ({"request_ids": ["a"], "scores": [0.1], "times": [1, 2]}, "times has 2 values"),
        ({"request_ids": ["a", 7], "scores": [0.1, 0.2]}, r"request_ids\[1\] = 7"),
        ({"request_ids": ["a", ""], "scores": [0.1, 0.2]}, r"request_ids\[1\] = ''"),
        ({"request_ids": "abc", "scores": [0.1, 0.2, 0.3]}, "must be a column"),
        ({"request_ids": ["a", "b"], "scores": [0.1, float("inf")]}, r"scores\[1\] = inf"),
        ({"request_ids": ["a", "b"], "scores": np.array([0.1, -np.inf])}, r"scores\[1\] = -inf"),
        ({"request_ids": ["a", "b"], "scores": [0.1, "0.2"]}, "numbers or None"),
        ({"request_ids": ["a", "b"], "scores": [0.1, None, "x"][1:]}, r"scores\[1\] = 'x'"),
        ({"request_ids": ["a"], "scores": [True]}, "numbers or None"),
        ({"request_ids": ["a"], "scores": [[0.1, 0.9]]}, "numbers or None"),
        ({"request_ids": ["a"], "scores": [0.1], "times": [float("nan")]}, "finite unix seconds"),
        ({"request_ids": ["a"], "scores": [0.1], "times": ["yesterday"]}, "unix seconds"),
        ({"request_ids": ["a"], "scores": [0.1], "segments": {"": ["x"]}}, "segment keys"),
        ({"request_ids": ["a"], "scores": [0.1], "model": ""}, "non-empty strings"),
        ({"request_ids": ["a"], "scores": [0.1], "chunk_rows": 0}, "chunk_rows"),
        ({"request_ids": ["a"], "scores": [0.1], "shadow_of": ""}, "another version"),
        ({"request_ids": ["a"], "scores": [0.1], "version": "v7", "shadow_of": "v7"}, "another version"),
    ],
)
def test_invalid_arguments_are_refused_before_anything_is_sent(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bodies(**kwargs)
    with pytest.raises(ValueError, match=match):  # checked before the first request (nothing listens there)
        export_predictions(f"http://127.0.0.1:{free_port()}", **{"model": "m", "version": "1", **kwargs}, timeout=0.5)


def test_the_endpoint() -> None:
    assert _url("http://sidecar:9464") == "http://sidecar:9464/v1/predictions"
    assert _url("http://sidecar:9464/") == "http://sidecar:9464/v1/predictions"
    assert _url("https://s.example/ingest/v1/predictions") == "https://s.example/ingest/v1/predictions"
    for bad in ("sidecar:9464", "ftp://x/", "http:///v1/predictions"):
        with pytest.raises(ValueError, match="http"):
            _url(bad)


def test_an_unreachable_sidecar_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PredictionExportError, match="cannot send predictions") as info:
        export_predictions(url, model="m", version="1", request_ids=["a"], scores=[0.5], timeout=2.0)
    assert info.value.rows_sent == 0 and info.value.status is None


def test_nothing_to_send_sends_nothing() -> None:
    assert export_predictions("http://127.0.0.1:1", model="m", version="1", request_ids=[], scores=[]) == 0
