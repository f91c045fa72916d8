"""xafsflow.xas: edge finding and edge-step normalization of XAFS spectra.

``normalize_edge``, ``normalize_stack``, ``find_e0``, ``edge_step_stability``
and the result type ``EdgeNormalization`` are re-exported from
:mod:`xafsflow.xas.normalize`. They are loaded on first access (module
``__getattr__``), so ``import xafsflow.xas`` stays light: SciPy is imported
only when one of them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from xafsflow.xas.normalize import (
        EdgeNormalization,
        edge_step_stability,
        find_e0,
        normalize_edge,
        normalize_stack,
    )

_LAZY = {
    "EdgeNormalization": "xafsflow.xas.normalize",
    "edge_step_stability": "xafsflow.xas.normalize",
    "find_e0": "xafsflow.xas.normalize",
    "normalize_edge": "xafsflow.xas.normalize",
    "normalize_stack": "xafsflow.xas.normalize",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
