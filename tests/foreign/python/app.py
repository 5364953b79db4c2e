"""A job handler in Python, built with componentize-py against the unchanged
`runtime:job/handler` world (guest-sdk/wit).

The payload says what to do, as for the Rust fixture tests/guests/outcomes-job:

    {"dispatch": [{"queue": "q", "payload": {...}}],  # follow-ups, dispatched first
     "succeed_on_attempt": 3,   # retry until this attempt (default 1)
     "retry_after_ms": 50,      # ...after this delay instead of the backoff
     "finally": "reason",       # then fail with this reason instead of done
     "raise": "message"}        # raise an exception instead

An exception traps the instance; reporting it first makes the job's error
`panic: <exception>` instead of a bare `trap: unreachable`.
"""

import json

import wit_world
from wit_world.imports import dispatch, log
from wit_world.imports.types import (
    Job,
    Outcome,
    Outcome_Done,
    Outcome_Fail,
    Outcome_Retry,
    RetryRequest,
)
from componentize_py_types import Err


class WitWorld(wit_world.WitWorld):
    def handle(self, job: Job) -> Outcome:
        try:
            return run(job)
        except Exception as e:
            log.report_panic(f"{type(e).__name__}: {e}")
            raise


def run(job: Job) -> Outcome:
    payload = json.loads(job.payload)
    log.log(log.Level.INFO, f"python: job {job.id}, attempt {job.attempt} of {job.max_attempts}")
    if "raise" in payload:
        raise ValueError(payload["raise"])
    for follow in payload.get("dispatch", []):
        options = dispatch.DispatchOptions(None, None, None, None)
        try:
            new_id = dispatch.dispatch(follow["queue"], json.dumps(follow["payload"]), options)
        except Err as e:
            return Outcome_Fail(f"dispatch refused: {e.value}")
        log.log(log.Level.INFO, f"dispatched {new_id}")
    if job.attempt >= payload.get("succeed_on_attempt", 1):
        if "finally" in payload:
            return Outcome_Fail(payload["finally"])
        return Outcome_Done()
    return Outcome_Retry(RetryRequest(f"not yet (attempt {job.attempt})", payload.get("retry_after_ms")))
