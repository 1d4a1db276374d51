"""Public names imported on first use (PEP 562), for the packages whose import must stay light.

``import otel_ml`` in a model server must not pay for the OTel metrics SDK, baseline fitting or
the sidecar; each package lists those names with the module that defines them and gets its
``__getattr__`` and ``__dir__`` from :func:`lazy_names`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    namespace: dict[str, Any], modules: Mapping[str, str], *, rename: bool = False
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package: ``modules`` maps a name to its module (relative
    to the package, or absolute). A name is imported once, then held in the package like any
    other; ``rename`` shows it under the package's path (reprs and docs, as for httpx)."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        if rename:
            value.__module__ = package
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        """The lazy names too, for ``dir()``, ``help()`` and completion."""
        return sorted({*namespace, *modules})

    return __getattr__, __dir__
