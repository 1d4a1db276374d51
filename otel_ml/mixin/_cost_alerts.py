"""Alerts of unit economics: cost per 1K predictions above its budget, stale prices.

Neither judges a sample: cost per 1K is a measured ratio (a configured rate, an allocation or a
bill divided by the rows predicted), so the budget is a fixed threshold, guarded by a minimum
number of predictions in the window so that a quiet model (one call with a large fixed cost)
cannot page. Budgets are per ``ml_cost_basis`` and compare the sum of that basis's sources
(``ml_cost_source="__all__"``); bases are never added together.
"""

from __future__ import annotations

from .. import _names as n
from .._durations import prometheus_duration
from . import _rule_helpers as q
from ._alert_helpers import MODEL_TEXT, TICKET, Rule, alert, label
from .config import MixinConfig

__all__ = ["cost_alerts"]


def _over_budget(c: MixinConfig) -> list[Rule]:
    budgets = c.cost_budget_usd_per_1k
    unknown = sorted(set(budgets) - set(n.COST_BASES))
    if unknown:
        raise ValueError(f"cost_budget_usd_per_1k: unknown ml_cost_basis {unknown}; known: {list(n.COST_BASES)}")
    if any(not budget > 0 for budget in budgets.values()):
        raise ValueError(f"cost_budget_usd_per_1k: budgets must be > 0, got {budgets}")
    if c.cost_budget_min_predictions < 1:
        raise ValueError(f"cost_budget_min_predictions must be >= 1, got {c.cost_budget_min_predictions}")
    if not budgets:
        return []
    w = c.cost_budget_window
    m_on = q.labels(c, *q.MODEL)
    per_1k = n.windowed(n.COST_PER_1K_RECORD, w)
    checks = [
        f'{per_1k}{{{n.LABEL_COST_SOURCE}="{n.ALL}", {n.LABEL_COST_BASIS}="{basis}"}} > {q.num(budget)}'
        for basis, budget in sorted(budgets.items())
    ]
    once = q.app(c, f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"')
    predictions = f"sum by ({m_on}) (increase({n.PREDICTIONS.series}{once}[{w}]))"
    expr = (
        "(\n  "
        + "\n  or\n  ".join(checks)
        + f"\n)\nand on ({m_on})\n{predictions} >= {c.cost_budget_min_predictions}\n"
    )
    listed = ", ".join(f"{basis} ${q.num(budget)}" for basis, budget in sorted(budgets.items()))
    return [
        alert(
            n.ALERT_COST_OVER_BUDGET,
            expr,
            c.cost_budget_for,
            TICKET,
            f"Model {MODEL_TEXT} costs {{{{ $value | humanize }}}} USD per 1,000 predictions "
            f"({label(n.LABEL_COST_BASIS)}), over its budget.",
            f"Over the last {w}, the {label(n.LABEL_COST_BASIS)} cost of {MODEL_TEXT} (every source of that basis "
            f'summed) is {{{{ $value | printf "%.4f" }}}} USD per 1,000 predictions, above the budget ({listed}), '
            f"with at least {c.cost_budget_min_predictions} predictions in the window, for {c.cost_budget_for}. "
            "No statistical test: a fixed threshold on a measured ratio (cost / rows predicted); the minimum "
            "predictions keep a quiet model from paging. Bases are never summed: configured_rate is what the "
            "configured prices say, allocation what OpenCost allocates to the pods, billed what the vendor bills.",
        )
    ]


def _prices_stale(c: MixinConfig) -> Rule:
    if not c.prices_max_age_seconds > 0:
        raise ValueError(f"prices_max_age_seconds must be > 0, got {c.prices_max_age_seconds}")
    prometheus_duration(c.prices_stale_for)
    m_on = q.labels(c, *q.MODEL)
    oldest = f"min by ({m_on}) ({n.PRICE_CONFIG_UPDATED.series}{q.app(c)})"
    days = q.num(c.prices_max_age_seconds / 86400)
    return alert(
        n.ALERT_PRICES_STALE,
        f"time() - {oldest} > {q.num(c.prices_max_age_seconds)}",
        c.prices_stale_for,
        TICKET,
        f"The price table model {MODEL_TEXT} is priced with is older than {days} days.",
        f"The oldest price table a process of {MODEL_TEXT} prices with says it was updated "
        f"{{{{ $value | humanizeDuration }}}} ago, more than {days} days (prices_max_age_seconds), for "
        f"{c.prices_stale_for}. No statistical test: the table's own updated date against a maximum age. "
        "The configured_rate and tokens costs (and cost per 1K) are priced at these rates: a vendor's price "
        "change since then is not in them.",
    )


def cost_alerts(c: MixinConfig) -> list[Rule]:
    """Cost per 1K over budget (one rule, every budgeted basis), prices stale."""
    return [*_over_budget(c), _prices_stale(c)]
