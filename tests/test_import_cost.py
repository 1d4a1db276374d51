"""What ``import otel_ml`` (and a monitored call) loads: only what the app's own path needs.

The OTel metrics SDK waits for the OTLP export, scipy for drift statistics, and the CLI's,
sidecar's and mixin's dependencies (pyarrow, pandas, starlette, uvicorn, yaml, httpx) for
those commands; ``bench/instrumentation.py`` measures the time and memory this saves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT = ("scipy", "pyarrow", "pandas", "starlette", "uvicorn", "yaml", "httpx", "opentelemetry.sdk.metrics")
OWN_ABSENT = (
    "otel_ml.sidecar",
    "otel_ml.mixin",
    "otel_ml.cli",
    "otel_ml.drift",
    "otel_ml.baseline._fit",
    "otel_ml.skew",
)

APP = """
import json, sys
import otel_ml
from prometheus_client import CollectorRegistry
mon = otel_ml.ModelMonitor("m", "1", decision=0.5, registry=CollectorRegistry())
predict = mon(lambda row: 0.7)
for _ in range(3):
    predict({"x": 1.0})
mon.counters.snapshot()
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(code: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _offending(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_the_app_path_imports_no_sdk_metrics_scipy_or_command_dependencies() -> None:
    modules = _loaded(APP)
    assert "otel_ml.instrument._counters" in modules  # the check looks at the right process
    assert _offending(modules, ABSENT) == []
    assert _offending(modules, OWN_ABSENT) == []


def test_the_lazy_names_still_resolve_and_load_their_modules() -> None:
    code = (
        "import json, sys\n"
        "from otel_ml import fit_baseline, start_otlp_exporter\n"
        "import otel_ml\n"
        "assert fit_baseline.__module__ == 'otel_ml' and otel_ml.OtlpMetricsPusher.__module__ == 'otel_ml'\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    modules = _loaded(code)
    assert "otel_ml.baseline._fit" in modules and "opentelemetry.sdk.metrics" in modules


def test_lazy_names_are_listed_by_dir() -> None:
    """``dir()`` (completion, ``help()``) lists the names loaded on first use too."""
    import otel_ml
    import otel_ml.baseline
    import otel_ml.instrument

    assert {"fit_baseline", "start_otlp_exporter", "OtlpMetricsPusher"} <= set(dir(otel_ml))
    assert {"fit_baseline", "read_table", "quantile_edges"} <= set(dir(otel_ml.baseline))
    assert {"start_otlp_exporter", "counts_metrics_data"} <= set(dir(otel_ml.instrument))
