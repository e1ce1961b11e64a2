"""Enrolling the sheet's users in the program (`run --enroll`), once they and their sites are registered.

A user can only be enrolled once eligible, and the guide's sandbox makes a user eligible through a
location inside a test area: so enrollment waits until every site of the sheet is settled. It is
journalled like the rest (kind `enrollment`, keyed by user ID), and an already enrolled user is
`exists`: the API refuses a second enrollment, and a look at the user's enrollment tells which.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from onboard.api import Answer, Api
from onboard.pipeline import Ledger, Outcome, together
from onboard.plan import Plan

KIND = "enrollment"


def pending(plan: Plan, ledger: Ledger) -> list[str]:
    """Users to enroll: registered ones whose enrollment is not settled yet."""
    return [u for u in plan.users if ledger.registered("user", u) and ledger.get(KIND, u) is None]


async def enroll(api: Api, users: Iterable[str], ledger: Ledger, width: int, tick=lambda: None) -> None:
    """Enroll each user, at most `width` at a time (the API's throttle still decides how many are in
    flight); what the API says of each is settled in the ledger as it comes."""
    slots = asyncio.Semaphore(width)
    resumed = ledger.journal is not None and ledger.journal.resumed

    async def one(user_id: str) -> None:
        async with slots:
            ledger.sending(KIND, [user_id])
            answer = await api.enroll(user_id)
            ledger.settle(KIND, user_id, await _outcome(api, user_id, answer, resumed))
            tick()

    await together(*(one(user_id) for user_id in users))


async def _outcome(api: Api, user_id: str, answer: Answer, resumed: bool) -> Outcome:
    if answer.ok:
        return Outcome("created")
    if answer.status in (400, 409) or answer.ambiguous:
        held = await api.enrollment(user_id)
        if held.ok and _enrolled(held.body):
            # Enrolled before this run, unless an answer of this run (or of the run it resumes) was lost.
            return Outcome("created" if answer.ambiguous or resumed else "exists")
    return Outcome("failed", f"the API did not enroll user {user_id} ({answer.status}): {answer.message}")


def _enrolled(body: object) -> bool:
    """The spec's enrollment answer: present means enrolled, unless it says otherwise."""
    if isinstance(body, dict):
        for key in ("isEnrolled", "enrolled"):
            if key in body:
                return bool(body[key])
        return True
    return body is not None
