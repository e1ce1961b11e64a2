"""Faults the user can fix, each with the message that tells them how.

Raised where the fault is found; the command line renders them once, with no traceback.
"""

from __future__ import annotations


class OnboardError(Exception):
    """A problem in the user's data, files, configuration or credentials."""

    exit_code = 2


class UsageError(OnboardError):
    """The command line itself is not right."""


class InputError(OnboardError):
    """The input file cannot be read as a customer sheet."""


class ConfigError(OnboardError):
    """Settings, credentials or the environment are missing or wrong."""


class AuthError(OnboardError):
    """The token endpoint refused the client's credentials."""


class ApiUnavailable(OnboardError):
    """The API stopped answering; what is done is kept and the next run resumes."""

    exit_code = 1


class Interrupted(OnboardError):
    """The user pressed Ctrl-C; what is done is kept and the next run resumes."""

    exit_code = 130
