"""Faults the user can fix, each with the message that tells them how.

Raised where the fault is found; the command line renders them once, with no traceback.
"""

from __future__ import annotations

import re


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
    """The token endpoint refused the client's credentials, or answered unlike a token endpoint."""


class ApiUnavailable(OnboardError):
    """The API stopped answering; what is done is kept and the next run resumes."""

    exit_code = 1


class ApiMalformed(OnboardError):
    """The API answered a read with something its contract does not document (a proxy's page, a
    wrong --base-url, a broken service): the run cannot tell what exists, so it stops; what is done
    is kept and the next run resumes."""

    exit_code = 1


class Interrupted(OnboardError):
    """The user pressed Ctrl-C; what is done is kept and the next run resumes."""

    exit_code = 130


# text from outside (a server, a sheet's headers) as it may be shown

_ESCAPES = re.compile(
    r"(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC: window titles, hyperlinks, clipboard
    r"|(?:\x1b[P^_X]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, SOS, PM, APC strings
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI: colours, cursor moves, screen clearing
    r"|\x1b[ -/]*[0-~]?"  # any other escape
)
_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
_LINE_BREAKS = "\n\r\t\v\f\x85\u2028\u2029"
_ONE_LINE = {c: None for c in (*range(0x20), *range(0x7F, 0xA0), *_BIDI)} | {ord(c): " " for c in _LINE_BREAKS}
_LINES = _ONE_LINE | {ord("\n"): "\n", ord("\r"): None}


def printable(text: str, keep_lines: bool = False) -> str:
    """`text` without terminal escape sequences and control characters, so words from a server or
    a sheet can neither repaint the user's terminal nor hide in the output files; line breaks
    become spaces unless `keep_lines`."""
    return _ESCAPES.sub("", text).translate(_LINES if keep_lines else _ONE_LINE)
