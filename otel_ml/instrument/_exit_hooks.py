"""Exit hooks that run in ``multiprocessing``'s fork children too.

A child of a fork-context ``multiprocessing`` process leaves with ``os._exit``: ``atexit`` hooks never
run there, only the finalizers ``multiprocessing.util`` registers. The counters' flush, the review
client's last send and the capture spool's last write must run at either exit.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
from collections.abc import Callable

__all__ = ["at_exit"]

_hooks: list[_ChildExit] = []  # register_after_fork keeps weak references: these keep them alive


class _ChildExit:
    """Registers ``fn`` as a finalizer in each fork child (``multiprocessing`` calls it after the fork)."""

    def __init__(self, fn: Callable[[], None], priority: int) -> None:
        self.fn = fn
        self.priority = priority

    def __call__(self, _: object) -> None:
        multiprocessing.util.Finalize(None, self.fn, exitpriority=self.priority)


def at_exit(fn: Callable[[], None], priority: int = 100) -> None:
    """Run ``fn`` at the interpreter's exit and at a ``multiprocessing`` fork child's (higher
    ``priority`` first among the finalizers)."""
    hook = _ChildExit(fn, priority)
    _hooks.append(hook)
    multiprocessing.util.register_after_fork(hook, hook)
    atexit.register(fn)
