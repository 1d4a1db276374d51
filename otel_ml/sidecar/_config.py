"""Sidecar configuration: command-line flags or one YAML file, validated with clear errors.

Example (``exporters/sidecar.yaml`` is the annotated version)::

    listen: 127.0.0.1:9464
    metrics_listen: 0.0.0.0:9465   # optional: GET /metrics, /healthz, /readyz only
    models:
      - baseline: /etc/otel-ml/fraud-v3.baseline.json
    scrape:
      - url: http://127.0.0.1:8000/metrics
        interval: 15s
    windows: [1h, 24h, 7d]
    state_file: /var/lib/otel-ml/sidecar.npz
    review:                        # optional: the human-review queue and quotas
      max_items: 100000
      quota: 20
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._durations import parse_duration
from ..drift import MULTIPLICITY, DecisionSettings, Multiplicity
from ._outputs import OutputSettings
from ._review_config import ReviewSettings
from ._review_rates import RateSettings
from ._review_webhook import WebhookSettings
from ._series import LimitSettings
from ._server import HttpLimits
from ._state import StateSettings
from ._windows import DEFAULT_RESOLUTION, DEFAULT_WINDOWS, WindowSpec

__all__ = ["SidecarConfig", "ScrapeTarget", "ConfigError", "parse_listen"]


class ConfigError(ValueError):
    """A configuration problem; the message names the setting."""


@dataclass(frozen=True)
class ScrapeTarget:
    url: str
    interval: float = 15.0
    timeout: float = 5.0


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"listen: expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass(frozen=True)
class SidecarConfig:
    """Everything the sidecar needs; defaults are the production defaults.

    ``windows`` (at ``resolution`` snapshots per window) replace the windows of ``state``: they
    are kept as written so a flag can override them and errors can quote them."""

    baselines: tuple[Path, ...]
    listen: tuple[str, int] = ("127.0.0.1", 9464)
    metrics_listen: tuple[str, int] | None = None  # a second, read-only listener (e.g. the pod IP)
    scrape: tuple[ScrapeTarget, ...] = ()
    windows: tuple[str, ...] = DEFAULT_WINDOWS
    resolution: int = DEFAULT_RESOLUTION
    state_file: Path | None = None
    persist_interval: float = 30.0
    token: str | None = None
    http: HttpLimits = field(default_factory=HttpLimits)
    state: StateSettings = field(default_factory=StateSettings)
    extra: dict[str, Any] = field(default_factory=dict)

    def window_specs(self) -> tuple[WindowSpec, ...]:
        try:
            specs = tuple(WindowSpec.parse(w, self.resolution) for w in self.windows)
        except ValueError as exc:
            raise ConfigError(f"windows: {exc}") from None
        if len({s.name for s in specs}) != len(specs):
            raise ConfigError("windows: duplicate window")
        return specs

    def state_settings(self) -> StateSettings:
        """The state's settings; the join store sits beside the state file unless placed elsewhere."""
        join_store = self.state.join_store
        if join_store is None and self.state_file is not None:
            join_store = self.state_file.with_name(self.state_file.stem + ".joins.sqlite")
        review = self.state.review
        if review.queue_file is None and self.state_file is not None:
            review = replace(review, queue_file=self.state_file.with_name(self.state_file.stem + ".review.sqlite"))
        return replace(self.state, windows=self.window_specs(), join_store=join_store, review=review)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> SidecarConfig:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return cls.from_mapping(data, base=Path(path).parent)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path = Path(".")) -> SidecarConfig:
        known = {
            "listen",
            "metrics_listen",
            "models",
            "scrape",
            "windows",
            "resolution",
            "state_file",
            "persist_interval",
            "ingest_token",
            "ingest_token_file",
            "limits",
            "drift",
            "decisions",
            "labels",
            "source_ttl",
            "review",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown settings {unknown}; expected some of {sorted(known)}")
        kwargs: dict[str, Any] = {
            "baselines": _baselines(data, base),
            "scrape": _scrape_targets(data),
            "token": _token(data, base),
            **_top_level(data, base),
            **_section_settings(data, base),
        }
        config = cls(**kwargs)
        config.window_specs()
        return config


def _baselines(data: dict[str, Any], base: Path) -> tuple[Path, ...]:
    models = data.get("models") or []
    if not isinstance(models, list) or not models:
        raise ConfigError("models: list at least one {baseline: PATH}")
    baselines = []
    for i, m in enumerate(models):
        if not isinstance(m, dict) or "baseline" not in m:
            raise ConfigError(f"models[{i}]: expected {{baseline: PATH}}")
        baselines.append((base / str(m["baseline"])).resolve())
    return tuple(baselines)


def _scrape_targets(data: dict[str, Any]) -> tuple[ScrapeTarget, ...]:
    scrape = []
    for i, s in enumerate(data.get("scrape") or []):
        if isinstance(s, str):
            s = {"url": s}
        if not isinstance(s, dict) or "url" not in s:
            raise ConfigError(f"scrape[{i}]: expected {{url: URL, interval: 15s, timeout: 5s}}")
        times = {key: _seconds(s[key], f"scrape[{i}].{key}") for key in ("interval", "timeout") if key in s}
        scrape.append(ScrapeTarget(str(s["url"]), **times))
    return tuple(scrape)


def _token(data: dict[str, Any], base: Path) -> str | None:
    token = data.get("ingest_token")
    if data.get("ingest_token_file"):
        try:
            token = (base / str(data["ingest_token_file"])).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"ingest_token_file: {exc}") from None
    return None if token is None else str(token)


