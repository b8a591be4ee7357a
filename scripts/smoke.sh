#!/usr/bin/env bash
# Smoke test of the README's first command: `vsr start --development` in a fresh directory
# formats and starts a one-replica cluster on 127.0.0.1:3000; it must serve one request and stop
# cleanly on SIGTERM. Every wait is bounded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
cargo build --release --bin vsr
vsr=$root/target/release/vsr
work=$(mktemp -d)
pid=""
cleanup() {
    [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cd "$work"
"$vsr" start --development 2>"$work/replica.log" &
pid=$!

# Wait (at most 60 s) until the replica answers a request.
deadline=$((SECONDS + 60))
until out=$("$vsr" repl --cluster=0 --addresses=127.0.0.1:3000 --timeout=5 \
        --command "create_accounts id=1 ledger=700 code=10;" 2>&1); do
    if ((SECONDS > deadline)) || ! kill -0 "$pid" 2>/dev/null; then
        echo "smoke: the development replica did not serve a request:" >&2
        echo "$out" >&2
        cat "$work/replica.log" >&2
        exit 1
    fi
    sleep 0.5
done
echo "smoke: create_accounts -> $out"
[[ $out == ok || $out == *exists* ]] || { echo "smoke: unexpected reply: $out" >&2; exit 1; }
lookup=$("$vsr" repl --cluster=0 --addresses=127.0.0.1:3000 --timeout=10 --command "lookup_accounts 1;")
echo "smoke: lookup_accounts -> $lookup"
[[ $lookup == id=1* ]] || { echo "smoke: account 1 not found" >&2; exit 1; }

kill -TERM "$pid"
for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
    echo "smoke: replica did not stop within 10 s of SIGTERM" >&2
    exit 1
fi
wait "$pid" || { echo "smoke: replica exited non-zero" >&2; cat "$work/replica.log" >&2; exit 1; }
pid=""
grep -q "DEVELOPMENT MODE" "$work/replica.log" || { echo "smoke: no development-mode banner" >&2; exit 1; }
echo "smoke: ok (the development replica formatted, served, and stopped cleanly)"
