"""The rollout-controller examples in exporters/rollouts/: valid resources, the agreed conditions, and a
query that answers 1, -1 or 0 (never nothing, never NaN) from a real Prometheus running the shipped rules.

The Argo Rollouts AnalysisTemplate and the Flagger MetricTemplate carry the same PromQL with each
controller's template variables. The slow test renders it with test arguments and runs it against a
Prometheus that scrapes a tiny app and sidecar stand-in (the counters' names and labels as
``otel_ml._names`` fixes them) and evaluates the committed ``alert_rules/`` files; Argo's and
Flagger's decisions are then taken on the returned value as the controllers take them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _rule_vocabulary import ROOT

from otel_ml import _names as n

ROLLOUTS = ROOT / "exporters" / "rollouts"
ARGO = ROLLOUTS / "argo-analysistemplate.yaml"
FLAGGER = ROLLOUTS / "flagger-metrictemplate.yaml"
RULE_FILES = [ROOT / "alert_rules" / "otel-ml-recording.yaml", ROOT / "alert_rules" / "otel-ml-alerts.yaml"]
SUCCESS, FAILURE = "result[0] == 1", "result[0] == -1"
ARGS = {"model-name": "loans", "candidate-version": "v8", "window": "1h"}


def _load(path: Path) -> dict[str, Any]:
    (document,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return document  # type: ignore[no-any-return]


def _commented_snippet(path: Path) -> dict[str, Any]:
    """The example resource in the file's trailing comment (from its ``# apiVersion:`` line on)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# apiVersion:"))
    return yaml.safe_load("\n".join(line[2:] for line in lines[start:]))  # type: ignore[no-any-return]


def _argo_metric() -> dict[str, Any]:
    (metric,) = _load(ARGO)["spec"]["metrics"]
    return metric  # type: ignore[no-any-return]


def render_argo(args: dict[str, str]) -> str:
    """The query as Argo Rollouts sends it: ``{{args.name}}`` replaced, defaults from the template."""
    declared = {a["name"]: a.get("value") for a in _load(ARGO)["spec"]["args"]}
    values = {**{k: v for k, v in declared.items() if v is not None}, **args}
    query = re.sub(
        r"\{\{\s*args\.([\w-]+)\s*\}\}", lambda m: values[m.group(1)], _argo_metric()["provider"]["prometheus"]["query"]
    )
    assert "{{" not in query, query
    return query.strip()


def render_flagger(variables: dict[str, str]) -> str:
    """The query as Flagger sends it: ``{{ variables.name }}`` from the metric's templateVariables."""
    query = re.sub(r"\{\{\s*variables\.(\w+)\s*\}\}", lambda m: variables[m.group(1)], _load(FLAGGER)["spec"]["query"])
    assert "{{" not in query, query
    return query.strip()


def argo_measurement(result: list[float]) -> str:
    """One Argo measurement: the two conditions (exactly ``result[0] == <int>``) on the query's vector."""
    metric = _argo_metric()
    for condition, phase in ((metric["successCondition"], "Successful"), (metric["failureCondition"], "Failed")):
        wanted = int(re.fullmatch(r"result\[0\] == (-?\d+)", condition).group(1))  # type: ignore[union-attr]
        if result[0] == wanted:
            return phase
    return "Inconclusive"


def argo_run(measurements: list[str]) -> str:
    """An AnalysisRun's outcome after ``count`` measurements, as Argo Rollouts assesses a metric:
    failed > failureLimit fails, inconclusive > inconclusiveLimit is inconclusive, else successful."""
    metric = _argo_metric()
    assert len(measurements) == metric["count"]
    if measurements.count("Failed") > metric["failureLimit"]:
        return "Failed"
    if measurements.count("Inconclusive") > metric["inconclusiveLimit"]:
        return "Inconclusive"
    return "Successful"


# -- the resources ----------------------------------------------------------------------------------------


