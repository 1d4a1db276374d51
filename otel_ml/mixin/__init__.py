"""The operations kit as code: alert and recording rules, dashboards, all from :class:`MixinConfig`."""

from .config import DEFAULT_CONFIG, MixinConfig, dashboard_uid, load_config

__all__ = ["DEFAULT_CONFIG", "MixinConfig", "dashboard_uid", "load_config"]
