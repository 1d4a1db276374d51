"""Settings of the sidecar's human-review part: the queue's bounds, the quotas, the webhook."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ._review_rates import RateSettings
from ._review_webhook import WebhookSettings

__all__ = ["ReviewSettings"]


@dataclass(frozen=True)
class ReviewSettings:
    """``review:`` in the sidecar's YAML (see ``exporters/sidecar.yaml``); defaults are production's."""

    queue_file: Path | None = None  # SQLite (WAL); None: beside the state file, else in memory
    max_items: int = 100_000  # items held, pending and labelled; a body that does not fit is a 507
    max_items_per_request: int = 1000  # items of one POST /v1/review/items (413 above)
    retention: float = 7 * 86400.0  # labelled items are kept this long, then deleted
    max_pending_age: float = 30 * 86400.0  # pending items older than this expire (counted "expired")
    synchronous: str = "NORMAL"  # FULL: an fsync per commit, survives power loss too
    rates: RateSettings = field(default_factory=RateSettings)
    webhook: WebhookSettings | None = None
