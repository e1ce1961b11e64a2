"""A local emulator of the Energy Coordination API: the project's stand-in for the real service."""

from onboard.emulator.app import create_app
from onboard.emulator.faults import EmulatorSettings
from onboard.emulator.store import Store

__all__ = ["create_app", "EmulatorSettings", "Store"]
