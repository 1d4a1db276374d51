"""``otel-ml dashboards export|import`` and ``otel-ml mixin generate``.

The installed wheel carries no ``dashboards/`` folder (STYLE.md pitfall 2), so every command
generates the files from :data:`DEFAULT_CONFIG` instead of copying committed ones; the
committed tree is the same output, kept in sync by a test.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    dashboards = sub.add_parser(
        "dashboards",
        help="export the Grafana dashboards, or import them into Grafana",
        description="The fleet overview and single-model Grafana dashboards, generated from code.",
    )
    cmds = dashboards.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)

    export = cmds.add_parser(
        "export",
        help="write the dashboard JSON and Grafana provisioning YAML to DIR",
        description="Write otel-ml-fleet.json, otel-ml-model.json and provisioning/*.yaml to DIR "
        "(for Grafana file provisioning or a manual import).",
    )
    export.add_argument("directory", metavar="DIR", help="output directory (created if missing)")
    export.set_defaults(func=_export)

    upload = cmds.add_parser(
        "import",
        help="upload the dashboards to Grafana into a folder, overwriting older versions",
        description="Upload the dashboards with Grafana's HTTP API into a folder (created when "
        "missing). Dashboards keep their uids, so re-importing replaces the older version.",
    )
    upload.add_argument(
        "--grafana-url", metavar="URL", help="Grafana base URL, e.g. http://127.0.0.1:3000 (default: $GRAFANA_URL)"
    )
    upload.add_argument(
        "--token",
        metavar="TOKEN",
        help="service account token with the Editor role (default: $GRAFANA_TOKEN; "
        "prefer the variable, command lines are visible to other users)",
    )
    upload.add_argument("--folder", help="Grafana folder title (default: the config's grafana_folder)")
    upload.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request (default: 10)")
    upload.set_defaults(func=_import)

    mixin = sub.add_parser(
        "mixin",
        help="generate the operations kit (dashboards, alert and recording rules)",
        description="Generate the files committed under dashboards/ and alert_rules/.",
    )
    mixin_cmds = mixin.add_subparsers(dest="mixin_command", metavar="ACTION", required=True)
    generate = mixin_cmds.add_parser(
        "generate",
        help="write dashboards/ and alert_rules/ under the output directory",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    generate.add_argument("--output-dir", default=".", metavar="DIR", help="repository root to write into")
    generate.set_defaults(func=_generate)


def _export(args: argparse.Namespace) -> int:
    from .config import DEFAULT_CONFIG
    from .dashboards import write_dashboards

    for path in write_dashboards(DEFAULT_CONFIG, args.directory):
        print(f"wrote {path}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from .config import DEFAULT_CONFIG
    from .dashboards import build_dashboards
    from .grafana import GrafanaError, upload_dashboards

    url = args.grafana_url or os.environ.get("GRAFANA_URL")
    if not url:
        print("otel-ml dashboards import: pass --grafana-url or set GRAFANA_URL", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("GRAFANA_TOKEN") or None
    folder = args.folder or DEFAULT_CONFIG.grafana_folder
    try:
        uploaded = upload_dashboards(
            build_dashboards(DEFAULT_CONFIG), url=url, token=token, folder=folder, timeout=args.timeout
        )
    except GrafanaError as exc:
        print(f"otel-ml dashboards import: {exc}", file=sys.stderr)
        return 1
    for item in uploaded:
        print(
            f"imported {item.filename} into folder {folder!r}: uid {item.uid}, version {item.version}"
            + (f", {item.url}" if item.url else "")
        )
    return 0


def _generate(args: argparse.Namespace) -> int:
    from .config import DEFAULT_CONFIG
    from .dashboards import write_dashboards

    root = Path(args.output_dir)
    written = write_dashboards(DEFAULT_CONFIG, root / "dashboards")
    # The rules half of the kit is optional here so each half can land on its own.
    try:
        rules = importlib.import_module("otel_ml.mixin.rules")
    except ImportError:
        rules = None
    write_rule_files = getattr(rules, "write_rule_files", None)
    if write_rule_files is not None:
        written.extend(Path(p) for p in write_rule_files(DEFAULT_CONFIG, root / "alert_rules"))
    else:
        print("note: otel_ml.mixin.rules.write_rule_files not available; alert_rules/ not generated", file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return 0
