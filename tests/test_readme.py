"""The README is part of the product: its metric table and its two commands must stay true."""

from __future__ import annotations

import re
from pathlib import Path

from otel_ml import _names as n

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _instruments() -> list[n.Instrument]:
    return [v for v in vars(n).values() if isinstance(v, n.Instrument)]


def test_every_metric_is_in_the_readme_table() -> None:
    missing = [i.series for i in _instruments() if i.series not in README and i.prometheus not in README]
    assert missing == []


def test_every_label_of_the_table_exists() -> None:
    labels = {v for k, v in vars(n).items() if k.startswith("LABEL_") and isinstance(v, str)}
    mentioned = set(re.findall(r"`(ml_[a-z_]+|error_type|reason|le)`", README))
    metric_names = {i.series for i in _instruments()} | {i.prometheus for i in _instruments()}
    unknown = {
        m
        for m in mentioned
        if m not in labels and m not in metric_names and not any(m.startswith(name) for name in metric_names)
    }
    assert unknown == set()


def test_the_two_commands() -> None:
    block = re.search(r"## The two commands\n\n```sh\n(.*?)```", README, re.S)
    assert block is not None
    first, second = [line.split("#")[0].strip() for line in block.group(1).strip().splitlines()]
    assert first.endswith("otel-ml demo")
    assert second == "./scripts/test"
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_linked_files_exist() -> None:
    for link in re.findall(r"\]\(((?:exporters|runbooks|dashboards|alert_rules)/[^)]+)\)", README):
        assert (ROOT / link).exists(), link
