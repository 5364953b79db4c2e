#!/usr/bin/env python3
"""Dispatches one job to the runtime's HTTP API and waits for its outcome.
Usage: dispatch.py QUEUE [PAYLOAD]   (env: RUNTIME_URL, RUNTIME_TOKEN, RUNTIME_QUEUE)
Exits 0 when the job is done, 1 when it failed, 2 on any other answer."""
import json, os, sys, time
from urllib.error import HTTPError
from urllib.parse import quote
from urllib.request import Request, urlopen

URL = os.environ.get("RUNTIME_URL", "http://127.0.0.1:8080")
HEADERS = {"Content-Type": "application/json"}
if os.environ.get("RUNTIME_TOKEN"):
    HEADERS["Authorization"] = "Bearer " + os.environ["RUNTIME_TOKEN"]


def call(method, path, body=None):
    """The status and JSON body of one request (errors are problem+json)."""
    data = None if body is None else json.dumps(body).encode()
    try:
        with urlopen(Request(URL + path, data, HEADERS, method=method)) as response:
            return response.status, json.load(response)
    except HTTPError as error:
        return error.code, json.load(error)


queue = sys.argv[1] if len(sys.argv) > 1 else os.environ["RUNTIME_QUEUE"]
payload = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
# A tenant's queue `acme/resize` is written acme%2Fresize in a path.
status, job = call("POST", f"/v1/queues/{quote(queue, safe='')}/jobs", {"payload": payload})
if status != 201:
    print(f"dispatch refused: {job['detail']}", file=sys.stderr)
    sys.exit(2)
print(job["id"], flush=True)

while True:
    status, found = call("GET", f"/v1/jobs/{quote(job['id'], safe=':')}")
    if status == 404:  # done jobs are removed
        print("done")
        break
    if status != 200:
        print(f"unexpected answer {status}: {found['detail']}", file=sys.stderr)
        sys.exit(2)
    if found["state"] == "failed":
        print(f"failed: {found['error']}")
        sys.exit(1)
    time.sleep(0.5)
