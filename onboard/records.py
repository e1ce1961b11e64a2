"""Rows of the partner's sheet validated into users, locations and resources."""

from __future__ import annotations


def has_valid_check_digit(digits: str) -> bool:
    """GS1 mod-10 check over an all-digit id (GSRN meter point ids are 18 digits)."""
    if not digits.isascii() or not digits.isdigit() or len(digits) < 2:
        return False
    body, check = digits[:-1], int(digits[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check
