"""``pkg.mod:attr`` strings to objects, the way ``python -m`` finds modules (current directory first)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__all__ = ["ImportSpecError", "import_object"]


class ImportSpecError(ValueError):
    """A ``pkg.mod:attr`` that does not name an importable object."""


def import_object(spec: str) -> Any:
    """The object ``spec`` (``pkg.mod:attr``, ``attr`` may be dotted) names; the current directory is
    searched first, like ``python -m``, so a project's own training code imports without installing it."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ImportSpecError(f"{spec!r}: expected 'package.module:attribute'")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportSpecError(f"{spec!r}: cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module's own code raised while importing: still bad input
        raise ImportSpecError(f"{spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportSpecError(f"{spec!r}: {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ImportSpecError(f"{spec!r}: {attr!r} is a {type(obj).__name__}, not a callable")
    return obj
