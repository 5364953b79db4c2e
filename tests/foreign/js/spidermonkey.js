// Entry of the SpiderMonkey build (componentize-js): imported functions are
// named exports; `option` is `undefined` when absent, `u64` a BigInt, and an
// import returning `result` throws an error carrying its value in `payload`.
import { log, reportPanic } from "runtime:job/log@0.1.0";
import { dispatch } from "runtime:job/dispatch@0.1.0";
import * as outcomes from "./outcomes.js";

const host = {
  name: "spidermonkey",
  log: (level, message) => log(level, message),
  dispatch: (queue, json) => {
    try {
      return dispatch(queue, json, {});
    } catch (e) {
      throw new Error(e.payload ?? String(e));
    }
  },
  delayMs: (ms) => (ms === null ? undefined : BigInt(ms)),
  reportPanic: (message) => reportPanic(message),
};

export function handle(job) {
  return outcomes.handle(job, host);
}