def test_argo_analysis_template_has_the_fields_argo_requires() -> None:
    doc = _load(ARGO)
    assert (doc["apiVersion"], doc["kind"]) == ("argoproj.io/v1alpha1", "AnalysisTemplate")
    assert doc["metadata"]["name"]
    assert [a["name"] for a in doc["spec"]["args"]] == ["model-name", "candidate-version", "window"]
    metric = _argo_metric()
    assert metric["name"] and metric["provider"]["prometheus"]["address"].startswith("http")
    assert (metric["successCondition"], metric["failureCondition"]) == (SUCCESS, FAILURE)
    assert metric["failureLimit"] == 0  # one roll-back verdict aborts
    assert re.fullmatch(r"\d+[smh]", metric["interval"])
    # a success needs count - inconclusiveLimit measurements of 1: with the limit below count, zero traffic cannot pass
    assert 0 < metric["inconclusiveLimit"] < metric["count"]


def test_argo_query_reads_the_verdict_in_the_window_it_is_given() -> None:
    query = render_argo(ARGS)
    assert query == (
        f'min({n.windowed(n.VERSION_VERDICT_RECORD, "1h")}{{{n.LABEL_MODEL_NAME}="loans", '
        f'{n.LABEL_CANDIDATE_VERSION}="v8"}}) or on() vector(0)'
    )
    assert render_argo({**ARGS, "window": "24h"}).startswith(f"min({n.VERSION_VERDICT_RECORD}:24h{{")


def test_the_rollout_snippet_uses_the_template_and_its_required_args() -> None:
    rollout = _commented_snippet(ARGO)
    assert (rollout["apiVersion"], rollout["kind"]) == ("argoproj.io/v1alpha1", "Rollout")
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    (analysis,) = [s["analysis"] for s in steps if "analysis" in s]
    assert analysis["templates"] == [{"templateName": _load(ARGO)["metadata"]["name"]}]
    required = {a["name"] for a in _load(ARGO)["spec"]["args"] if "value" not in a}
    assert required <= {a["name"] for a in analysis["args"]}
    assert any("setWeight" in s for s in steps[: steps.index({"analysis": analysis})])  # judged after traffic


def test_flagger_metric_template_and_canary_snippet() -> None:
    doc = _load(FLAGGER)
    assert (doc["apiVersion"], doc["kind"]) == ("flagger.app/v1beta1", "MetricTemplate")
    assert doc["spec"]["provider"]["type"] == "prometheus" and doc["spec"]["provider"]["address"].startswith("http")
    canary = _commented_snippet(FLAGGER)
    assert (canary["apiVersion"], canary["kind"]) == ("flagger.app/v1beta1", "Canary")
    analysis = canary["spec"]["analysis"]
    (metric,) = analysis["metrics"]
    assert metric["templateRef"]["name"] == doc["metadata"]["name"]
    assert metric["thresholdRange"] == {"min": 1}  # only promote passes: 0 and -1 are failed checks
    assert analysis["threshold"] >= 1
    variables = metric["templateVariables"]
    used = set(re.findall(r"\{\{\s*variables\.(\w+)\s*\}\}", doc["spec"]["query"]))
    assert used == set(variables)
    # the same question as Argo's, asked with Flagger's variables
    same = {"model_name": "loans", "candidate_version": "v8", "window": "1h"}
    assert render_flagger(same) == render_argo(ARGS)
    assert variables["window"] == _load(ARGO)["spec"]["args"][2]["value"]


def test_argo_run_outcomes_on_verdict_sequences() -> None:
    """What the template's limits make of typical verdict sequences (Argo's assessment rules)."""
    count = _argo_metric()["count"]
    phases = {v: argo_measurement([v]) for v in (1.0, 0.0, -1.0)}
    assert phases == {1.0: "Successful", 0.0: "Inconclusive", -1.0: "Failed"}
    assert argo_run([phases[0.0]] * count) == "Inconclusive"  # zero traffic: paused, never promoted
    assert argo_run([phases[1.0]] * count) == "Successful"
    warm_up = _argo_metric()["inconclusiveLimit"]
    assert argo_run([phases[0.0]] * warm_up + [phases[1.0]] * (count - warm_up)) == "Successful"
    assert argo_run([phases[0.0]] * (warm_up + 1) + [phases[1.0]] * (count - warm_up - 1)) == "Inconclusive"
    assert argo_run([phases[1.0]] * (count - 1) + [phases[-1.0]]) == "Failed"


