// Entry of the QuickJS build (componentize-qjs): each imported interface is
// one default-exported object; `option` is `null` when absent, `u64` a
// Number, and an import returning `result` throws its error as a string.
import log from "runtime:job/log@0.1.0";
import dispatch from "runtime:job/dispatch@0.1.0";
import * as outcomes from "./outcomes.js";

const NO_OPTIONS = { priority: null, delayMs: null, maxAttempts: null, uniqueKey: null };

const host = {
  name: "quickjs",
  log: (level, message) => log.log(level, message),
  dispatch: (queue, json) => {
    try {
      return dispatch.dispatch(queue, json, NO_OPTIONS);
    } catch (e) {
      throw new Error(e instanceof Error ? e.message : String(e));
    }
  },
  delayMs: (ms) => ms,
  reportPanic: (message) => log.reportPanic(message),
};

export function handle(job) {
  return outcomes.handle(job, host);
}
