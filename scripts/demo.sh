#!/usr/bin/env bash
# `make demo`: the main job end to end against the embedded simulator. No token, no network.
#
# 1. start `orchestrator simulate` on a free loopback port, rate-limited to 20 requests/s
#    and failing 10% of requests (500/502/503/dropped connections);
# 2. rerun configs/demo-ids.txt with --rate 30/s, above the server's limit: the
#    orchestrator reads the limit off the first answer's X-RateLimit-Limit header
#    (rate.from_server) and slows to it, so no request is wasted on a 429; the faults are
#    retried; a few IDs are unknown (404) and a few lines are malformed;
# 3. show a few original -> new mappings from the ledger, run again to show the resume
#    skipping everything already done, and stop the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."

ORCH=.venv/bin/orchestrator
OUT=demo-out
LEDGER=$OUT/ledger.jsonl
rm -rf "$OUT" && mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting the simulator (20 requests/s, 10% faults)"
"$ORCH" simulate --port 0 --rate 20/s --error-rate 10% --token demo-token >"$OUT/simulator.log" 2>&1 &
SIM_PID=$!
trap 'kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    BASE_URL=$(sed -n 's/^base_url: //p' "$OUT/simulator.log")
    [ -n "$BASE_URL" ] && break
    kill -0 "$SIM_PID" 2>/dev/null || { cat "$OUT/simulator.log"; exit 1; }
    sleep 0.1
done
[ -n "${BASE_URL:-}" ] || { echo "the simulator did not start" >&2; exit 1; }
echo "simulator at $BASE_URL"

export ALTOSTRAT_TOKEN=demo-token
step "orchestrator rerun configs/demo-ids.txt --base-url $BASE_URL --rate 30/s --ledger $LEDGER"
set +e
"$ORCH" rerun configs/demo-ids.txt --base-url "$BASE_URL" --rate 30/s --ledger "$LEDGER" \
    --log-format console
code=$?
set -e
echo
echo "exit code: $code (1 = some IDs failed or were rejected: the two unknown runs and the bad lines)"
[ "$code" -le 1 ] || exit "$code"

step "a few original -> new run mappings, from $LEDGER"
.venv/bin/python - "$LEDGER" <<'PY'
import json, sys
shown = 0
for line in open(sys.argv[1], encoding="utf-8"):
    record = json.loads(line)
    if record["event"] == "succeeded" and shown < 5:
        print(f'  {record["original_run_id"]} -> {record["new_run_id"]}')
        shown += 1
PY

step "running the same command again: the ledger makes it a resume"
"$ORCH" rerun configs/demo-ids.txt --base-url "$BASE_URL" --rate 30/s --ledger "$LEDGER" \
    --log-format console --log-level warning || true
echo "nothing was sent twice; server-side counts:"
.venv/bin/python - "$BASE_URL" <<'PY'
import json, sys, urllib.request
stats = json.load(urllib.request.urlopen(sys.argv[1] + "/_sim/stats"))
counts = stats["accepted"].values()
print(f'  reruns accepted: {sum(counts)} for {len(stats["accepted"])} runs; most for one run: {max(counts)}')
print(f'  requests by status: {stats["by_status"]}')
PY

step "done: the ledger is $LEDGER"