# -- the query against a real Prometheus running the shipped rules --------------------------------------

SEGMENTS = {"EU": 6000, "US": 14000}  # pairs (and predictions) per region in the window
EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class _Counters:
    """The app's and the sidecar's counters for one model, primary v7 and shadow v8; 0 until ``start``.

    Counters that go 0 -> value between two scrapes make increase() over any window exact up to
    extrapolation, which scales every series alike (ratios are exact).
    """

    def __init__(self, model: str, flip_share: float, scale: float = 1.0) -> None:
        self.model, self.flip_share, self.scale = model, flip_share, scale
        self.on = False

    def _segments(self) -> list[tuple[str, str, float]]:
        rows = [("region", s, c * self.scale) for s, c in SEGMENTS.items()]
        return [(n.ALL, n.ALL, sum(c for _, _, c in rows)), *rows]

    def app(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        on = 1.0 if self.on else 0.0
        seg = [n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION, n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT]
        pairs = CounterMetricFamily(n.SHADOW_PAIRS.prometheus, "", labels=[*seg, n.LABEL_SHADOW_VERSION, n.LABEL_FLIP])
        predictions = CounterMetricFamily(n.PREDICTIONS.prometheus, "", labels=[*seg, n.LABEL_DECISION])
        for key, value, count in self._segments():
            flips = round(count * self.flip_share / 2)  # half each way: decision rates stay equal
            for flip, c in (("none", count - 2 * flips), ("false_to_true", flips), ("true_to_false", flips)):
                pairs.add_metric([self.model, "v7", key, value, "v8", flip], on * c)
            for version in ("v7", "v8"):  # the shadow's own series under its own version label
                predictions.add_metric([self.model, version, key, value, "true"], on * round(count * 0.2))
                predictions.add_metric([self.model, version, key, value, "false"], on * (count - round(count * 0.2)))
        yield pairs
        yield predictions
        total = self._segments()[0][2] * on
        mv = [n.LABEL_MODEL_NAME, n.LABEL_MODEL_VERSION]
        duration = HistogramMetricFamily(n.PREDICTION_DURATION.prometheus, "", labels=mv)
        score = HistogramMetricFamily(n.PREDICTION_SCORE.prometheus, "", labels=mv)
        for version in ("v7", "v8"):
            cumulative = [(n.format_le(b), total * (0.9 if b < 0.01 else 1.0)) for b in n.DURATION_BUCKETS]
            duration.add_metric([self.model, version], [*cumulative, ("+Inf", total)], sum_value=total * 0.004)
            bins = [(n.format_le(e), total * (i + 1) / (len(EDGES) + 1)) for i, e in enumerate(EDGES)]
            score.add_metric([self.model, version], [*bins, ("+Inf", total)], sum_value=total * 0.5)
        yield duration
        yield score
        difference = HistogramMetricFamily(
            n.SHADOW_SCORE_DIFFERENCE.prometheus, "", labels=[*mv, n.LABEL_SHADOW_VERSION]
        )
        cumulative = [
            (n.format_le(b), total * (0.0 if b < -0.01 else 0.5 if b < 0.01 else 1.0))
            for b in n.SHADOW_DIFFERENCE_BUCKETS
        ]
        difference.add_metric([self.model, "v7", "v8"], [*cumulative, ("+Inf", total)], sum_value=0.0)
        yield difference

    def sidecar(self) -> Iterator[Any]:
        """Labelled pairs: a fifth of the requests labelled, the shadow right slightly more often."""
        from prometheus_client.core import CounterMetricFamily

        on = 1.0 if self.on else 0.0
        labels = [
            n.LABEL_MODEL_NAME,
            n.LABEL_MODEL_VERSION,
            n.LABEL_SHADOW_VERSION,
            n.LABEL_SEGMENT_KEY,
            n.LABEL_SEGMENT,
        ]
        family = CounterMetricFamily(n.SHADOW_LABELLED_PAIRS.prometheus, "", labels=[*labels, n.LABEL_PAIR_OUTCOME])
        shares = dict(zip(n.PAIR_OUTCOMES, (0.85, 0.02, 0.03, 0.10)))
        for key, value, count in self._segments():
            for outcome, share in shares.items():
                family.add_metric([self.model, "v7", "v8", key, value, outcome], on * round(count * 0.2 * share))
        yield family


class _Target:
    """A /metrics endpoint serving one side (app or sidecar) of several models' counters."""

    def __init__(self, models: list[_Counters], side: str) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.models, self.side = models, side
        registry = CollectorRegistry()
        registry.register(self)  # type: ignore[arg-type]
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=registry)

    def collect(self) -> Iterator[Any]:
        for model in self.models:
            yield from getattr(model, self.side)()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


