"""The price table: what a CPU-hour, a GPU-hour and a million tokens cost, and since when.

Prices are configuration, not code: one file (YAML or JSON) shared by every replica, e.g. from a
ConfigMap, and loaded once when a monitor is made. Costs are computed at capture time with the
prices in force then, so a new table changes costs from that moment on and never rewrites the
past (a PromQL multiplication by today's price would). The table's content hash and its own
``updated`` date are exposed (``ml_price_config_info``, ``ml_price_config_updated_timestamp_seconds``)
so a table nobody has checked for months can page as stale, and two replicas pricing with
different tables show up as two hashes.

Example (``prices.yaml``)::

    updated: 2026-11-20          # when someone last checked these prices (required)
    currency: USD                # the only currency
    compute:
      cpu_hour: 0.0464           # $ per vCPU-hour of CPU time
      gpu_hour: 2.48             # $ per GPU-hour (used with a monitor's gpu_share=)
    tokens:                      # $ per million tokens, by the LLM's name (gen_ai.request.model)
      gpt-4o-mini: {input: 0.15, output: 0.60}
      "*": {input: 1.00, output: 3.00}   # any other model

``OTEL_ML_PRICES`` names the file a monitor loads when it is given no ``prices=``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PRICES_ENV", "PriceError", "Prices", "TokenPrice", "prices_from_env"]

PRICES_ENV = "OTEL_ML_PRICES"
ANY_MODEL = "*"
_MAX_PRICE = 1e6  # $ per unit: anything above is a unit mistake (cents, or per token instead of per million)


class PriceError(ValueError):
    """A price table that cannot be used; the message names the field."""


@dataclass(frozen=True)
class TokenPrice:
    """US dollars per million input and output tokens of one LLM."""

    input: float
    output: float


@dataclass(frozen=True)
class Prices:
    """A validated price table (see the module docstring for the file format).

    ``cpu_hour`` prices ``ml_prediction_cpu_seconds_total``; ``gpu_hour`` prices a call's wall
    time times the GPU share its monitor declares; ``tokens`` prices ``add_tokens`` by the LLM
    name passed there (``"*"``: any other). ``updated`` is the table's own date; ``hash`` the
    first 12 hex digits of the SHA-256 of its canonical JSON.
    """

    updated: _dt.datetime
    cpu_hour: float | None = None
    gpu_hour: float | None = None
    tokens: Mapping[str, TokenPrice] = field(default_factory=dict)
    updated_text: str = ""

    @property
    def hash(self) -> str:
        canonical = {
            "updated": self.updated_text or self.updated.isoformat(),
            "cpu_hour": self.cpu_hour,
            "gpu_hour": self.gpu_hour,
            "tokens": {k: [v.input, v.output] for k, v in sorted(self.tokens.items())},
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def updated_timestamp(self) -> float:
        return self.updated.timestamp()

    @property
    def cpu_second(self) -> float:
        """$ per CPU-second (0 without a CPU price)."""
        return 0.0 if self.cpu_hour is None else self.cpu_hour / 3600.0

    @property
    def gpu_second(self) -> float:
        return 0.0 if self.gpu_hour is None else self.gpu_hour / 3600.0

    def token_price(self, llm: str | None) -> TokenPrice | None:
        """The price of ``llm``'s tokens: its own entry, else ``"*"``, else none (unpriced)."""
        if llm is not None and llm in self.tokens:
            return self.tokens[llm]
        return self.tokens.get(ANY_MODEL)

    @classmethod
    def from_dict(cls, data: Any) -> Prices:
        """A table from parsed YAML/JSON; :class:`PriceError` names the first bad field."""
        if not isinstance(data, Mapping):
            raise PriceError("a price table is a mapping with 'updated', 'compute' and/or 'tokens'")
        unknown = set(data) - {"updated", "currency", "compute", "tokens", "version"}
        if unknown:
            raise PriceError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        if data.get("currency", "USD") != "USD":
            raise PriceError("currency: only USD is supported")
        updated, text = _updated(data.get("updated"))
        compute = data.get("compute") or {}
        if not isinstance(compute, Mapping) or set(compute) - {"cpu_hour", "gpu_hour"}:
            raise PriceError("compute: expected a mapping with cpu_hour and/or gpu_hour")
        tokens = data.get("tokens") or {}
        if not isinstance(tokens, Mapping):
            raise PriceError("tokens: expected a mapping of LLM name to {input, output}")
        return cls(
            updated=updated,
            cpu_hour=_price(compute.get("cpu_hour"), "compute.cpu_hour"),
            gpu_hour=_price(compute.get("gpu_hour"), "compute.gpu_hour"),
            tokens={str(k): _token_price(v, f"tokens.{k}") for k, v in tokens.items()},
            updated_text=text,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Prices:
        """Read a YAML (``.yaml``/``.yml``) or JSON table; :class:`PriceError` when it is not one."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceError(f"cannot read the price table {p}: {exc.strerror or exc}") from None
        try:
            if p.suffix.lower() in (".yaml", ".yml"):
                import yaml  # only a YAML table needs it

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:
            raise PriceError(f"{p}: not valid {p.suffix.lstrip('.') or 'JSON'} ({type(exc).__name__})") from None
        try:
            return cls.from_dict(data)
        except PriceError as exc:
            raise PriceError(f"{p}: {exc}") from None


def _updated(value: Any) -> tuple[_dt.datetime, str]:
    """The table's ``updated`` as an aware datetime (a date is its UTC midnight) and as written."""
    if isinstance(value, _dt.datetime):
        when = value
    elif isinstance(value, _dt.date):  # YAML parses 2026-11-20 into a date
        when = _dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        try:
            when = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise PriceError("updated: expected a date like 2026-11-20 or an RFC 3339 time") from None
    else:
        raise PriceError("updated: required (the date these prices were last checked)")
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    text = value.isoformat() if isinstance(value, (_dt.date, _dt.datetime)) else str(value).strip()
    return when, text[:64]


def _price(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PriceError(f"{where}: expected a number of US dollars")
    price = float(value)
    if not (math.isfinite(price) and 0.0 <= price <= _MAX_PRICE):
        raise PriceError(f"{where}: expected a finite price between 0 and {_MAX_PRICE:g}")
    return price


def _token_price(value: Any, where: str) -> TokenPrice:
    if not isinstance(value, Mapping) or set(value) != {"input", "output"}:
        raise PriceError(f"{where}: expected {{input: $/1M tokens, output: $/1M tokens}}")
    return TokenPrice(
        _price(value["input"], where + ".input") or 0.0, _price(value["output"], where + ".output") or 0.0
    )


def prices_from_env() -> Prices | None:
    """The table named by ``OTEL_ML_PRICES``, or ``None`` when it is not set."""
    path = os.environ.get(PRICES_ENV)
    return Prices.load(path) if path else None
