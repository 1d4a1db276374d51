"""The ``otel-ml`` command line: one sub-command group per area, each defined next to its code.

Every area module exposes ``register(subparsers)``; heavy or optional dependencies are
imported inside the command functions, with an install hint when they are missing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ._version import __version__

__all__ = ["main", "build_parser"]

# Modules that add sub-commands, in the order --help lists them.
_COMMAND_MODULES = (
    "otel_ml.demo._cli",
    "otel_ml.baseline._cli",
    "otel_ml.sidecar._cli",
    "otel_ml.drift._cli",
    "otel_ml.skew._cli",
    "otel_ml.mixin._cli",
)

DESCRIPTION = """\
otel-ml makes ML models in production observable with the tools SREs already run:
OpenTelemetry spans and metrics from a @monitor decorator, a sidecar that computes drift and
decision-rate changes for Prometheus, and alert rules, runbooks and Grafana dashboards.

typical flow:
  otel-ml baseline fit train.parquet --model fraud --version v3 --score-column score -o fraud-v3.baseline.json
  otel-ml sidecar --baseline fraud-v3.baseline.json --scrape http://127.0.0.1:8000/metrics
  otel-ml drift fraud-v3.baseline.json last-week.parquet --fail-on drift
  otel-ml demo        # the whole loop on this machine, with embedded defaults
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-ml", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"otel-ml {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeat for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
