"""``otel-ml dashboards export|import`` and ``otel-ml mixin generate``.

The installed wheel carries no ``dashboards/`` folder (package data outside the package is not
installed), so every command generates the files from :data:`DEFAULT_CONFIG` instead of
copying committed ones; the
committed tree is the same output, kept in sync by a test. ``--config overrides.yaml`` sets
:class:`MixinConfig` fields from a file first (how a team adapts the kit without editing code).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import MixinConfig

__all__ = ["register"]

_CONFIG_HELP = "YAML file of MixinConfig fields to override (team, thresholds, for: durations, selectors, ...)"


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help=_CONFIG_HELP)


def _config(args: argparse.Namespace) -> MixinConfig:
    """The defaults, with the overrides of ``--config`` (ValueError names the file and key)."""
    from .config import DEFAULT_CONFIG, load_config

    return load_config(args.config) if args.config else DEFAULT_CONFIG


def _run(func: Any) -> Any:
    """A command that reports a bad config or file as one line and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except (ValueError, OSError) as exc:
            print(f"otel-ml: {exc}", file=sys.stderr)
            return 2

    return run


def _group(sub: Any, name: str, help: str, description: str) -> Any:
    """A command group (``otel-ml NAME ACTION``) whose ACTION is required."""
    group = sub.add_parser(name, help=help, description=description)
    return group.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)


def register(sub: Any) -> None:
    cmds = _group(
        sub,
        "dashboards",
        help="export the Grafana dashboards, or import them into Grafana",
        description="The fleet overview and single-model Grafana dashboards, generated from code.",
    )

    export = cmds.add_parser(
        "export",
        help="write the dashboard JSON and Grafana provisioning YAML to DIR",
        description="Write otel-ml-fleet.json, otel-ml-model.json and provisioning/*.yaml to DIR "
        "(for Grafana file provisioning or a manual import).",
    )
    export.add_argument("directory", metavar="DIR", help="output directory (created if missing)")
    _add_config(export)
    export.set_defaults(func=_run(_export))

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
    _add_config(upload)
    upload.set_defaults(func=_run(_import))

    mixin_cmds = _group(
        sub,
        "mixin",
        help="generate the operations kit (dashboards, alert and recording rules)",
        description="Generate the files committed under dashboards/ and alert_rules/.",
    )
    generate = mixin_cmds.add_parser(
        "generate",
        help="write dashboards/ and alert_rules/ under the output directory",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    generate.add_argument("--output-dir", default=".", metavar="DIR", help="repository root to write into")
    _add_config(generate)
    generate.set_defaults(func=_run(_generate))


def _export(args: argparse.Namespace) -> int:
    from .generate import write_dashboards

    for path in write_dashboards(_config(args), args.directory):
        print(f"wrote {path}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from .dashboards import build_dashboards
    from .grafana import GrafanaError, upload_dashboards

    url = args.grafana_url or os.environ.get("GRAFANA_URL")
    if not url:
        print("otel-ml dashboards import: pass --grafana-url or set GRAFANA_URL", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("GRAFANA_TOKEN") or None
    config = _config(args)
    folder = args.folder or config.grafana_folder
    try:
        uploaded = upload_dashboards(
            build_dashboards(config), url=url, token=token, folder=folder, timeout=args.timeout
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
    from .generate import write_mixin

    for path in write_mixin(_config(args), args.output_dir):
        print(f"wrote {path}")
    return 0
