"""``otel-ml demo``: the README's first command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]

DESCRIPTION = """\
Run the whole otel-ml loop on this machine, live in the terminal: a scikit-learn model served
behind @monitor, the sidecar computing drift and decision rates, traffic with delayed labels,
then three production faults one after another (a numeric feature shifts, a category is
renamed upstream, one region's flag rate collapses). If Debian's prometheus and
prometheus-alertmanager are installed (apt-get install prometheus prometheus-alertmanager),
they run on loopback with the shipped alert rules and the pages they deliver are shown too.
Each fault gets a PASS/FAIL line: did its expected page (alert name and labels) arrive.
Everything binds 127.0.0.1 and stops when the demo ends (3 to 5 minutes by default).
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole loop locally: model, sidecar, faults, alerts",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--phase-seconds",
        type=float,
        default=40.0,
        help="length of the clean phase and of each fault phase (default 40); with Prometheus, a fault "
        "phase runs on for up to as long again until the fault's expected page arrives",
    )
    p.add_argument("--rate", type=float, default=120.0, help="requests per second sent to the model (default 120)")
    p.add_argument("--window", default="1m", help="the sidecar window shown and alerted on (default 1m)")
    p.add_argument(
        "--no-prometheus", action="store_true", help="do not start Prometheus/Alertmanager even if installed"
    )
    p.add_argument("--workdir", type=Path, help="keep the baseline, rules, configs and logs here (default: a temp dir)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        from ._run import DemoOptions, run_demo
    except ImportError as exc:  # scikit-learn / pandas come with the demo extra
        print(f"otel-ml demo needs the demo extra: pip install 'otel-ml[demo]' ({exc})")
        return 2
    return run_demo(
        DemoOptions(
            phase_seconds=args.phase_seconds,
            rate=args.rate,
            window=args.window,
            use_prometheus=not args.no_prometheus,
            workdir=args.workdir,
        )
    )
