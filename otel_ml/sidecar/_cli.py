"""``otel-ml sidecar``: run the exporter next to a model server."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

DESCRIPTION = """\
Run the otel-ml sidecar next to a model server. It takes the app's telemetry (by scraping its
/metrics, or as OTLP/HTTP pushed to /v1/metrics), keeps rolling windows, and exposes drift
(PSI with sample-size-aware critical values, JS distance, chi-square p-values), per-segment
decision rates and their change, coverage and performance on /metrics for Prometheus: realised
(AUC, precision/recall/F1, calibration, from labels posted to /v1/labels and joined to the
predictions waiting in an on-disk SQLite store, or carried by signed tokens) and estimated
before labels arrive (CBPE). Binds 127.0.0.1 unless --listen says otherwise.

examples:
  otel-ml sidecar --baseline fraud-v3.baseline.json --scrape http://127.0.0.1:8000/metrics
  otel-ml sidecar --baseline fraud-v3.baseline.json --listen 0.0.0.0:9464 --state-file /var/lib/otel-ml/state.npz
  otel-ml sidecar --baseline fraud-v3.baseline.json --metrics-listen 0.0.0.0:9465   # ingest stays on loopback
  otel-ml sidecar --baseline fraud-v3.baseline.json --state-file state.npz --token-key-file /run/secrets/otel-ml-token
  otel-ml sidecar --config /etc/otel-ml/sidecar.yaml
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sidecar",
        help="run the drift/decision-rate exporter next to a model server",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML config (models, scrape targets, windows, limits); flags override it")
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="FILE",
        help="baseline JSON of a model version to watch (repeat for several)",
    )
    p.add_argument(
        "--scrape",
        action="append",
        default=[],
        metavar="URL",
        help="app /metrics URL to scrape (repeat for several); omit when the app pushes OTLP",
    )
    p.add_argument("--scrape-interval", help="time between scrapes (default 15s)")
    p.add_argument("--scrape-timeout", help="scrape timeout (default 5s)")
    p.add_argument("--listen", help="HOST:PORT to serve everything on, ingest included (default 127.0.0.1:9464)")
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="optional second listener serving only GET /metrics, /healthz and /readyz (e.g. the pod IP)",
    )
    p.add_argument(
        "--window",
        action="append",
        default=[],
        metavar="DURATION",
        help="rolling window, e.g. 1h (repeat; default 1h, 24h, 7d)",
    )
    p.add_argument("--state-file", help="where to snapshot state so windows survive restarts")
    p.add_argument("--persist-interval", default=None, help="time between state snapshots (default 30s)")
    p.add_argument(
        "--token-file", help="file holding a bearer token required on ingest endpoints (or set OTEL_ML_SIDECAR_TOKEN)"
    )
    p.add_argument("--max-body-bytes", type=int, help="largest accepted request body (default 8 MiB)")
    p.add_argument(
        "--join-store",
        metavar="FILE",
        help="SQLite file of predictions waiting for labels (default: beside --state-file; in memory without one)",
    )
    p.add_argument("--join-ttl", metavar="DURATION", help="how long a prediction waits for its label (default 32d)")
    p.add_argument(
        "--join-max-bytes", type=int, help="join store size cap; above it request ids are hash-sampled (512 MiB)"
    )
    p.add_argument(
        "--token-key-file",
        metavar="FILE",
        help="HMAC key(s) of signed prediction tokens, one per line, newest first (labels by token need no store)",
    )
    p.add_argument(
        "--review-queue",
        metavar="FILE",
        help="SQLite file of items waiting for human review (default: beside --state-file; in memory without one)",
    )
    p.add_argument("--review-webhook", metavar="URL", help="POST new review items here (at least once, in seq order)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..baseline import BaselineError
    from ._app import Sidecar
    from ._config import ConfigError, ScrapeTarget, SidecarConfig, _seconds, parse_listen

    try:
        config = SidecarConfig.from_yaml(args.config) if args.config else SidecarConfig(baselines=())
        changes: dict[str, Any] = {}
        if args.baseline:
            changes["baselines"] = tuple(Path(b) for b in args.baseline)
        if args.scrape:
            times = {
                key: _seconds(value, f"--scrape-{key}")
                for key, value in (("interval", args.scrape_interval), ("timeout", args.scrape_timeout))
                if value is not None
            }
            changes["scrape"] = tuple(ScrapeTarget(u, **times) for u in args.scrape)
        if args.listen:
            changes["listen"] = parse_listen(args.listen)
        if args.metrics_listen:
            changes["metrics_listen"] = parse_listen(args.metrics_listen)
        if args.window:
            changes["windows"] = tuple(args.window)
        if args.state_file:
            changes["state_file"] = Path(args.state_file)
        if args.persist_interval:
            changes["persist_interval"] = _seconds(args.persist_interval, "--persist-interval")
        if args.max_body_bytes:
            changes["http"] = replace(config.http, max_body_bytes=args.max_body_bytes)
        changes["state"] = _join_flags(args, config)
        token = os.environ.get("OTEL_ML_SIDECAR_TOKEN")
        if args.token_file:
            token = Path(args.token_file).read_text().strip()
        if token:
            changes["token"] = token
        config = replace(config, **changes)
        if not config.baselines:
            raise ConfigError("give at least one --baseline (or models: in --config)")
        config.window_specs()
        sidecar = Sidecar(config)
    except (ConfigError, BaselineError, OSError) as exc:
        print(f"otel-ml sidecar: {exc}", file=sys.stderr)
        return 2
    try:
        sidecar.run()
    except OSError as exc:  # e.g. the port is taken
        listeners = [a for a in (config.listen, config.metrics_listen) if a is not None]
        where = " or ".join(f"{host}:{port}" for host, port in listeners)
        print(f"otel-ml sidecar: cannot listen on {where}: {exc}", file=sys.stderr)
        return 1
    return 0


def _join_flags(args: argparse.Namespace, config: Any) -> Any:
    """The state settings with the join-store flags applied over the config file's."""
    from dataclasses import replace

    from ._config import _seconds, token_keys

    state, limits = config.state, config.state.limits
    if args.join_store:
        state = replace(state, join_store=Path(args.join_store))
    if args.join_ttl:
        state = replace(state, join_ttl=_seconds(args.join_ttl, "--join-ttl"))
    if args.join_max_bytes:
        state = replace(state, limits=replace(limits, join_max_bytes=args.join_max_bytes))
    if args.token_key_file:
        state = replace(state, token_keys=token_keys(Path(args.token_key_file)))
    if args.review_queue:
        state = replace(state, review=replace(state.review, queue_file=Path(args.review_queue)))
    if args.review_webhook:
        from ._review_webhook import WebhookSettings

        state = replace(state, review=replace(state.review, webhook=WebhookSettings(args.review_webhook)))
    return state
