#!/usr/bin/env bash
# What killing the primary costs under load: a 3-replica cluster on 127.0.0.1 loaded by
# `vsr benchmark --addresses`; --kill-after seconds after its first progress line the primary is killed (kill -9) and the
# load goes on against the other two. Prints the benchmark's report: its p100 batch latency is the
# longest stall a client saw (one client, one batch in flight).
#
#   scripts/failover.sh                       # 1 MiB messages, 2M transfers, kill after 3 s
#   scripts/failover.sh --transfer-count 4000000 --kill-after 5
set -euo pipefail

transfers=2000000
kill_after=3
usage() {
    cat <<'EOF'
usage: scripts/failover.sh [--transfer-count N] [--kill-after S]

  --transfer-count N  transfers the benchmark sends (default 2000000)
  --kill-after S      seconds after the load starts to kill -9 the primary (default 3)
EOF
}
while (($#)); do
    case $1 in
    --transfer-count) transfers=$2; shift 2 ;;
    --kill-after) kill_after=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --bin vsr --manifest-path "$root/Cargo.toml"
vsr=$root/target/release/vsr
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    [[ -n ${KEEP:-} ]] && echo "kept $dir" || rm -rf "$dir"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
addresses="$port,$((port + 1)),$((port + 2))"
cluster=$((RANDOM + 1))
for r in 0 1 2; do
    "$vsr" format --cluster "$cluster" --replica "$r" --replica-count 3 "$dir/$r.vsr" >/dev/null 2>&1
    "$vsr" start --addresses "$addresses" "$dir/$r.vsr" 2>>"$dir/$r.log" >/dev/null &
    pids[r]=$!
done
# The primary: the replica that logged starting the highest view as primary.
primary() {
    grep -H "started as primary" "$dir"/[012].log 2>/dev/null |
        sed 's|.*/\([012]\)\.log:.*view \([0-9]*\) started as primary.*|\2 \1|' |
        sort -n | tail -1 | cut -d' ' -f2
}
for _ in $(seq 1 1500); do
    [[ -n $(primary) ]] && break
    sleep 0.02
done
[[ -n $(primary) ]] || { echo "no primary within 30 s" >&2; exit 1; }
"$vsr" benchmark --addresses "$addresses" --cluster "$cluster" --transfer-count "$transfers" \
    --query-count 0 >"$dir/load.txt" 2>&1 &
load=$!
# Transfers are flowing (the benchmark prints progress each second once they are).
for _ in $(seq 1 3000); do
    grep -q "transfers," "$dir/load.txt" 2>/dev/null && break
    sleep 0.02
done
sleep "$kill_after"
primary=$(primary)
echo "killing the primary, replica $primary, $kill_after s after the first transfers were acknowledged"
kill -9 "${pids[$primary]}"
if ! wait "$load"; then
    grep -E "load accepted|batch latency" "$dir/load.txt" >&2
    exit 1
fi
grep -E "load accepted|batch latency" "$dir/load.txt"
for r in 0 1 2; do
    grep -h "view change to view" "$dir/$r.log" | sed "s/^/replica $r: /" || true
done
