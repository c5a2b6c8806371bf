"""The load-generating clients' two ways of meeting a refusal, against a scripted caller."""

from __future__ import annotations

import asyncio
import time

from loadtests import clients
from loadtests.clients import LoadResult, Outcome


class Scripted:
    """Answers with the outcomes given, in order, recording when each call came."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes, self.calls = list(outcomes), []

    async def __call__(self, data: bytes) -> Outcome:
        self.calls.append(time.perf_counter())
        return self.outcomes.pop(0)


def run(retry: str, caller: Scripted) -> LoadResult:
    result = LoadResult()
    stop = time.perf_counter() + 10
    assert asyncio.run(clients._until_answered(caller, b"x", retry, result, stop))
    return result


def test_at_once_clients_resend_without_waiting():
    caller = Scripted(Outcome(False, True, 0.3), Outcome(False, True, 0.3), Outcome(True, False))
    result = run("at-once", caller)
    assert result.shed == 2 and result.answered == 1
    assert caller.calls[-1] - caller.calls[0] < 0.1


def test_retry_after_clients_wait_what_the_server_asks():
    caller = Scripted(Outcome(False, True, 0.3), Outcome(True, False))
    result = run("retry-after", caller)
    assert result.shed == 1 and result.answered == 1
    assert caller.calls[1] - caller.calls[0] >= 0.3
    assert result.end_to_end[0] >= 0.3 > result.latencies[0]


def test_an_error_is_not_retried():
    caller = Scripted(Outcome(False, False))
    result = LoadResult()
    stop = time.perf_counter() + 5
    ok = asyncio.run(clients._until_answered(caller, b"x", "at-once", result, stop))
    assert not ok and result.errors == 1 and len(caller.calls) == 1
