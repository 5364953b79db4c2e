#!/usr/bin/env node
// Dispatches one job to the runtime's HTTP API and waits for its outcome.
// Usage: dispatch.mjs QUEUE [PAYLOAD]   (env: RUNTIME_URL, RUNTIME_TOKEN, RUNTIME_QUEUE; Node 18+)
// Exits 0 when the job is done, 1 when it failed, 2 on any other answer.
const url = process.env.RUNTIME_URL ?? "http://127.0.0.1:8080";
const headers = { "Content-Type": "application/json" };
if (process.env.RUNTIME_TOKEN) headers.Authorization = `Bearer ${process.env.RUNTIME_TOKEN}`;

// The status and JSON body of one request (errors are problem+json).
async function call(method, path, body) {
  const response = await fetch(url + path, { method, headers, body: body && JSON.stringify(body) });
  return [response.status, await response.json()];
}

function giveUp(message) {
  console.error(message);
  process.exit(2);
}

const queue = process.argv[2] ?? process.env.RUNTIME_QUEUE ?? giveUp("usage: dispatch.mjs QUEUE [PAYLOAD]");
const payload = JSON.parse(process.argv[3] ?? "{}");
// A tenant's queue `acme/resize` is written acme%2Fresize in a path.
const [status, job] = await call("POST", `/v1/queues/${encodeURIComponent(queue)}/jobs`, { payload });
if (status !== 201) giveUp(`dispatch refused: ${job.detail}`);
console.log(job.id);

for (;;) {
  const [status, found] = await call("GET", `/v1/jobs/${encodeURIComponent(job.id)}`);
  if (status === 404) break; // done jobs are removed
  if (status !== 200) giveUp(`unexpected answer ${status}: ${found.detail}`);
  if (found.state === "failed") {
    console.log(`failed: ${found.error}`);
    process.exit(1);
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
}
console.log("done");
