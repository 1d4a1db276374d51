"""``otel-ml demo``: the whole loop on one machine, live in the terminal.

A real model behind ``@monitor`` in a small HTTP model server, the sidecar scraping it, traffic
with delayed labels, then three production faults injected one after another. With Debian's
``prometheus`` and ``prometheus-alertmanager`` installed, the real servers run on loopback with
the shipped alert rules (generated with demo-length durations) and the pages Alertmanager
delivers are shown as they arrive, each with the fault that caused it; the demo ends with a
pass/fail line per fault (its expected page, by alert name and labels, arrived or not).
Without them the sidecar's verdicts are the show.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from .. import _names as n
from .._prices import Prices
from .._review_sampling import stratified_error_rate
from ..mixin import DEFAULT_CONFIG, MixinConfig
from ..sidecar import ScrapeTarget, Sidecar, SidecarConfig
from ..sidecar._config import parse_listen
from ._faults import FAULTS, Fault
from ._model import MODEL_NAME, MODEL_VERSION, SEGMENT, DemoModel, train_demo_model
from ._server import EXPLAIN_LLM, ModelServer
from ._stack import PUSHGATEWAY, PrometheusStack, free_port, stack_binaries
from ._traffic import Traffic
from ._verdict import PageLedger
from ._webhook import WebhookReceiver

__all__ = ["DemoOptions", "run_demo", "demo_mixin_config"]

STATUS = {
    n.DRIFT_STATUS_INSUFFICIENT: "[dim]no data[/]",
    n.DRIFT_STATUS_OK: "[green]ok[/]",
    n.DRIFT_STATUS_WARN: "[yellow]warn[/]",
    n.DRIFT_STATUS_DRIFT: "[bold red]DRIFT[/]",
}


DEMO_CPU_HOUR = 0.0464  # $ per vCPU-hour: an on-demand general-purpose cloud instance's


def demo_prices() -> Prices:
    """A price table checked today: CPU at a cloud price, the explanation LLM's tokens."""
    return Prices.from_dict(
        {
            "updated": time.strftime("%Y-%m-%d"),
            "compute": {"cpu_hour": DEMO_CPU_HOUR},
            "tokens": {EXPLAIN_LLM: {"input": 0.15, "output": 0.60}},
        }
    )


def _console() -> Console:
    """The terminal's width; 160 columns when piped or logged (rich would otherwise use 80)."""
    console = Console()
    return console if console.is_terminal or "COLUMNS" in os.environ else Console(width=160)


@dataclass
class DemoOptions:
    phase_seconds: float = 40.0
    rate: float = 120.0  # requests per second
    window: str = "1m"
    use_prometheus: bool = True
    workdir: Path | None = None
    console: Console = field(default_factory=_console)


def demo_mixin_config(window: str, scrape: str = "1s") -> MixinConfig:
    """The shipped rules with demo-length ``for:`` durations and the demo's sidecar window."""
    short = "10s"
    return DEFAULT_CONFIG.with_overrides(
        alert_window=window,
        sidecar_windows=(window,),
        drift_for=short,
        score_drift_for=short,
        decision_rate_for=short,
        missing_for=short,
        unknown_for=short,
        missing_min_count=50,
        unknown_min_count=50,
        performance_short_window=window,
        performance_long_window=window,
        performance_min_labels=20,
        sidecar_down_for=short,
        ingest_stale_seconds=60,
        ingest_stale_for=short,
        ingest_error_for=short,
        keep_firing_for=short,  # the demo never restarts its sidecar
        # the shadow comparison over the demo's window (alerts read it) and the dashboards' windows
        version_windows=(window, *DEFAULT_CONFIG.version_windows),
        version_alert_for=short,
        version_rollback_for=short,
        shadow_drop_window=window,
        shadow_drop_for=short,
        runbook_url_pattern=_runbook_pattern(),
    )


