"""When ``etl-app submit`` sends its upload again, and when it must not.

With an ``Idempotency-Key`` (the default: one new UUID per run of the command, the same on every
try) sending again is safe: the service answers a request it has already stored with that
answer, and stores nothing twice. So every failure that may be passing is tried again: the
service unreachable or not answering in time, the connection lost mid-request, a 5xx and a 409
(the key met mid-change). Without a key (``--no-idempotency-key``) only what surely stored nothing
is tried again: a connection that could not be opened, and the 503 the service sends when it
stored nothing; a lost answer could mean a stored upload, and sending it again would ingest the
file twice. A 429 (the service busy: its backlog full, or the rate limit) stored nothing either,
but is not tried again here: ``etl-app submit`` waits as long as its ``Retry-After`` asks, up to
``--max-wait``, and then sends the file again through this loop.

Tries: ``--retries`` more after the first (default :data:`RETRIES`), waiting 0.5 s, 1 s, 2 s, ...
(at most :data:`MAX_WAIT` s, with a little jitter) between them, or the ``Retry-After`` the
service asked for when it is longer (at most :data:`MAX_WAIT` s too). tenacity runs the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, retry_if_result, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

RETRIES = 4
MAX_WAIT = 10.0
_SAFE_STATUSES = {409} | set(range(500, 600))  # with a key (a 429 is the caller's: --max-wait)
_NOTHING_STORED = {503}  # the service says so in this answer
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


def _transient_error(keyed: bool) -> Callable[[BaseException], bool]:
    def test(exc: BaseException) -> bool:
        return isinstance(exc, httpx.TransportError if keyed else _NEVER_SENT)

    return test


def _transient_answer(keyed: bool) -> Callable[[Any], bool]:
    statuses = _SAFE_STATUSES if keyed else _NOTHING_STORED
    return lambda response: response.status_code in statuses


def _retry_after(state: RetryCallState) -> float:
    outcome = state.outcome
    if outcome is None or outcome.failed:
        return 0.0
    try:
        return min(MAX_WAIT, float(outcome.result().headers.get("Retry-After", 0)))
    except ValueError:
        return 0.0


def send(
    attempt: Callable[[], httpx.Response],
    *,
    keyed: bool,
    retries: int = RETRIES,
    on_retry: Callable[[str, float, int], None] = lambda why, wait, number: None,
) -> httpx.Response:
    """``attempt()`` (one request), tried again as the module says; the last answer, or the last
    error raised. ``on_retry(why, seconds, next try's number)`` before each wait."""
    backoff = wait_exponential_jitter(multiplier=0.5, max=MAX_WAIT, jitter=0.25)

    def wait(state: RetryCallState) -> float:
        return max(backoff(state), _retry_after(state))

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        assert outcome is not None
        if outcome.failed:
            exc = outcome.exception()
            why = f"{type(exc).__name__}: {exc}"
        else:
            why = f"HTTP {outcome.result().status_code}"
        on_retry(why, state.upcoming_sleep, state.attempt_number + 1)

    retrying = Retrying(
        stop=stop_after_attempt(retries + 1),
        wait=wait,
        retry=retry_if_exception(_transient_error(keyed)) | retry_if_result(_transient_answer(keyed)),
        before_sleep=before_sleep,
        retry_error_callback=lambda state: state.outcome.result(),  # the last answer, or its error raised
    )
    return retrying(attempt)
