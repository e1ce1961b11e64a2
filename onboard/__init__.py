"""Register a partner's customer sheet in the Volue Spark Energy Coordination API.

    import onboard

    result = onboard.validate("customers.xlsx")             # or a pandas DataFrame, or a list of dicts
    result = onboard.run(frame, env="local")                # the in-process emulator
    result.results, result.errors, result.summary, result.ok
    result.write("out/")                                    # the usual results, errors and summary files

Every user-facing error is an `onboard.errors.OnboardError` with the message the command line prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["Result", "errors", "run", "run_async", "validate"]

if TYPE_CHECKING:
    from onboard import errors
    from onboard.onboarding import Result, run, run_async, validate


def __getattr__(name: str) -> Any:
    """The public API, imported on first use, so the command line starts without pandas and httpx."""
    if name in ("Result", "run", "run_async", "validate"):
        from onboard import onboarding

        return getattr(onboarding, name)
    if name == "errors":
        import importlib

        return importlib.import_module("onboard.errors")
    raise AttributeError(f"module 'onboard' has no attribute {name!r}")