def _top_level(data: dict[str, Any], base: Path) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if "listen" in data:
        kwargs["listen"] = parse_listen(str(data["listen"]))
    if data.get("metrics_listen"):
        kwargs["metrics_listen"] = parse_listen(str(data["metrics_listen"]))
    if "windows" in data:
        kwargs["windows"] = tuple(str(w) for w in data["windows"])
    if "resolution" in data:
        kwargs["resolution"] = int(data["resolution"])
    if data.get("state_file"):
        kwargs["state_file"] = (base / str(data["state_file"])).resolve()
    if "persist_interval" in data:
        kwargs["persist_interval"] = _seconds(data["persist_interval"], "persist_interval")
    return kwargs


def _section_settings(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """``http`` and ``state`` from the limits, labels, drift and decisions sections (and
    ``source_ttl``); anything left over in a section is an error."""
    state: dict[str, Any] = {}
    if "source_ttl" in data:
        state["source_ttl"] = _seconds(data["source_ttl"], "source_ttl")
    limits, labels, drift = _section(data, "limits"), _section(data, "labels"), _section(data, "drift")
    budgets = _pop(
        limits,
        int,
        "max_body_bytes",
        "segment_budget",
        "label_budget",
        "max_series_per_model",
        "max_sources_per_model",
        "max_segment_combinations",
        "max_predictions_per_request",
    )
    http: dict[str, Any] = {"max_body_bytes": budgets.pop("max_body_bytes")} if "max_body_bytes" in budgets else {}
    budgets.update(_pop(limits, float, "max_count"))
    if "read_timeout" in limits:
        http["read_timeout"] = _seconds(limits.pop("read_timeout"), "limits.read_timeout")
    if "join_ttl" in labels:
        state["join_ttl"] = _seconds(labels.pop("join_ttl"), "labels.join_ttl")
    budgets.update(_pop(labels, int, "join_max_bytes"))
    state.update(_pop(labels, str, "negative_outcome"))
    if "multiclass" in labels:
        multiclass = labels.pop("multiclass")
        if not isinstance(multiclass, bool):
            raise ConfigError(f"labels.multiclass must be true or false, got {multiclass!r}")
        state["multiclass"] = multiclass
    if "join_store" in labels:
        state["join_store"] = (base / str(labels.pop("join_store"))).resolve()
    if "token_key_file" in labels:
        state["token_keys"] = token_keys(base / str(labels.pop("token_key_file")))
    outputs = {
        **_pop(labels, str, "positive_decision", "positive_outcome"),
        **_pop(drift, float, "alpha", "warn", "drift"),
    }
    if "alpha" in outputs and not 0.0 < outputs["alpha"] < 1.0:
        raise ConfigError(f"drift.alpha must be between 0 and 1, got {outputs['alpha']}")
    if "multiplicity" in drift:
        outputs["multiplicity"] = _multiplicity(drift.pop("multiplicity"), "drift.multiplicity")
    for section, rest in (("limits", limits), ("drift", drift), ("labels", labels)):
        if rest:
            raise ConfigError(f"{section}: unknown settings {sorted(rest)}")
    outputs.update(_decision_settings(data))
    if "review" in data:
        state["review"] = review_settings(_section(data, "review"), base)
    settings = StateSettings(limits=LimitSettings(**budgets), outputs=OutputSettings(**outputs), **state)
    return {"http": HttpLimits(**http), "state": settings}


def _positive(section: dict[str, Any], kind: type, where: str, *keys: str) -> dict[str, Any]:
    try:
        out = _pop(section, kind, *keys)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {', '.join(keys)} must be numbers") from None
    for key, value in out.items():
        if not value > 0:
            raise ConfigError(f"{where}.{key} must be > 0, got {value}")
    return out


def review_settings(section: dict[str, Any], base: Path) -> ReviewSettings:
    """The ``review:`` section: the queue's file and bounds, the daily quotas, the webhook."""
    kwargs: dict[str, Any] = _positive(section, int, "review", "max_items", "max_items_per_request")
    if "queue_file" in section:
        kwargs["queue_file"] = (base / str(section.pop("queue_file"))).resolve()
    for key in ("retention", "max_pending_age"):
        if key in section:
            kwargs[key] = _seconds(section.pop(key), f"review.{key}")
    if "synchronous" in section:
        kwargs["synchronous"] = str(section.pop("synchronous")).upper()
        if kwargs["synchronous"] not in ("NORMAL", "FULL"):
            raise ConfigError("review.synchronous must be NORMAL or FULL")
    rates = _positive(section, float, "review", "quota", "threshold_quota", "segment_floor")
    if "window" in section:
        rates["window"] = _seconds(section.pop("window"), "review.window")
    kwargs["rates"] = RateSettings(**rates)
    webhook = section.pop("webhook", None)
    if webhook:
        kwargs["webhook"] = _webhook(webhook, base)
    if section:
        raise ConfigError(f"review: unknown settings {sorted(section)}")
    return ReviewSettings(**kwargs)


def _webhook(value: Any, base: Path) -> WebhookSettings:
    hook = {"url": value} if isinstance(value, str) else value
    if not isinstance(hook, dict) or not str(hook.get("url", "")).startswith(("http://", "https://")):
        raise ConfigError("review.webhook: expected {url: http(s)://..., batch: 100, timeout: 5s}")
    hook = dict(hook)
    kwargs: dict[str, Any] = {"url": str(hook.pop("url"))}
    kwargs.update(_positive(hook, int, "review.webhook", "batch"))
    for key in ("timeout", "interval", "max_backoff"):
        if key in hook:
            kwargs[key] = _seconds(hook.pop(key), f"review.webhook.{key}")
    if "token_file" in hook:
        try:
            kwargs["token"] = (base / str(hook.pop("token_file"))).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"review.webhook.token_file: {exc}") from None
    if hook:
        raise ConfigError(f"review.webhook: unknown settings {sorted(hook)}")
    return WebhookSettings(**kwargs)