CASES = {  # name: (Argo args, the verdict the query must return)
    "within budget": ({**ARGS, "model-name": "loans", "candidate-version": "v8"}, 1.0),
    "flipping too much": ({**ARGS, "model-name": "cards", "candidate-version": "v8"}, -1.0),
    "50 pairs": ({**ARGS, "model-name": "tiny", "candidate-version": "v8"}, 0.0),
    "zero traffic": ({**ARGS, "model-name": "loans", "candidate-version": "v9"}, 0.0),
    "no such model": ({**ARGS, "model-name": "nope", "candidate-version": "v8"}, 0.0),
}


def _recorded_in_rule_files() -> set[str]:
    groups = [g for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def _check_answers(stack: Any) -> None:
    """Wait for the verdicts that move, then every case: one finite number, the controllers' decisions."""

    def answers() -> dict[str, list[float]]:
        return {
            name: [float(r["value"][1]) for r in stack.query(render_argo(args))] for name, (args, _) in CASES.items()
        }

    # the rules need a scrape of the new values and an evaluation or two
    stack.wait_for(lambda: answers()["flipping too much"] == [-1.0], 60, "a -1 verdict")
    stack.wait_for(lambda: answers()["within budget"] == [1.0], 30, "a 1 verdict")
    got = answers()
    minimum = _commented_snippet(FLAGGER)["spec"]["analysis"]["metrics"][0]["thresholdRange"]["min"]
    for name, (args, expected) in CASES.items():
        (value,) = got[name]  # exactly one number, never an empty result
        assert not math.isnan(value), name
        assert value == expected, (name, render_argo(args), value)
        assert argo_measurement([value]) == {1.0: "Successful", -1.0: "Failed", 0.0: "Inconclusive"}[expected]
        assert (value >= minimum) == (expected == 1.0), name  # Flagger: only promote passes


@pytest.mark.e2e  # about 10 s: two scrapes, a few rule evaluations
def test_the_query_answers_promote_roll_back_and_inconclusive_from_a_real_prometheus(tmp_path: Path) -> None:
    from otel_ml.demo._stack import PrometheusStack, stack_binaries
    from otel_ml.mixin import DEFAULT_CONFIG

    if stack_binaries() is None:
        pytest.skip("apt-get install prometheus prometheus-alertmanager")
    verdict = n.windowed(n.VERSION_VERDICT_RECORD, ARGS["window"])
    assert verdict in _recorded_in_rule_files(), (
        f"{verdict} is not in the committed alert_rules/: run otel-ml mixin generate"
    )
    models = [
        _Counters("loans", flip_share=0.01),  # 1 % flips, well inside the budget
        _Counters("cards", flip_share=0.20),  # 20 % flips
        _Counters("tiny", flip_share=0.0, scale=50 / sum(SEGMENTS.values())),  # a 50-pair window
    ]
    app, sidecar = _Target(models, "app"), _Target(models, "sidecar")
    job = re.fullmatch(r'job="([^"]+)"', DEFAULT_CONFIG.sidecar_selector).group(1)  # type: ignore[union-attr]
    targets = {"loans-app": [app.address], job: [sidecar.address]}
    stack = PrometheusStack(tmp_path, targets=targets, rule_files=RULE_FILES, webhook_url="http://127.0.0.1:9/")
    try:
        stack.start()
        two_scrapes = "count_over_time(up[1m]) >= 2"
        stack.wait_for(lambda: len(stack.query("up == 1")) == 2 and stack.query(two_scrapes), 60, "two scrapes")
        for model in models:
            model.on = True
        _check_answers(stack)
    finally:
        stack.stop()
        app.stop()
        sidecar.stop()
