// A job handler in JavaScript, shared by the QuickJS build (quickjs.js) and
// the SpiderMonkey build (spidermonkey.js); each entry file adapts its
// toolchain's bindings of the unchanged `runtime:job/handler` world to the
// `host` object below. The payload says what to do, as for the Rust fixture
// tests/guests/outcomes-job:
//
//   {"dispatch": [{"queue": "q", "payload": {...}}],  follow-ups, dispatched first
//    "succeed_on_attempt": 3,   retry until this attempt (default 1)
//    "retry_after_ms": 50,      ...after this delay instead of the backoff
//    "finally": "reason",       then fail with this reason instead of done
//    "raise": "message"}        throw instead
//
// host: { name, log(level, message), dispatch(queue, json) -> id (throws
// an Error whose message is the host's refusal), delayMs(ms), reportPanic }.

export function handle(job, host) {
  try {
    return run(job, host);
  } catch (e) {
    // An exception traps the instance; reported first, the job's error is
    // `panic: <exception>` instead of a bare `trap: unreachable`.
    host.reportPanic(String(e));
    throw e;
  }
}

function run(job, host) {
  const payload = JSON.parse(job.payload);
  host.log("info", `${host.name}: job ${job.id}, attempt ${job.attempt} of ${job.maxAttempts}`);
  if (payload.raise !== undefined) {
    throw new Error(payload.raise);
  }
  for (const follow of payload.dispatch ?? []) {
    let id;
    try {
      id = host.dispatch(follow.queue, JSON.stringify(follow.payload));
    } catch (e) {
      return { tag: "fail", val: `dispatch refused: ${e.message}` };
    }
    host.log("info", `dispatched ${id}`);
  }
  if (job.attempt >= (payload.succeed_on_attempt ?? 1)) {
    if (payload.finally !== undefined) {
      return { tag: "fail", val: payload.finally };
    }
    return { tag: "done" };
  }
  const ms = payload.retry_after_ms;
  return {
    tag: "retry",
    val: {
      reason: `not yet (attempt ${job.attempt})`,
      delayMs: ms === undefined ? host.delayMs(null) : host.delayMs(ms),
    },
  };
}