def token_keys(path: Path) -> tuple[bytes, ...]:
    """The HMAC keys of prediction tokens in a key file (see :func:`otel_ml._token.load_token_keys`)."""
    from .. import _token

    try:
        return _token.load_token_keys(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"token key file {path}: {exc}") from None


def _pop(section: dict[str, Any], kind: type, *keys: str) -> dict[str, Any]:
    """The ``keys`` present in ``section``, converted with ``kind`` and removed from it."""
    return {key: kind(section.pop(key)) for key in keys if key in section}


def _multiplicity(value: Any, where: str) -> Multiplicity:
    if value not in MULTIPLICITY:
        raise ConfigError(f"{where}: expected one of {', '.join(MULTIPLICITY)}, got {value!r}")
    return value  # type: ignore[no-any-return]


def _decision_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The decisions section: the segment decision-rate test (see otel_ml.drift.DecisionSettings)."""
    section = _section(data, "decisions")
    kwargs: dict[str, Any] = {}
    for key in ("alpha", "min_relative_change", "min_absolute_change", "min_count"):
        if key in section:
            kwargs[key] = float(section.pop(key))
    if "multiplicity" in section:
        kwargs["multiplicity"] = _multiplicity(section.pop("multiplicity"), "decisions.multiplicity")
    if section:
        raise ConfigError(f"decisions: unknown settings {sorted(section)}")
    try:
        return {"decisions": DecisionSettings(**kwargs)} if kwargs else {}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a mapping")
    return dict(value)


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_duration(str(value), positive=True)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
