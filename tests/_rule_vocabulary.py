"""Names a PromQL expression in our rules or runbooks may use, and a checker for typos.

Shared by test_alert_rules.py and test_runbooks.py (not collected: no ``test_`` prefix).
A misspelt metric or label in a rule silently matches nothing, so every ``ml_...`` and
``ml:...`` token must be a series, label or recording rule otel-ml really produces.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import yaml

from otel_ml import _names as n
from otel_ml.mixin.config import DEFAULT_CONFIG
from otel_ml.mixin.rules import recording_groups

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL = shutil.which("promtool")
NO_PROMTOOL = "promtool not installed (CI installs Debian's prometheus package: apt-get install prometheus)"

_TOKEN = re.compile(r"\bml[_:][A-Za-z0-9_:]*")


def known_names() -> set[str]:
    names: set[str] = set()
    for value in vars(n).values():
        if isinstance(value, n.Instrument):
            names.add(value.series)
            if value.kind == "histogram":
                names.update(value.prometheus + s for s in ("_bucket", "_count", "_sum"))
        elif isinstance(value, str) and value.startswith("ml_"):
            names.add(value)  # label names (ml_model_name, ml_window, ...)
    names.add("ml_feature_kind")  # label added by the fleet PSI recording rules
    names.update(r["record"] for g in recording_groups(DEFAULT_CONFIG) for r in g["rules"])
    return names


def unknown_tokens(exprs: Iterable[str]) -> set[str]:
    """``ml_``/``ml:`` tokens that are neither otel-ml series, labels nor recording rules."""
    known = known_names()
    return {t for e in exprs for t in _TOKEN.findall(e) if t not in known}


def promtool_check(exprs: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on the expressions wrapped as recording rules (a PromQL parse check)."""
    rules = [{"record": f"check:expr{i}", "expr": e} for i, e in enumerate(exprs.values())]
    path = tmp / "exprs.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    assert PROMTOOL
    return subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
