#!/usr/bin/env bash
# Dispatches one job to the runtime's HTTP API and waits for its outcome.
# Usage: dispatch.sh QUEUE [PAYLOAD]   (env: RUNTIME_URL, RUNTIME_TOKEN, RUNTIME_QUEUE)
# Exits 0 when the job is done, 1 when it failed, 2 on any other answer.
set -euo pipefail
url=${RUNTIME_URL:-http://127.0.0.1:8080}
queue=${1:-${RUNTIME_QUEUE:?usage: dispatch.sh QUEUE [PAYLOAD]}}
payload=${2:-'{}'}
# A server without tokens takes an empty one.
auth="Authorization: Bearer ${RUNTIME_TOKEN:-}"

# Each answer is its body, a newline, then its status (curl -w).
# A tenant's queue `acme/resize` is written acme%2Fresize in a path.
out=$(curl -sS -H "$auth" -H 'Content-Type: application/json' -w '\n%{http_code}' \
  --data "{\"payload\": $payload}" "$url/v1/queues/${queue//\//%2F}/jobs")
body=${out%$'\n'*}
if [ "${out##*$'\n'}" != 201 ]; then echo "dispatch refused: $body" >&2; exit 2; fi
id=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' <<<"$body")
echo "$id"

while true; do
  out=$(curl -sS -H "$auth" -w '\n%{http_code}' "$url/v1/jobs/${id//\//%2F}")
  body=${out%$'\n'*}
  case ${out##*$'\n'} in
    404) echo done; exit 0 ;; # done jobs are removed
    200) if grep -q '"state":"failed"' <<<"$body"; then
           echo "failed: $(sed -n 's/.*"error":"\([^"]*\)".*/\1/p' <<<"$body")"
           exit 1
         fi ;;
    *) echo "unexpected answer: $body" >&2; exit 2 ;;
  esac
  sleep 0.5
done
