"""Recording rules of unit economics: cost per 1,000 predictions with a declared basis.

The app counts ``ml_cost_usd_total{ml_cost_source, ml_cost_basis}`` (compute at a configured
rate, api as billed, tokens at the price table's rate) and its predictions (one per row, so a
batch's cost divides by its rows). Prometheus adds the ``allocation`` basis itself, from
OpenCost's exporter: each pod's cost per second is its CPU, memory and GPU allocation priced at
its node's hourly rates (joined ``on(node)``: both sides carry ``node``, while ``instance`` is
the scrape target's unless OpenCost is scraped with ``honor_labels``), split between the models
it serves by their shares of the pod's predictions (the app's series carry ``namespace`` and
``pod`` from Kubernetes service discovery).

Bases are never summed together: each ``ml:cost_per_1k_predictions:<w>`` series is one
(source, basis), plus ``ml_cost_source="__all__"``, the sum of the sources of one basis, which
the budget alert reads. Every ratio divides by ``(x > 0)``, so a window without predictions (or
without process CPU) records no sample, never NaN or 0.
"""

from __future__ import annotations

from .. import _names as n
from .._durations import prometheus_duration
from . import _rule_helpers as q
from ._rule_helpers import Rule, record
from .config import MixinConfig

__all__ = ["COST", "cost_rules", "cost_windows"]

COST: tuple[str, ...] = (*q.MODEL, n.LABEL_COST_SOURCE, n.LABEL_COST_BASIS)
SEGMENT_COST: tuple[str, ...] = (*COST, n.LABEL_SEGMENT_KEY, n.LABEL_SEGMENT)
POD: tuple[str, ...] = (n.LABEL_NAMESPACE, n.LABEL_POD)
GIB = 2**30  # OpenCost prices memory per GiB-hour; its allocation is in bytes


def cost_windows(c: MixinConfig) -> list[str]:
    """The configured cost windows plus the budget alert's, shortest first."""
    for w in (*c.cost_windows, c.cost_budget_window):
        prometheus_duration(w)
    return sorted({*c.cost_windows, c.cost_budget_window}, key=prometheus_duration)


def _opencost(c: MixinConfig) -> str:
    return q.selector(c.opencost_selector)


def _priced(c: MixinConfig, allocation: str, price: str, scale: str = "") -> str:
    """Per pod: a container allocation (deduplicated across scrapes) times its node's hourly price."""
    pod, node = q.labels(c, *POD), q.labels(c, n.LABEL_NODE)
    per_container = q.labels(c, *POD, n.LABEL_CONTAINER, n.LABEL_NODE)
    return f"""sum by ({pod}) (
    max by ({per_container}) ({allocation}{_opencost(c)}){scale}
    * on ({node}) group_left ()
    max by ({node}) ({price}{_opencost(c)})
  )"""


def pod_cost_rule(c: MixinConfig) -> Rule:
    """USD per second of each pod at OpenCost's node prices: CPU + memory + GPU (absent parts count 0)."""
    pod = q.labels(c, *POD)
    cpu = _priced(c, n.OPENCOST_CPU_ALLOCATION, n.OPENCOST_NODE_CPU_COST)
    ram = _priced(c, n.OPENCOST_MEMORY_ALLOCATION, n.OPENCOST_NODE_RAM_COST, f" / {GIB}")
    gpu = _priced(c, n.OPENCOST_GPU_ALLOCATION, n.OPENCOST_NODE_GPU_COST)
    expr = f"""
(
  {cpu}
  + on ({pod})
  ({ram} or 0 * {cpu})
  + on ({pod})
  ({gpu} or 0 * {cpu})
)
/ 3600
"""
    return record(n.POD_ALLOCATION_COST_RECORD, expr)