def _runbook_pattern() -> str:
    """Local runbook files when run from a checkout, else the published ones."""
    local = Path.cwd() / "runbooks"
    return f"file://{local}/{{alertname}}.md" if local.is_dir() else DEFAULT_CONFIG.runbook_url_pattern


class Demo:
    def __init__(self, options: DemoOptions) -> None:
        self.o = options
        self.phase = "starting"
        self.started = time.monotonic()
        self.stack: PrometheusStack | None = None
        self.webhook: WebhookReceiver | None = None
        self.app: ModelServer | None = None
        self.ledger = PageLedger(FAULTS)

    # -- views ------------------------------------------------------------------------------------
    def _outputs(self, sidecar: Sidecar) -> dict[str, list[tuple[dict[str, str], float]]]:
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for inst, labels, value in sidecar.state.outputs():
            served = labels.get(n.LABEL_MODEL_VERSION, MODEL_VERSION) == MODEL_VERSION  # not the shadow's
            if served and labels.get(n.LABEL_WINDOW, self.o.window) == self.o.window:
                out.setdefault(inst.prometheus, []).append((labels, value))
        return out

    def _features_table(self, out: dict[str, list[tuple[dict[str, str], float]]]) -> Table:
        by_feature: dict[str, dict[str, float]] = {}
        for name in (
            "ml_feature_psi",
            "ml_feature_psi_critical",
            "ml_feature_js_distance",
            "ml_feature_drift_status",
            "ml_feature_window_observations",
            "ml_feature_unknown_ratio",
        ):
            for labels, value in out.get(name, []):
                by_feature.setdefault(labels[n.LABEL_FEATURE], {})[name] = value
        features = Table(title=f"feature drift, window {self.o.window} (sidecar)", expand=True)
        for col in ("feature", "PSI", "critical", "JS", "unknown", "n", "status"):
            features.add_column(col, justify="right" if col not in ("feature", "status") else "left")
        for name, v in sorted(by_feature.items(), key=lambda kv: -kv[1].get("ml_feature_psi", -1)):
            features.add_row(
                name,
                _fmt(v.get("ml_feature_psi")),
                _fmt(v.get("ml_feature_psi_critical")),
                _fmt(v.get("ml_feature_js_distance")),
                _fmt(v.get("ml_feature_unknown_ratio"), "{:.0%}"),
                f"{int(v.get('ml_feature_window_observations', 0)):,}",
                STATUS.get(int(v.get("ml_feature_drift_status", -1)), "?"),
            )
        return features

    def view(self, sidecar: Sidecar, traffic: Traffic) -> Group:
        out = self._outputs(sidecar)
        features = self._features_table(out)
        segments = Table(title=f"flag rate by {SEGMENT} (decision=true)", expand=True)
        for col in ("segment", "flag rate", "vs previous window", "vs baseline", "predictions"):
            segments.add_column(col, justify="right" if col != "segment" else "left")
        counts = {
            lab[n.LABEL_SEGMENT]: v
            for lab, v in out.get("ml_segment_window_predictions", [])
            if lab[n.LABEL_SEGMENT_KEY] == SEGMENT
        }
        changes: dict[tuple[str, str], float] = {
            (lab[n.LABEL_SEGMENT], lab[n.LABEL_REFERENCE]): v
            for lab, v in out.get("ml_segment_decision_rate_change", [])
            if lab[n.LABEL_SEGMENT_KEY] == SEGMENT and lab[n.LABEL_DECISION] == "true"
        }
        for lab, rate in sorted(out.get("ml_segment_decision_rate", []), key=lambda x: x[0][n.LABEL_SEGMENT]):
            if lab[n.LABEL_SEGMENT_KEY] != SEGMENT or lab[n.LABEL_DECISION] != "true":
                continue
            seg = lab[n.LABEL_SEGMENT]
            segments.add_row(
                seg,
                f"{rate:.0%}",
                _fmt(changes.get((seg, n.REFERENCE_PREVIOUS)), "{:+.0%}"),
                _fmt(changes.get((seg, n.REFERENCE_BASELINE)), "{:+.0%}"),
                f"{int(counts.get(seg, 0)):,}",
            )
        parts: list[Any] = [
            Panel(
                f"[bold]{self.phase}[/]   t={time.monotonic() - self.started:4.0f}s   requests {traffic.sent:,}"
                f"   labels {traffic.labelled:,}   errors {traffic.failed}",
                title="otel-ml demo",
            ),
            features,
            segments,
        ]
        perf = {
            lab[n.LABEL_SEGMENT]: v for lab, v in out.get("ml_online_recall", []) if lab[n.LABEL_SEGMENT_KEY] == n.ALL
        }
        if perf:
            parts.append(f"online recall (delayed labels, window {self.o.window}): {perf.get(n.ALL, float('nan')):.0%}")
        parts.append(self._economics(traffic))
        parts.append(self._pages_table())
        return Group(*parts)

    def _economics(self, traffic: Traffic) -> str:
        """Cost per 1K predictions (CPU at the demo's price) and the reviewers' weighted error rate."""
        app = self.app
        if app is None:
            return ""
        snapshot = app.monitor.counters.snapshot()
        served = sum(count for key, _, _, count in snapshot.predictions if key == n.ALL)
        compute = sum(c[4] for c in snapshot.usage.costs if c[2] == n.COST_COMPUTE) / 1e9
        tokens = sum(c[4] for c in snapshot.usage.costs if c[2] == n.COST_TOKENS) / 1e9
        line = (
            f"cost per 1K predictions: CPU ${1000 * compute / served:.5f} (at ${DEMO_CPU_HOUR}/h),"
            f" explanation tokens ${1000 * tokens / served:.4f}"
            if served
            else ""
        )
        population = {(seg, stratum): p for _, seg, stratum, p, _ in (snapshot.review.rows if snapshot.review else ())}
        strata = [k for k in traffic.reviews if k in population]
        if strata:
            p, se = stratified_error_rate(
                [population[k] for k in strata],
                [traffic.reviews[k][0] for k in strata],
                [traffic.reviews[k][1] for k in strata],
            )
            reviewed = sum(traffic.reviews[k][0] for k in strata)
            line += f"   human review: {reviewed:,} reviewed, weighted error rate {p:.1%} +- {se:.1%}"
        return line

    def _skew(self, model: DemoModel, capture: Path, baseline: Path) -> str:
        """Replay the captured requests through the training pipeline (and push the result to the
        stack's Pushgateway): the online copy keeps ``worst_area`` as an integer; what does it cost?"""
        from ..skew import SkewInputError, push, replay
        from ._features import ROUNDED, training_features

        try:
            report = replay(capture, training_features, model.score, baseline=baseline, model_name=MODEL_NAME)
        except SkewInputError as exc:
            return f"training/serving skew: no replay ({exc})"
        pushed = ""
        if self.stack is not None and self.stack.pgw_port:
            try:
                push(report, self.stack.pushgateway_url)
                pushed = f" (pushed to {self.stack.pushgateway_url})"
            except OSError as exc:
                pushed = f" (not pushed: {exc})"
        v = next(v for v in report.versions if v.version == MODEL_VERSION)
        rounded = v.feature(ROUNDED)
        differ = rounded.compared - rounded.counts[n.SKEW_MATCH]
        others = sum(f.compared - f.counts[n.SKEW_MATCH] for f in v.features if f.name != ROUNDED)
        d = v.score_difference
        return (
            f"\n[bold]training/serving skew[/] (otel-ml skew replay of {v.rows:,} captured requests through the "
            f"training pipeline): {ROUNDED} differs on {differ:,} rows ({rounded.counts[n.SKEW_BIN_CHANGE]:,} in "
            f"another baseline bin), other features differ on {others:,}; |score difference| p99 "
            f"{_fmt(d.p99_abs, '{:.5f}')}, max {_fmt(d.max_abs, '{:.5f}')}; decisions flipped: {v.flips_total:,}"
            f"{pushed}"
        )

    def _pages_table(self) -> Any:
        if self.webhook is None:
            return (
                "[dim]Prometheus/Alertmanager not running: apt-get install prometheus prometheus-alertmanager "
                "to see the pages too[/]"
            )
        pages = Table(title="pages delivered by Alertmanager (webhook)", expand=True)
        for col in ("status", "alert", "severity", "where", "cause", "summary"):
            pages.add_column(col, overflow="fold")
        for delivery in self.ledger.deliveries.values():
            labels = delivery.labels
            cause = self.ledger.explain(delivery)
            pages.add_row(
                delivery.status,
                labels["alertname"],
                labels.get("severity", ""),
                _where(labels),
                f"[bold red]{cause}[/]" if cause.startswith("UNEXPECTED") else cause,
                delivery.summary,
            )
        return pages

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> int:
        o = self.o
        console = o.console
        workdir = o.workdir or Path(tempfile.mkdtemp(prefix="otel-ml-demo-"))
        workdir.mkdir(parents=True, exist_ok=True)
        console.print(
            f"[bold]otel-ml demo[/]: training a scikit-learn model (breast cancer data, "
            f"shipped with scikit-learn); working directory {workdir}"
        )
        model = train_demo_model()
        baseline_paths = [model.baseline.save(workdir / "risk-v1.baseline.json")]
        if model.candidate_baseline is not None:  # the shadow version: its own series, pairs and labels
            baseline_paths.append(model.candidate_baseline.save(workdir / "risk-v2.baseline.json"))
        sidecar_url = f"http://127.0.0.1:{free_port()}"
        tracer_provider = TracerProvider(resource=Resource.create({"service.name": "risk-model"}))
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=sidecar_url + "/v1/traces"), schedule_delay_millis=500)
        )
        prices = demo_prices()
        app = ModelServer(
            model,
            tracer_provider=tracer_provider,
            review_url=sidecar_url,
            prices=prices,
            capture_dir=workdir / "capture",
        ).start()
        self.app = app
        sidecar = self._sidecar(workdir, baseline_paths, sidecar_url, app.url)
        traffic = Traffic(
            model, app.url, rate=o.rate, labels_url=sidecar.url + "/v1/labels", review_url=sidecar.url
        ).start()
        try:
            if o.use_prometheus and stack_binaries():
                self._start_stack(workdir, app.url, sidecar.url)
            elif o.use_prometheus:
                console.print("[yellow]prometheus/prometheus-alertmanager not found: running without them[/]")
            schedule: list[tuple[str, Fault | None]] = [("clean traffic", None)]
            schedule += [(f"fault {i + 1}/{len(FAULTS)}: {f.title}", f) for i, f in enumerate(FAULTS)]
            with Live(
                self.view(sidecar, traffic), console=console, refresh_per_second=2, transient=False, auto_refresh=False
            ) as live:
                for number, (title, fault) in enumerate(schedule):
                    self.phase = title
                    if fault is not None:
                        traffic.inject(fault)
                        self.ledger.inject(number, self._now())
                    end = time.monotonic() + o.phase_seconds
                    while time.monotonic() < end or self._waiting_for(number, end + o.phase_seconds):
                        time.sleep(1.0)
                        self._collect_pages()
                        live.update(self.view(sidecar, traffic), refresh=True)
                self.phase = "done"
                live.update(self.view(sidecar, traffic), refresh=True)
            skew = self._skew(model, workdir / "capture", baseline_paths[0])
            status = self._summary()
            console.print(skew)
        finally:
            traffic.stop()
            app.stop()
            tracer_provider.shutdown()
            if self.stack is not None:
                self.stack.stop()
            if self.webhook is not None:
                self.webhook.stop()
            sidecar.stop()
        return status

    def _sidecar(self, workdir: Path, baselines: list[Path], url: str, app_url: str) -> Sidecar:
        config = SidecarConfig(
            baselines=tuple(baselines),
            listen=parse_listen(url.removeprefix("http://")),
            scrape=(ScrapeTarget(app_url + "/metrics", 1.0, 1.0),),
            windows=(self.o.window,),
            persist_interval=5.0,
            state_file=workdir / "sidecar-state.npz",
        )
        return Sidecar(config).start()

    def _start_stack(self, workdir: Path, app_url: str, sidecar_url: str) -> None:
        from ..mixin.generate import write_rule_files

        config = demo_mixin_config(self.o.window)
        rules = [p for p in write_rule_files(config, workdir / "rules") if "prometheusrule" not in p.name]
        self.webhook = WebhookReceiver().start()
        self.stack = PrometheusStack(
            workdir / "stack",
            targets={
                "risk-model": [app_url.removeprefix("http://")],
                "otel-ml-sidecar": [sidecar_url.removeprefix("http://")],
            },
            rule_files=rules,
            webhook_url=self.webhook.url,
            pushgateway=shutil.which(PUSHGATEWAY) is not None,  # where the skew replay pushes
        ).start()
        self.o.console.print(f"Prometheus {self.stack.prometheus_url}   Alertmanager {self.stack.alertmanager_url}")

    def _now(self) -> float:
        return time.monotonic() - self.started

    def _waiting_for(self, number: int, deadline: float) -> bool:
        """A fault phase runs on, up to another phase length, until the fault's own pages arrive."""
        if self.webhook is None or number == 0 or time.monotonic() >= deadline:
            return False
        return not self.ledger.paged(number)

    def _collect_pages(self) -> None:
        if self.webhook is not None:
            self.ledger.update(self.webhook.alerts(), self._now())

    def _summary(self) -> int:
        """One pass/fail line per fault, then the pages no fault explains; 1 if anything failed."""
        console = self.o.console
        console.print("\n[bold]what on-call saw:[/]")
        if self.webhook is None:
            for number, fault in enumerate(FAULTS, 1):
                console.print(f"  fault {number}: {fault.title}: expected {fault.expect} (pages not checked)")
            return 0
        verdicts = self.ledger.verdicts()
        for v in verdicts:
            mark = "[bold green]PASS[/]" if v.passed else "[bold red]FAIL[/]"
            console.print(f"  {mark} fault {v.number}: {v.fault.title}: {'; '.join(v.lines)}")
        surprises = self.ledger.surprises()
        for d in surprises:
            console.print(f"  [bold red]UNEXPECTED[/] {d.labels['alertname']} {_where(d.labels)} at {d.at:.0f}s")
        for d in list(self.ledger.deliveries.values())[:1]:
            console.print(f"  e.g. runbook: {self._runbook(d.labels['alertname'])}")
        passed = sum(v.passed for v in verdicts)
        console.print(
            f"  {passed}/{len(verdicts)} faults paged as expected, {len(surprises)} unexpected page(s), "
            f"{len(self.ledger.deliveries)} page(s) in all"
        )
        return 0 if passed == len(verdicts) and not surprises else 1

    def _runbook(self, alertname: str) -> str:
        return demo_mixin_config(self.o.window).runbook_url(alertname)


def _where(labels: dict[str, str]) -> str:
    parts = [f"{n.LABEL_FEATURE}={labels[n.LABEL_FEATURE]}"] if n.LABEL_FEATURE in labels else []
    if n.LABEL_SEGMENT in labels:
        parts.append(f"{labels.get(n.LABEL_SEGMENT_KEY, '')}={labels[n.LABEL_SEGMENT]}")
    parts += [f"{k}={labels[k]}" for k in (n.LABEL_DECISION, n.LABEL_REFERENCE) if k in labels]
    return ", ".join(parts)


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if value is None or value != value else pattern.format(value)


def run_demo(options: DemoOptions | None = None) -> int:
    return Demo(options or DemoOptions()).run()
