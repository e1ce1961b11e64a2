"""A local emulator of the Energy Coordination API: the project's stand-in for the real service."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onboard.emulator.app import create_app
    from onboard.emulator.faults import EmulatorSettings
    from onboard.emulator.store import Store

__all__ = ["create_app", "EmulatorSettings", "Store"]

_HOMES = {"create_app": "onboard.emulator.app", "EmulatorSettings": "onboard.emulator.faults",
          "Store": "onboard.emulator.store"}


def __getattr__(name: str) -> Any:
    """Each export imported when first asked for: the command line reads the knobs' settings model
    without loading the app and its web framework."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