def _predictions(c: MixinConfig, w: str, by: tuple[str, ...], *matchers: str) -> str:
    sel = q.app(c, f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"', *matchers)
    return f"sum by ({q.labels(c, *by)}) (rate({n.PREDICTIONS.series}{sel}[{w}]))"


def allocation_rules(c: MixinConfig) -> list[Rule]:
    """Instant, per model: the allocated cost of its pods and the predictions it pays for.

    Each pod's cost is split by the models' shares of its predictions over ``recording_window``;
    only pods OpenCost prices count, in the cost and in the predictions alike, and only once the
    model's counter in the pod is a window old (before that its rate understates the traffic). Both are recorded
    at every evaluation, so over a window their ``avg_over_time`` averages the same instants: their
    ratio is cost / predictions over the time the model ran, also for pods younger than the window
    (a counter's ``rate`` over a window longer than its life would understate the predictions).
    """
    pod, m_on = q.labels(c, *POD), q.labels(c, *q.MODEL)
    w = c.recording_window
    share = n.windowed(n.POD_PREDICTION_SHARE_RECORD, w)
    in_pod = f'{n.LABEL_POD}!=""'
    m_pod = q.labels(c, *q.MODEL, *POD)
    sel = q.app(c, f'{n.LABEL_SEGMENT_KEY}="{n.ALL}"', in_pod)
    # only model pods counting for a whole recording window: a younger counter's rate is too low
    counted = f"sum by ({m_pod}) ({n.PREDICTIONS.series}{sel} offset {w})"
    per_pod = f"({_predictions(c, w, (*q.MODEL, *POD), in_pod)} and on ({m_pod}) {counted})"
    pod_cost = n.POD_ALLOCATION_COST_RECORD
    return [
        record(share, f"{per_pod}\n/ on ({pod}) group_left ()\n(sum by ({pod}) ({per_pod}) > 0)"),
        record(
            n.ALLOCATION_COST_RECORD, f"sum by ({m_on}) (\n  {share}\n  * on ({pod}) group_left ()\n  {pod_cost}\n)"
        ),
        # the same instants as the cost above (0 while the model idles in a busy pod), so that their
        # avg_over_time ratio is cost / predictions; the rules of a group see the ones before them
        record(
            n.ALLOCATION_PREDICTIONS_RECORD,
            f"sum by ({m_on}) (\n  {per_pod}\n  and on ({pod})\n  {pod_cost}\n)\n"
            f"and on ({m_on})\n{n.ALLOCATION_COST_RECORD}",
        ),
    ]


def _tag(expr: str, source: str) -> str:
    """``expr`` labelled with the allocation basis and ``source``."""
    return (
        f'label_replace(label_replace(\n  {expr},\n  "{n.LABEL_COST_BASIS}", "{n.BASIS_ALLOCATION}", "", ""),\n'
        f'  "{n.LABEL_COST_SOURCE}", "{source}", "", "")'
    )


def _with_all_sources(c: MixinConfig, series: str, keys: tuple[str, ...]) -> str:
    """``series`` and, per basis, the sum of its sources as ``ml_cost_source="__all__"``."""
    without_source = q.labels(c, *(k for k in keys if k != n.LABEL_COST_SOURCE))
    total = f"sum by ({without_source}) ({series})"
    return f'(\n  {series}\n  or\n  label_replace({total}, "{n.LABEL_COST_SOURCE}", "{n.ALL}", "", "")\n)'


def _window_rules(c: MixinConfig, w: str) -> list[Rule]:
    m_on, s_on = q.labels(c, *q.MODEL), q.labels(c, *q.SEGMENT)
    rate = n.windowed(n.COST_RATE_RECORD, w)
    has_segment, not_all = f'{n.LABEL_SEGMENT_KEY}!=""', f'{n.LABEL_SEGMENT_KEY}!="{n.ALL}"'
    app_basis = q.selector("", f'{n.LABEL_COST_BASIS}!="{n.BASIS_ALLOCATION}"')
    app_cost = f"sum by ({q.labels(c, *COST)}) (rate({n.COST.series}{q.app(c)}[{w}]))"
    allocated = f"avg_over_time({n.ALLOCATION_COST_RECORD}[{w}])"
    per_1k_allocated = (
        f"1000 * {allocated}\n  / on ({m_on})\n  (avg_over_time({n.ALLOCATION_PREDICTIONS_RECORD}[{w}]) > 0)"
    )
    app_per_1k = (
        f"1000 * {_with_all_sources(c, rate + app_basis, COST)}\n"
        f"/ on ({m_on}) group_left ()\n({_predictions(c, w, q.MODEL)} > 0)"
    )
    segment_cost = f"sum by ({q.labels(c, *SEGMENT_COST)}) (rate({n.COST.series}{q.app(c, has_segment)}[{w}]))"
    segment_predictions = f"sum by ({s_on}) (rate({n.PREDICTIONS.series}{q.app(c, not_all)}[{w}]))"
    cpu = f"sum by ({m_on}) (rate({n.PREDICTION_CPU.series}{q.app(c)}[{w}]))"
    process = f"sum by ({m_on}) (rate({n.PROCESS_CPU.series}{q.app(c)}[{w}]))"
    return [
        record(rate, f"{app_cost}\nor\n{_tag(allocated, n.COST_COMPUTE)}"),
        record(
            n.windowed(n.COST_PER_1K_RECORD, w),
            f"{app_per_1k}\nor\n{_tag(per_1k_allocated, n.COST_COMPUTE)}\nor\n{_tag(per_1k_allocated, n.ALL)}",
        ),
        record(
            n.windowed(n.SEGMENT_COST_PER_1K_RECORD, w),
            f"1000 * {_with_all_sources(c, segment_cost, SEGMENT_COST)}\n/ on ({s_on}) group_left ()\n"
            f"({segment_predictions} > 0)",
        ),
        record(n.windowed(n.CPU_ATTRIBUTION_RECORD, w), f"{cpu}\n/ on ({m_on})\n({process} > 0)"),
    ]


def cost_rules(c: MixinConfig) -> list[Rule]:
    """Pod cost at OpenCost's prices, then per window: cost rates, cost per 1K, CPU attribution."""
    rules = [pod_cost_rule(c), *allocation_rules(c)]
    for w in cost_windows(c):
        rules += _window_rules(c, w)
    return rules
